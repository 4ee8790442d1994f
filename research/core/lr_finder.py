"""Learning-rate range test (fastai's `lr_find`, after Leslie Smith), as a pure function.

From a tiny value, raise a hyperparameter (the learning rate by default) every training step, record the
loss, and stop when the smoothed loss blows up. The caller's state is never changed: the test trains a copy
(its jitted step never donates its input), and two runs with the same seed give the same curve.

The optimizer must take the swept hyperparameter as an injected, unscheduled value (`optax.inject_hyperparams`,
as `research.optimizers.make_optimizer` builds it with a float learning rate); the test overrides it every step.
With discriminative learning rates (per-group multipliers inside the optimizer) the sweep moves the base rate,
so every group keeps its ratio to it.

Two ways to run, with the same result:
- `lr_range_test(...)`: a Python loop over one jitted step that stops at divergence. Fastest on CPU, where an
  XLA while-loop holding convolutions runs 10-20x slower than a loop over a jitted step.
- `lr_range_test(..., compiled=True)`: the whole sweep as one `lax.scan`; steps after divergence are masked
  (state kept, loss NaN). Fastest on accelerators, and what `lr_range_test_seeds` vmaps over K seeds.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class LRFindResult:
    values: np.ndarray  # the swept hyperparameter's value at each step run (learning rates by default)
    losses: np.ndarray  # raw training loss at each step (for several seeds: their mean)
    smoothed_losses: np.ndarray  # bias-corrected exponential moving average of `losses`
    num_steps: int  # steps run before the sweep stopped
    divergence_value: float  # where the loss left for good (NaN if it never did)
    suggestions: dict[str, float]  # rule name -> suggested value
    hyperparam: str = "learning_rate"
    losses_per_seed: np.ndarray | None = None  # K x num_steps, for a multi-seed sweep

    def to_json(self) -> dict:
        out = {"hyperparam": self.hyperparam, "values": self.values.tolist(), "losses": self.losses.tolist(),
               "smoothed_losses": self.smoothed_losses.tolist(), "num_steps": self.num_steps,
               "divergence_value": self.divergence_value, "suggestions": self.suggestions}
        if self.losses_per_seed is not None:
            out["losses_per_seed"] = self.losses_per_seed.tolist()
        return out


def sweep_values(start: float, end: float, num_steps: int, spacing: str = "exponential") -> np.ndarray:
    """`num_steps` values from start to end inclusive, evenly spaced in log ("exponential") or linearly."""
    if spacing == "exponential":
        return start * (end / start) ** (np.arange(num_steps) / max(num_steps - 1, 1))
    if spacing == "linear":
        return np.linspace(start, end, num_steps)
    raise ValueError(f"spacing must be 'exponential' or 'linear', got {spacing!r}")


def with_hyperparam(state, name: str, value):
    """`state` with the optimizer's injected hyperparameter `name` set to `value`."""
    hyperparams = state.opt_state.hyperparams
    if name not in hyperparams:
        raise KeyError(f"optimizer has no injected hyperparameter {name!r}; it has {sorted(hyperparams)}")
    hyperparams = {**hyperparams, name: jnp.asarray(value, hyperparams[name].dtype)}
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))


