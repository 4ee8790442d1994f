"""Text classification with ULMFiT (Howard & Ruder 2018): a language model's encoder, concat pooling over the
masked sequence and fastai's head (research/text/awd_lstm.TextClassifier), fine-tuned with gradual
unfreezing, discriminative rates (each lower layer group at lr / 2.6) and slanted triangular (1cycle) rates.

Batches are {"tokens": BxL, "token_mask": BxL, "label": B} (research/text/padded_text.py). The language
model is loaded by its workdir: run.json (its config's `model` are the AWDLSTM's arguments), vocab.json and
its best checkpoint.
"""

import json
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.core import classification, inference, optimizers, steps
from research.core.errors import InputError
from research.text import padded_text, tokens
from research.text.awd_lstm import AWDLSTM


def task(label_smoothing: float = 0.0) -> steps.Task:
    return steps.Task(
        inputs=lambda batch: (batch["tokens"], batch["token_mask"]),
        loss=lambda logits_BxC, batch: jnp.mean(
            classification.cross_entropy(logits_BxC, batch["label"], label_smoothing)),
        metrics=lambda logits_BxC, batch, mask_B: classification.summed_metrics(logits_BxC, batch["label"], mask_B))


class LanguageModel(NamedTuple):
    vocab: tokens.Vocab
    model_config: dict  # AWDLSTM's keyword arguments (without vocab_size)
    encoder_params: dict
    output_bias: np.ndarray | None = None  # the decoder's bias (V), for fine-tuning the language model itself


def load_language_model(lm_workdir: str, vocab_file: str = "vocab.json") -> LanguageModel:
    """The vocabulary, model config and encoder parameters of a trained language-model run."""
    if not lm_workdir:
        raise InputError("no language-model workdir given: train experiments/fortunes_lm.py first and pass its workdir")
    _, config = inference.read_run_info(lm_workdir)
    vocab = tokens.Vocab.load(os.path.join(lm_workdir, vocab_file))
    model_config = dict(config["model"])
    model = AWDLSTM(len(vocab), **model_config)
    window = 8
    variables = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, window), jnp.int32), jnp.zeros(1, bool),
                                               jnp.ones((1, window), bool)))(jax.random.key(0))
    checkpoint = config.get("checkpoint", {})
    state = inference.restore_for_inference(lm_workdir, model.apply, variables, checkpoint.get("best_metric", ""),
                                            checkpoint.get("best_mode", "max"))
    params = jax.device_get(state.params)
    return LanguageModel(vocab, model_config, params["encoder"], params["output_bias"])


class Phase(NamedTuple):
    """One stage of gradual unfreezing: the top `trainable_groups` layer groups train (the head is one) for
    `epochs` epochs of 1cycle at peak rate `learning_rate` (for the top group; each lower group / 2.6)."""
    trainable_groups: int
    epochs: int
    learning_rate: float


def ulmfit_phases(num_groups: int, epochs=(1, 1, 1, 2), learning_rate: float = 2e-2) -> list[Phase]:
    """fastai's IMDB recipe: the head at lr, then the last encoder layer too at lr/2, then one more at lr/4,
    then everything at lr/10 (fewer phases than `epochs` when the model has fewer groups)."""
    divisors = (1, 2, 4, 10)
    counts = (1, 2, 3, num_groups)
    return [Phase(min(count, num_groups), n, learning_rate / d) for count, n, d in zip(counts, epochs, divisors)]


def frozen_groups(groups: list[str], phase: Phase) -> list[str]:
    """The layer groups (input to output) that `phase` keeps frozen: all but the top `trainable_groups`."""
    return groups[:len(groups) - phase.trainable_groups]


def phase_optimizer(make_tx: Callable, groups: list[str], phase: Phase, total_steps: int,
                    factor: float = 2.6) -> optax.GradientTransformation:
    """`make_tx(peak_lr, total_steps, **groups)` (e.g. experiment.one_cycle_optimizer bound to a config) with
    the groups below the trainable ones frozen and discriminative rates over the trainable ones."""
    frozen = frozen_groups(groups, phase)
    multipliers = optimizers.discriminative_multipliers(groups, factor)
    multipliers = [(pattern, m) for pattern, m in multipliers if pattern not in frozen]
    return make_tx(phase.learning_rate, total_steps, frozen=frozen, lr_multipliers=multipliers)


def evaluate_documents(predict_fn: Callable, state, docs, labels, batch_size: int, buckets,
                       prefix: str) -> tuple[dict[str, float], np.ndarray]:
    """({prefix + "loss", prefix + "accuracy"}, logits N x C in document order) over length-bucketed
    batches; padded rows and positions count for nothing."""
    logits = None
    for batch in padded_text.eval_batches(docs, labels, batch_size, buckets):
        out = np.asarray(predict_fn(state, {k: batch[k] for k in ("tokens", "token_mask", "label")}))
        if logits is None:
            logits = np.zeros((len(docs), out.shape[-1]), np.float32)
        logits[batch["index"][batch["mask"]]] = out[batch["mask"]]
    labels = np.asarray(labels)
    loss = classification.cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    return {prefix + "loss": float(jnp.mean(loss)),
            prefix + "accuracy": float(np.mean(np.argmax(logits, -1) == labels))}, logits


def save_classes(workdir: str, class_names: list[str], max_tokens: int, buckets, language_model: dict) -> None:
    """classes.json: the class names, the padded lengths and the language model's AWDLSTM arguments (for predict)."""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "classes.json"), "w") as f:
            json.dump({"class_names": list(class_names), "max_tokens": max_tokens, "buckets": list(buckets),
                       "language_model": dict(language_model)}, f)
