"""The run the language-model experiments share (experiments/char_rnn.py over characters,
experiments/fortunes_lm.py over words), as research/image_classifier.py is lesson 1's.

An experiment brings its token ids per split, its model (called `model.apply(variables, tokens_BxT, reset_B,
mask_BxT, train=..., carry=...)`, with `initial_carry(batch_size)`) and a `sample(params, prompt, temperature,
length, top_k, seed) -> text` function; this module does the rest: the interpolated Kneser-Ney baseline (its
order chosen on the validation text), the fit (the best checkpoint by validation loss), held-out loss and
perplexity from that checkpoint, samples at each configured temperature (samples.txt) and results.json.
"""

import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from research.core import experiment, inference
from research.core.train_state import TrainState
from research.text import language_model, ngram

Sample = Callable[[dict, str, float, int, int, int], str]  # (params, prompt, temperature, length, top_k, seed)


def create_state_fn(model, batch_size: int, window: int) -> Callable:
    """`create_state(tx, rng)`: the model initialised on a batch of `batch_size` windows, its zero carry held in
    the train state (carried from one BPTT window to the next)."""

    def create_state(tx, rng):
        carry = model.initial_carry(batch_size)
        init = jax.jit(functools.partial(model.init, train=False))
        variables = init(rng, jnp.zeros((batch_size, window), jnp.int32), jnp.zeros(batch_size, bool),
                         jnp.ones((batch_size, window), bool), carry=carry)
        return TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats={}, tx=tx,
                                 carry=carry)

    return create_state


def restore(config, workdir: str, model) -> TrainState:
    """The run's best checkpoint (by the config's checkpoint.best_metric), for generation and prediction."""
    state = create_state_fn(model, 1, config.bptt)(experiment.one_cycle_optimizer(config, 1e-3, 0),
                                                   jax.random.key(config.seed))
    return inference.restore_trained(workdir, state, config.checkpoint.best_metric, config.checkpoint.best_mode)


def write_samples(config, workdir: str, params, sample: Sample) -> None:
    """samples.txt: one text per temperature of config.samples, each after a header naming its settings."""
    s = config.samples
    written = [f"=== temperature {t}, top_k {s.top_k}, prompt {s.prompt!r} ===\n"
               + sample(params, s.prompt, t, s.length, s.top_k, config.seed + i)
               for i, t in enumerate(s.temperatures)]
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "samples.txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(written) + "\n")


def train_and_evaluate(config, workdir: str, ids: dict[str, np.ndarray], vocab_size: int, run: experiment.Setup,
                       model, sample: Sample, mesh, timer: experiment.Timer, **extra) -> dict:
    """The n-gram baseline, the fit, held-out metrics, samples and results.json (with `extra` fields)."""
    with timer("ngram"):
        order, ngram_valid = ngram.best_order(ids["train"], ids["valid"], vocab_size, config.ngram_orders)
        ngram_test = ngram.KneserNey(ids["train"], vocab_size, order).loss(ids["test"])
    evaluator = lambda split, prefix: language_model.make_evaluator(
        model.apply, model.initial_carry, ids[split], config.eval_batch_size, config.bptt, prefix)
    with timer("lr_find"):
        learning_rate = experiment.learning_rate(config, workdir, run)
    evaluate_valid = evaluator("valid", "valid_")
    with timer("train"):
        state = experiment.fit(config, workdir, run, learning_rate, mesh, evaluate_valid)
    state = inference.restore_trained(workdir, state, config.checkpoint.best_metric, config.checkpoint.best_mode)
    with timer("test"):
        metrics = {**evaluate_valid(state), **evaluator("test", "test_")(state)}
    metrics.update(ngram_order=order, ngram_valid_loss=ngram_valid[order], ngram_test_loss=ngram_test,
                   ngram_test_perplexity=float(np.exp(ngram_test)))
    with timer("samples"):
        write_samples(config, workdir, state.params, sample)
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, learning_rate=learning_rate,
                                    steps=config.num_epochs * run.batches.steps_per_epoch, vocab_size=vocab_size,
                                    train_tokens=int(len(ids["train"])), ngram_valid_losses=ngram_valid, **extra)