def smooth(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average (as fastai and Smith's papers smooth the curve)."""
    smoothed, average = np.empty(len(losses)), 0.0
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        smoothed[i] = average / (1 - beta ** (i + 1))
    return smoothed


def smooth_zero_phase(losses: np.ndarray, beta: float = 0.9) -> np.ndarray:
    """The bias-corrected EMA run forwards, then backwards over its output: smoothing without lag.

    A forward EMA with beta=0.98 lags the raw loss by up to ~50 steps, which drags every feature of the curve
    (its minimum, its steepest point, the end of its descent) towards larger values.
    """
    return smooth(smooth(losses, beta)[::-1], beta)[::-1]


def median_filter(losses: np.ndarray, window: int = 5) -> np.ndarray:
    """Running median: removes single-step spikes (a bad batch) that an average would smear into a bump."""
    half = window // 2
    padded = np.pad(losses, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=-1)


def _diverged(loss, smoothed, best, diverge):
    return (~jnp.isfinite(loss)) | (smoothed > diverge * best)


def lr_range_test(train_step: Callable, state, batch_at: Callable, *, start_lr: float = 1e-7,
                  end_lr: float = 10.0, num_steps: int = 100, spacing: str = "exponential", beta: float = 0.98,
                  diverge: float = 4.0, seed: int = 0, hyperparam: str = "learning_rate",
                  compiled: bool = False) -> LRFindResult:
    """Sweeps `hyperparam` from start_lr to end_lr over up to `num_steps` steps of `train_step`.

    `train_step(state, batch, rng) -> (state, metrics)` with summed metrics "loss" and "count";
    `batch_at(i)` gives step i's batch (for `compiled=True`, `i` is traced: index device arrays with it).
    Stops after the step whose smoothed loss exceeds `diverge` x the best so far or whose loss is not finite.
    """
    values = sweep_values(start_lr, end_lr, num_steps, spacing)
    if compiled:
        losses, ran = jax.device_get(_compiled_sweep(train_step, batch_at, beta, diverge, hyperparam)(
            state, jnp.asarray(values, jnp.float32), jax.random.key(seed)))
        losses = np.asarray(losses)[:int(ran.sum())]
    else:
        losses = _stepwise_sweep(train_step, state, batch_at, values, beta, diverge, seed, hyperparam)
    return _result(values[:len(losses)], losses, beta, diverge, hyperparam)


def lr_range_test_seeds(train_step: Callable, states, batch_at: Callable, seeds, *, start_lr: float = 1e-7,
                        end_lr: float = 10.0, num_steps: int = 100, spacing: str = "exponential",
                        beta: float = 0.98, diverge: float = 4.0,
                        hyperparam: str = "learning_rate") -> LRFindResult:
    """K sweeps in one compiled program: `states` stacked on a leading axis of size K (e.g. K initialisations,
    from `jax.vmap` over init keys), `seeds` K step seeds. `batch_at(i, k)` gives seed k's batch at step i.

    Each seed stops at its own divergence (masked); the mean curve runs until the first seed diverges, and the
    suggestions come from it. `losses_per_seed` keeps every curve for a band on the plot.
    """
    values = sweep_values(start_lr, end_lr, num_steps, spacing)

    def one(state, rng, k):
        return _compiled_sweep(train_step, lambda i: batch_at(i, k), beta, diverge, hyperparam)(
            state, jnp.asarray(values, jnp.float32), rng)

    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    per_seed, ran = jax.device_get(jax.jit(jax.vmap(one))(states, keys, jnp.arange(len(seeds))))
    per_seed, steps = np.asarray(per_seed), int(ran.sum(axis=1).min())
    result = _result(values[:steps], per_seed[:, :steps].mean(0), beta, diverge, hyperparam)
    result.losses_per_seed = per_seed[:, :steps]
    return result


def _stepwise_sweep(train_step, state, batch_at, values, beta, diverge, seed, hyperparam) -> np.ndarray:
    @jax.jit
    def step(state, batch, rng, value):
        state, metrics = train_step(with_hyperparam(state, hyperparam, value), batch, rng)
        return state, metrics["loss"] / metrics["count"]

    losses, rng = [], jax.random.key(seed)
    average, best = 0.0, np.inf
    for i, value in enumerate(values):
        state, loss = step(state, batch_at(i), jax.random.fold_in(rng, i), np.float32(value))
        losses.append(float(loss))
        average = beta * average + (1 - beta) * losses[-1]
        smoothed = average / (1 - beta ** (i + 1))
        best = min(best, smoothed)
        if bool(_diverged(jnp.float32(losses[-1]), smoothed, best, diverge)):
            break
    return np.asarray(losses)


def _compiled_sweep(train_step, batch_at, beta, diverge, hyperparam):
    """A function (state, values_N, rng) -> (losses_N, ran_N), one lax.scan; after divergence: state kept,
    loss NaN, ran False.

    The step that diverges keeps its (non-finite or large) loss, so the curve shows the blow-up, and the
    masked steps after it read NaN; `ran` counts the steps run, whatever the diverging step's loss."""

    def sweep(state, values, rng):
        def body(carry, inputs):
            state, average, best, stopped = carry
            i, value = inputs
            new_state, metrics = train_step(with_hyperparam(state, hyperparam, value), batch_at(i),
                                            jax.random.fold_in(rng, i))
            loss = metrics["loss"] / metrics["count"]
            new_average = beta * average + (1 - beta) * loss
            smoothed = new_average / (1 - beta ** (i + 1).astype(jnp.float32))
            new_best = jnp.minimum(best, smoothed)
            state = jax.tree.map(lambda old, new: jnp.where(stopped, old, new), state, new_state)
            carry = (state, jnp.where(stopped, average, new_average), jnp.where(stopped, best, new_best),
                     stopped | _diverged(loss, smoothed, new_best, diverge))
            return carry, (jnp.where(stopped, jnp.nan, loss), ~stopped)

        init = (state, jnp.float32(0.0), jnp.float32(jnp.inf), jnp.bool_(False))
        _, (losses, ran) = jax.lax.scan(body, init, (jnp.arange(len(values)), values))
        return losses, ran

    return jax.jit(sweep)


def _result(values, losses, beta, diverge, hyperparam) -> LRFindResult:
    smoothed = smooth(losses, beta)
    return LRFindResult(values, losses, smoothed, len(losses), divergence_value(values, losses, smoothed, diverge),
                        suggest(values, losses), hyperparam)


def divergence_value(values: np.ndarray, losses: np.ndarray, smoothed: np.ndarray, diverge: float) -> float:
    """The value from which every raw loss stays above `diverge` x the best smoothed loss (or is not finite);
    NaN if the sweep ended below it. Read off the raw losses it has none of the smoothing's lag, and a spike
    that recovers does not count."""
    above = ~(losses <= diverge * np.nanmin(smoothed))
    if not above[-1]:
        return float("nan")
    below = np.flatnonzero(~above)
    return float(values[below[-1] + 1] if len(below) else values[0])


def suggest(values: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    """Suggested values read off the zero-phase smoothing of the raw curve; non-finite losses are dropped.

    - bottom (the default of our experiments): the geometric middle of the curve's floor, the stretch around
      the minimum where the loss is within 10% of its total drop from the minimum. The loss at a step
      reflects all the training before it, so the floor is where the rate is large enough to have trained
      the model and not yet so large that it unsettles it; 1cycle's peak belongs there.
    - minimum: the value at the lowest loss, divided by 10 (fastai's `lr_min`).
    - steep: where the loss falls fastest against log(value), before the minimum.
    - valley: fastai v2's rule: the middle of the longest decreasing stretch of the curve.
    - slide: from the steepest point, slide towards larger values while the curve still falls at least half
      as steeply, and take the last such value (the end of the steep descent).
    A running median removes single-step spikes first; reading the curve without lag, and only up to its
    minimum, keeps the blow-up from moving the suggestions.
    """
    finite = np.isfinite(losses)
    values, losses = values[finite], losses[finite]
    if len(values) < 3:
        raise ValueError(f"lr range test: only {len(values)} finite losses; lower start_lr or add steps")
    curve = suggestion_curve(values, losses)
    lowest = int(np.argmin(curve))
    floor = curve[lowest] + 0.1 * max(curve[0] - curve[lowest], 0.0)
    left, right = lowest, lowest
    while left > 0 and curve[left - 1] <= floor:
        left -= 1
    while right + 1 < len(curve) and curve[right + 1] <= floor:
        right += 1
    slopes = np.gradient(curve, np.log(values))
    steepest = int(np.argmin(slopes[:lowest + 1]))
    slide = steepest
    while slide + 1 < lowest and slopes[slide + 1] < 0.5 * slopes[steepest]:
        slide += 1
    return {"bottom": float(np.sqrt(values[left] * values[right])),
            "minimum": float(values[lowest] / 10), "steep": float(values[steepest]),
            "valley": float(values[valley_index(curve)]), "slide": float(values[slide])}


def suggestion_curve(values: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """The curve the suggestions are read from: running median, then zero-phase smoothing (finite losses)."""
    return smooth_zero_phase(median_filter(losses), beta_for(values))


def beta_for(values: np.ndarray) -> float:
    """Smoothing of about a quarter of a decade each way, whatever the sweep's density."""
    steps_per_decade = (len(values) - 1) / max(np.log10(values[-1] / values[0]), 1e-9)
    return 1.0 - 1.0 / max(1.0, steps_per_decade / 4)


def valley_index(curve: np.ndarray) -> int:
    """fastai v2's `valley`: the longest (not necessarily contiguous) strictly decreasing subsequence of the
    curve, and the point about half way along it, with fastai's arithmetic (from one before the subsequence's
    first point, int(n / 3) + int(n / 6) further, n its length)."""
    length = np.ones(len(curve), int)  # length[i]: longest decreasing subsequence ending at i
    for i in range(1, len(curve)):
        earlier_higher = curve[:i] > curve[i]
        if earlier_higher.any():
            length[i] = 1 + length[:i][earlier_higher].max()
    end = int(np.argmax(length))
    before_start = end - int(length[end])
    third = (end - before_start) / 3
    return max(before_start + int(third) + int(third / 2), 0)
