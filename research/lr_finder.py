"""Learning-rate range test (fastai's `lr_find`, after Leslie Smith).

From a tiny rate, raise the learning rate exponentially every step of training, record the loss, and stop
when the smoothed loss blows up. The caller's state is never changed: the test trains a copy (the jitted
step does not donate its input). The optimizer in `state` must take its learning rate as an injected
hyperparameter (see `research.optimizers.make_optimizer` with a float learning rate); the test overrides
it every step.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class LRFindResult:
    learning_rates: np.ndarray  # the rate used at each step run
    losses: np.ndarray  # raw training loss at each step
    smoothed_losses: np.ndarray  # bias-corrected exponential moving average of the losses
    num_steps: int  # steps actually run (the sweep stops early on divergence)
    divergence_lr: float  # where the loss left for good (first rate of the final run above the threshold)
    suggestions: dict[str, float]  # rule name -> suggested learning rate

    def to_json(self) -> dict:
        return {"learning_rates": self.learning_rates.tolist(), "losses": self.losses.tolist(),
                "smoothed_losses": self.smoothed_losses.tolist(), "num_steps": self.num_steps,
                "divergence_lr": self.divergence_lr, "suggestions": self.suggestions}


def lr_schedule(start_lr: float, end_lr: float, num_steps: int) -> np.ndarray:
    """Exponentially spaced rates from start_lr to end_lr inclusive."""
    return start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / max(num_steps - 1, 1))


def with_learning_rate(state, learning_rate):
    hyperparams = {**state.opt_state.hyperparams, "learning_rate": jnp.asarray(learning_rate, jnp.float32)}
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))


def smooth(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average (as fastai and Smith's papers smooth the curve)."""
    smoothed, average = np.empty(len(losses)), 0.0
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        smoothed[i] = average / (1 - beta ** (i + 1))
    return smoothed


def smooth_zero_phase(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """The bias-corrected EMA run forwards, then backwards over its output: no lag.

    A forward EMA with beta=0.98 lags the raw loss by up to ~50 steps, which moves every feature of the curve
    (its minimum, its steepest point) towards larger rates; suggestions read off it come out too high, or,
    once divided by a fixed factor to compensate, too low. Smoothing in both directions cancels the lag.
    """
    forward = smooth(losses, beta)
    return smooth(forward[::-1], beta)[::-1]


def lr_range_test(train_step: Callable, state, batch_at: Callable[[int], dict], *, start_lr: float = 1e-7,
                  end_lr: float = 10.0, num_steps: int = 100, beta: float = 0.98, diverge: float = 4.0,
                  seed: int = 0) -> LRFindResult:
    """Runs up to `num_steps` steps of `train_step(state, batch, rng)` on batches `batch_at(i)`.

    `train_step`'s metrics must hold summed "loss" and "count". Stops after the step where the smoothed
    loss exceeds `diverge` x its minimum or any loss is not finite.
    """

    @jax.jit
    def step(state, batch, rng, learning_rate):
        state, metrics = train_step(with_learning_rate(state, learning_rate), batch, rng)
        return state, metrics["loss"] / metrics["count"]

    rates = lr_schedule(start_lr, end_lr, num_steps)
    losses, rng = [], jax.random.key(seed)
    for i, rate in enumerate(rates):
        state, loss = step(state, batch_at(i), jax.random.fold_in(rng, i), rate)
        losses.append(float(loss))
        smoothed = smooth(np.asarray(losses), beta)
        if not np.isfinite(losses[-1]) or smoothed[-1] > diverge * np.min(smoothed):
            break
    losses = np.asarray(losses)
    rates = rates[:len(losses)]
    smoothed = smooth(losses, beta)
    return LRFindResult(rates, losses, smoothed, len(losses), divergence_rate(rates, losses, smoothed, diverge),
                        suggest(rates, losses))


def divergence_rate(rates: np.ndarray, losses: np.ndarray, smoothed: np.ndarray, diverge: float) -> float:
    """The rate from which every raw loss stays above (or is NaN) `diverge` x the best smoothed loss; NaN if
    the sweep ended below it. Read off the raw losses, it has none of the smoothing's lag, and a spike that
    recovers does not count."""
    above = ~(losses <= diverge * np.nanmin(smoothed))
    if not above[-1]:
        return float("nan")
    below = np.flatnonzero(~above)
    return float(rates[below[-1] + 1] if len(below) else rates[0])


def suggest(rates: np.ndarray, losses: np.ndarray, beta: float = 0.9) -> dict[str, float]:
    """Suggested rates from the raw curve, read off its zero-phase smoothing; non-finite losses are dropped.

    Without lag, lighter smoothing (beta 0.9: ~10 steps each way) is enough.

    - minimum: the rate at the lowest smoothed loss, divided by 10 (fastai's `lr_min`).
    - steep: the rate where the smoothed loss falls fastest against log(lr).
    """
    finite = np.isfinite(losses)
    rates, smoothed = rates[finite], smooth_zero_phase(losses[finite], beta)
    if len(rates) < 3:
        raise ValueError(f"lr range test: only {len(rates)} finite losses; lower start_lr")
    slopes = np.gradient(smoothed, np.log(rates))
    return {"minimum": float(rates[np.argmin(smoothed)] / 10), "steep": float(rates[np.argmin(slopes)])}
