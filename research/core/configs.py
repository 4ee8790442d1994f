"""Config pieces that every experiment shares, so that each key has one spelling and one meaning everywhere.

An experiment's `get_config(preset)` starts from `base()` and adds its own keys (model, data, task options).
"""

import ml_collections

from research.core.errors import InputError


def check_preset(preset: str, presets, experiment: str) -> None:
    """One error for an unknown preset, naming the experiment file and its presets."""
    if preset not in presets:
        raise InputError(f"unknown preset {preset!r} for {experiment}: use one of {', '.join(map(repr, presets))}")


def optimizer(name: str = "adamw", weight_decay: float = 0.01) -> ml_collections.ConfigDict:
    """research.optimizers.make_optimizer's arguments (the rate comes from `learning_rate` / the schedule)."""
    return ml_collections.ConfigDict(dict(name=name, weight_decay=weight_decay, nesterov=False, b2=0.99,
                                          clip_norm=0.0))


def one_cycle() -> ml_collections.ConfigDict:
    """research.schedules.one_cycle and one_cycle_momentum (fastai's fit_one_cycle defaults)."""
    return ml_collections.ConfigDict(dict(pct_start=0.25, div_factor=25.0, final_div_factor=1e4,
                                          max_momentum=0.95, min_momentum=0.85))


def lr_find() -> ml_collections.ConfigDict:
    """The LR range test (research/lr_finder.py) run when `learning_rate` is 0."""
    return ml_collections.ConfigDict(dict(
        start_lr=1e-6, end_lr=10.0, num_steps=80, suggestion="bottom",
        compiled=False))  # True: one lax.scan (faster on accelerators); False: a loop of jitted steps (CPU)


def checkpoint(best_metric: str = "", best_mode: str = "max") -> ml_collections.ConfigDict:
    """Checkpoint schedule and retention: every `every_epochs` (a fraction: within an epoch), the last `keep` plus the best by the validation
    metric `best_metric` ("" keeps the last ones only)."""
    return ml_collections.ConfigDict(dict(every_epochs=1.0, keep=2, best_metric=best_metric, best_mode=best_mode))


def base() -> ml_collections.ConfigDict:
    """The keys every experiment has."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data_dir = ""  # TFDS data directory; "" = TFDS's default (~/tensorflow_datasets)
    c.num_devices = 0  # 0 = all devices on the mesh
    c.fsdp_devices = 1  # > 1 splits large parameters and optimizer state over this many devices (FSDP)
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.num_epochs = 3
    c.learning_rate = 0.0  # > 0 skips the LR range test and uses this peak rate
    c.optimizer = optimizer()
    c.one_cycle = one_cycle()
    c.lr_find = lr_find()
    c.checkpoint = checkpoint()
    c.log_every = 50
    c.skip_nonfinite = False  # True: skip and count steps with a NaN/inf loss or gradient instead of stopping
    return c
