"""Fine-tuning a pretrained body with a new head, fastai's recipe as one function:

  1. head: the body frozen (no updates; its BatchNorm layers keep their running statistics), the new head
     trained with 1cycle.
  2. unfreeze: every layer group trains at discriminative rates (lr / factor^2, lr / factor, lr for three
     groups) under SGDR (restarts after cycle_steps, cycle_steps * cycle_mult, ...), with a checkpoint at the end
     of each cycle.

The model must expose `layer_groups()` (regexes over parameter paths, input side first) and a `frozen_groups`
field (see research/models/resnet.py); `train(state, num_steps, subdir, **trainer_kwargs) -> state` runs
research.trainer.train with the caller's data, mesh and evaluation in workdir/subdir, so each phase resumes on
its own.
"""

import os
from typing import Callable, NamedTuple

import numpy as np

from research.core import optimizers, schedules, trainer
from research.core.train_state import TrainState


class Recipe(NamedTuple):
    head_steps: int
    head_lr: float
    finetune_lr: float
    cycle_steps: int  # SGDR's first cycle
    cycle_mult: int = 2
    num_cycles: int = 3
    group_factor: float = 3.0  # lr/9, lr/3, lr
    frozen_groups: int = 2  # the whole body, in phase 1


def recipe_in_epochs(head_phase, finetune, steps_per_epoch: int) -> Recipe:
    """A Recipe from config keys counted in epochs: head_phase.{epochs, learning_rate} and
    finetune.{learning_rate, cycle_len, cycle_mult, num_cycles, group_factor}."""
    return Recipe(head_steps=head_phase.epochs * steps_per_epoch, head_lr=head_phase.learning_rate,
                  finetune_lr=finetune.learning_rate, cycle_steps=finetune.cycle_len * steps_per_epoch,
                  cycle_mult=finetune.cycle_mult, num_cycles=finetune.num_cycles, group_factor=finetune.group_factor)


def cycle_ends(recipe: Recipe) -> list[int]:
    """The steps (of the unfreeze phase) at which SGDR cycles end."""
    return [int(end) for end in np.cumsum([recipe.cycle_steps * recipe.cycle_mult ** i
                                           for i in range(recipe.num_cycles)])]


def fine_tune(model, variables: dict, recipe: Recipe, make_tx: Callable, train: Callable,
              evaluate: Callable | None = None, head_checkpoint_every: int | None = None
              ) -> tuple[TrainState, dict]:
    """Runs both phases from `variables` ({"params", "batch_stats"}: the pretrained body and a new head).

    `make_tx(learning_rate, momentum, **groups)` builds the optimizer (e.g. `experiment.optimizer` bound to
    the config). Returns the fine-tuned state and {"head": evaluate(state after phase 1)} when `evaluate`."""
    groups = model.layer_groups()
    frozen = groups[:recipe.frozen_groups]
    tx = make_tx(schedules.one_cycle(recipe.head_steps, recipe.head_lr),
                 schedules.one_cycle_momentum(recipe.head_steps), frozen=frozen)
    state = TrainState.create(apply_fn=model.clone(frozen_groups=recipe.frozen_groups).apply,
                              params=variables["params"], batch_stats=variables["batch_stats"], tx=tx)
    state = train(state, recipe.head_steps, "head", checkpoint_every=head_checkpoint_every)
    evaluated = {"head": evaluate(state)} if evaluate else {}

    ends = cycle_ends(recipe)
    tx = make_tx(schedules.sgdr(recipe.finetune_lr, recipe.cycle_steps, recipe.cycle_mult, recipe.num_cycles),
                 lr_multipliers=optimizers.discriminative_multipliers(groups, recipe.group_factor))
    state = TrainState.create(apply_fn=model.apply, params=state.params, batch_stats=state.batch_stats, tx=tx)
    state = train(state, ends[-1], "finetune", checkpoint_every=ends[-1], checkpoint_steps=ends)
    return state, evaluated


def phase_trainer(config, workdir: str, train_step: Callable, batches, mesh, evaluate: Callable | None = None
                  ) -> Callable:
    """`train(state, num_steps, subdir, **kwargs)` for `fine_tune` (and the baselines beside it): the trainer on
    `train_step` and `batches`, each phase in its own sub-workdir (so each resumes on its own), with the config's
    seed, logging, checkpoint retention and non-finite policy; `kwargs` go to `trainer.train`."""

    def train(state, num_steps: int, subdir: str, **kwargs):
        return trainer.train(state=state, train_step=train_step, batches=batches, num_steps=num_steps, mesh=mesh,
                             seed=config.seed, workdir=os.path.join(workdir, subdir), evaluate=evaluate,
                             log_every=config.log_every, keep_checkpoints=config.checkpoint.keep,
                             skip_nonfinite=config.skip_nonfinite, **kwargs)

    return train
