"""Language modelling: next-token cross-entropy over the real positions of a window, with AWD-LSTM's
activation (AR) and temporal-activation (TAR) regularisers; perplexity; held-out evaluation that carries the
state through the text; sampling with temperature and top-k.

Models are called as `apply_fn(variables, tokens_BxT, reset_B, mask_BxT, train=..., carry=carry)` and return
({"logits": BxTxV, optionally "hidden": BxTxH (last layer, before output dropout), "hidden_dropped"}, carry).
Training uses research/core/steps.py (the TrainState holds the training carry). Held-out evaluation has its
own batch size and carries its own state window to window, so it is written here (`make_evaluator`) rather
than with steps.make_eval_step, which would reuse the training carry.
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.core import steps
from research.text.lm_stream import eval_windows


def token_losses(logits_BxTxV, targets_BxT) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV.astype(jnp.float32), targets_BxT)


def summed_metrics(outputs: dict, batch: dict, mask_B=None) -> dict[str, jax.Array]:
    """Summed next-token loss (nats) over the real positions, and their count."""
    weights_BxT = batch["token_mask"].astype(jnp.float32)
    if mask_B is not None:
        weights_BxT = weights_BxT * mask_B[:, None]
    loss_BxT = token_losses(outputs["logits"], batch["target"])
    return {"loss": jnp.sum(loss_BxT * weights_BxT), "count": jnp.sum(weights_BxT)}


def finish(summed: dict) -> dict[str, float]:
    """Means, plus perplexity = exp(mean loss)."""
    found = steps.means(summed)
    found["perplexity"] = math.exp(min(found["loss"], 50.0))
    return found


def training_loss(outputs: dict, batch: dict, ar: float = 0.0, tar: float = 0.0) -> jax.Array:
    """Mean next-token loss + ar * mean(dropped hidden^2) + tar * mean((h_t - h_{t-1})^2) (Merity et al.)."""
    weights_BxT = batch["token_mask"].astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weights_BxT), 1.0)
    loss = jnp.sum(token_losses(outputs["logits"], batch["target"]) * weights_BxT) / count
    if ar:
        loss += ar * jnp.sum(jnp.mean(outputs["hidden_dropped"] ** 2, -1) * weights_BxT) / count
    if tar:
        steps_BxT = jnp.mean((outputs["hidden"][:, 1:] - outputs["hidden"][:, :-1]) ** 2, -1)
        pair_weights = weights_BxT[:, 1:] * weights_BxT[:, :-1]
        loss += tar * jnp.sum(steps_BxT * pair_weights) / jnp.maximum(jnp.sum(pair_weights), 1.0)
    return loss


def task(ar: float = 0.0, tar: float = 0.0) -> steps.Task:
    return steps.Task(
        inputs=lambda batch: (batch["input"], batch["reset"], batch["token_mask"]),
        loss=lambda outputs, batch: training_loss(outputs, batch, ar, tar),
        metrics=summed_metrics, finish=finish)


def make_evaluator(apply_fn: Callable, initial_carry: Callable[[int], object], ids_N: np.ndarray, num_rows: int,
                   window: int, prefix: str = "valid_") -> Callable[[object], dict[str, float]]:
    """`evaluate(state) -> {prefix + "loss", prefix + "perplexity"}` over held-out tokens: num_rows rows read
    in order, window by window, the state carried from each window to the next (zero at the start)."""
    windows = list(eval_windows(ids_N, num_rows, window))
    reset_B = jnp.zeros(num_rows, bool)

    @jax.jit
    def window_step(params, batch, carry):
        variables = {"params": params}
        outputs, carry = apply_fn(variables, batch["input"], reset_B, batch["token_mask"], train=False,
                                  carry=carry)
        return summed_metrics(outputs, batch), carry

    def evaluate(state) -> dict[str, float]:
        carry, total = initial_carry(num_rows), None
        for batch in windows:
            metrics, carry = window_step(state.params, batch, carry)
            total = metrics if total is None else jax.tree.map(jnp.add, total, metrics)
        return {prefix + k: v for k, v in finish(jax.device_get(total)).items()}

    return evaluate


def make_sampler(apply_fn: Callable, initial_carry: Callable[[int], object], length: int) -> Callable:
    """`sample(params, prompt_ids_P, rng, temperature, top_k) -> ids (length,)`: reads the prompt, then draws
    `length` tokens one at a time from softmax(logits / temperature), restricted to the top_k most likely
    (top_k <= 0: all). A pure function of its arguments: the same rng gives the same text."""

    @jax.jit
    def sample(params, prompt_ids_P, rng, temperature, top_k):
        variables = {"params": params}
        one = jnp.ones((1, 1), bool)
        no_reset = jnp.zeros(1, bool)
        outputs, carry = apply_fn(variables, prompt_ids_P[None], no_reset, jnp.ones((1, prompt_ids_P.shape[0]), bool),
                                  train=False, carry=initial_carry(1))
        logits_V = outputs["logits"][0, -1]

        def draw(state, key):
            carry, logits_V = state
            token = sample_token(key, logits_V, temperature, top_k)
            outputs, carry = apply_fn(variables, token.reshape(1, 1), no_reset, one, train=False, carry=carry)
            return (carry, outputs["logits"][0, -1]), token

        _, tokens = jax.lax.scan(draw, (carry, logits_V), jax.random.split(rng, length))
        return tokens

    return sample


def sample_token(key, logits_V, temperature, top_k) -> jax.Array:
    """One token from softmax(logits / temperature) over the top_k largest logits (top_k <= 0: all)."""
    logits_V = logits_V / jnp.maximum(temperature, 1e-6)
    kth_largest = jnp.sort(logits_V)[::-1][jnp.clip(top_k - 1, 0, logits_V.shape[0] - 1)]
    logits_V = jnp.where((top_k > 0) & (logits_V < kth_largest), -jnp.inf, logits_V)
    return jax.random.categorical(key, logits_V)
