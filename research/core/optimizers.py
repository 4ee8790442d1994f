"""Optimizer builder: SGD with momentum (SGDW) or Adam/AdamW, decoupled weight decay, gradient clipping.

The whole chain is wrapped in `optax.inject_hyperparams`, so the learning rate, momentum (Adam's beta1) and
weight decay live in the optimizer state: schedules drive them, logs read them, and the learning-rate range
test overrides them step by step without rebuilding the optimizer.

Parameter groups are selected by regexes over parameter paths ('layer1_0/conv1/kernel'): `lr_multipliers`
scales a group's step (discriminative learning rates, fastai's lr/9, lr/3, lr), and `frozen` groups are split
off with `optax.multi_transform` into `optax.set_to_zero()`: they get exactly zero updates (weight decay
included) and no optimizer state (no Adam moments for a frozen body).
"""

import functools
import re
from typing import Callable, Sequence

import jax
import optax

Hyperparam = float | Callable[[int], float]


def decay_mask(params):
    """Weight decay applies to weight matrices and kernels, not to biases or normalisation parameters."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def param_path(path) -> str:
    """A parameter's name for pattern matching: its keys joined by '/', e.g. 'layer1_0/conv1/kernel'."""
    return "/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)


def scale_by_group(lr_multipliers: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
    """Multiplies each update by the multiplier of the first regex (searched in `param_path`) that matches it,
    1 if none does: discriminative learning rates (fastai's lr/9, lr/3, lr), and 0 freezes a group."""
    patterns = [(re.compile(pattern), float(multiplier)) for pattern, multiplier in lr_multipliers]

    def multiplier(path) -> float:
        name = param_path(path)
        return next((m for pattern, m in patterns if pattern.search(name)), 1.0)

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(lambda path, u: u * multiplier(path), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def discriminative_multipliers(group_patterns: Sequence[str], factor: float = 3.0) -> list[tuple[str, float]]:
    """`lr_multipliers` for layer groups ordered from input to output: the last group trains at the base rate
    and each earlier one `factor` times slower (fastai's lr/9, lr/3, lr for three groups and factor 3)."""
    last = len(group_patterns) - 1
    return [(pattern, factor ** -(last - i)) for i, pattern in enumerate(group_patterns) if i < last]


def frozen_mask(patterns: Sequence[str], params):
    """A tree like `params` of Python bools: True where the parameter's path matches one of `patterns`."""
    compiled = [re.compile(pattern) for pattern in patterns]
    return jax.tree_util.tree_map_with_path(lambda path, _: any(p.search(param_path(path)) for p in compiled),
                                            params)


def _freeze_labels(patterns: Sequence[str], params):
    return jax.tree.map(lambda frozen: "frozen" if frozen else "trainable", frozen_mask(patterns, params))


def make_optimizer(name: str, learning_rate: Hyperparam, momentum: Hyperparam = 0.9,
                   weight_decay: Hyperparam = 0.0, nesterov: bool = False, b2: float = 0.99,
                   eps: float = 1e-8, clip_norm: float | None = None,
                   lr_multipliers: Sequence[tuple[str, float]] = (),
                   frozen: Sequence[str] = ()) -> optax.GradientTransformation:
    """Builds `name` in {"sgd", "adam", "adamw"}.

    Weight decay is decoupled from the gradient (Loshchilov & Hutter): the update is
    -lr * (direction + weight_decay * param), so it is not rescaled by Adam's second moment nor
    accumulated in SGD's momentum. "adam" is "adamw" with weight_decay forced to 0.
    `clip_norm` clips the gradient's global norm before anything else. `lr_multipliers` scales the step of
    parameter groups selected by regex (see `scale_by_group`); the injected learning rate is the base rate.
    `frozen` lists regexes of parameters that get zero updates (matched with `re.search` on `param_path`).
    """
    if name not in ("sgd", "adam", "adamw"):
        raise ValueError(f"optimizer name must be 'sgd', 'adam' or 'adamw', got {name!r}")
    if name == "adam":
        weight_decay = 0.0

    def build(learning_rate, momentum, weight_decay):
        if name == "sgd":
            direction = optax.trace(decay=momentum, nesterov=nesterov)
        else:
            direction = optax.scale_by_adam(b1=momentum, b2=b2, eps=eps)
        tx = optax.chain(
            optax.clip_by_global_norm(clip_norm) if clip_norm else optax.identity(),
            direction,
            optax.add_decayed_weights(weight_decay, mask=decay_mask),
            optax.scale_by_learning_rate(learning_rate),
            scale_by_group(lr_multipliers) if lr_multipliers else optax.identity(),
        )
        if not frozen:
            return tx
        return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()},
                                     functools.partial(_freeze_labels, tuple(frozen)))

    return optax.inject_hyperparams(build)(learning_rate=learning_rate, momentum=momentum,
                                           weight_decay=weight_decay)


def current_learning_rate(opt_state) -> jax.Array:
    """The learning rate the last update used (read from the injected hyperparameters)."""
    return opt_state.hyperparams["learning_rate"]
