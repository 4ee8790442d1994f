"""Fine-tuning a pretrained ImageNet ResNet as the vision experiments configure it (pets, segmentation's :pets):
`config.weights` names the checkpoint, and fastai's two phases (research/core/finetune.py) count in epochs of the
experiment's own training batches (`config.head_phase`, `config.finetune`)."""

import functools

from research.core import experiment, finetune
from research.core.train_state import TrainState
from research.vision import pretrained


def weights_path(weights: str) -> str:
    """A research.vision.pretrained.CHECKPOINTS key (downloaded into its cache first) or a .pth/.safetensors
    path, as a local path."""
    return pretrained.download(weights) if weights in pretrained.CHECKPOINTS else weights


def fine_tune(config, workdir: str, model, variables: dict, run: experiment.Setup, mesh,
              evaluate) -> tuple[TrainState, dict]:
    """The body frozen while the new head (or decoder) trains with 1cycle, then everything at discriminative
    rates with SGDR, on `run`'s train step and batches from `variables`; each phase resumes in its own
    sub-workdir (head/, finetune/). Returns the fine-tuned state and the validation metrics after the head phase."""
    recipe = finetune.recipe_in_epochs(config.head_phase, config.finetune, run.batches.steps_per_epoch)
    train = finetune.phase_trainer(config, workdir, run.train_step, run.batches, mesh, evaluate)
    state, evaluated = finetune.fine_tune(model, variables, recipe, functools.partial(experiment.optimizer, config),
                                          train, evaluate)
    return state, evaluated["head"]
