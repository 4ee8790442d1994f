"""What every experiment does the same way, written once: the LR range test on the experiment's own model,
data and optimizer, the fit at the configured or suggested rate, and results.json of one shape.

The contract of an experiment module (tests/test_layout.py checks it):
- `get_config(preset="...") -> ConfigDict`;
- `setup(config, mesh) -> Setup`: the trainable pieces on the config's own data (what lr_find, lr_grid and the
  benchmarks use);
- `train_and_evaluate(config, workdir) -> results dict` (also written as workdir/results.json);
- `predict(config, workdir, input_path) -> list of row dicts` (scripts/predict.py writes them with
  `inference.write_csv`), or, when `CAPABILITIES.predict_writes_folder`, `predict(config, workdir, input_path,
  output_dir)` writes its files there and returns rows describing them;
- `CAPABILITIES = Capabilities(...)`: the optional entry points it has, declared rather than discovered.
The scripts reach every experiment through these, never through its internals.
"""

import json
import os
import platform
import time
from importlib import metadata
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from research.core import lr_finder, optimizers, plots, schedules, trainer
from research.core.errors import InputError
from research.core.train_state import TrainState


class Capabilities(NamedTuple):
    """An experiment's optional entry points.

    seeds: `train_and_evaluate_seeds(config, workdir, num_seeds) -> results` trains several seeds as one
        vmapped program (scripts/compare.py uses it, else one run per seed).
    generate: `generate(config, workdir, prompt, temperature, length, top_k, seed) -> str` (scripts/generate.py).
    predict_writes_folder: `predict` takes an output folder and writes files there (e.g. masks as PNGs).
    """
    seeds: bool = False
    generate: bool = False
    predict_writes_folder: bool = False


class Setup(NamedTuple):
    """An experiment's trainable pieces, as the range test, the fit and the benchmarks need them.

    create_state(tx, rng) -> a fresh TrainState (jitted initialisation) with optimizer `tx`.
    make_tx(peak_lr, total_steps) -> the fit's optimizer: the schedule over total_steps, or a constant,
        injected rate when total_steps is 0 (what the range test sweeps).
    train_step(state, batch, rng) -> (state, summed metrics).
    batches: the training batch source (`batch(step)`, `batch_traceable(step, stream)`, `steps_per_epoch`).
    eval_step(state, batch) -> summed metrics, in evaluation mode, on a batch shaped like `batches`' (what the
        evaluators run after their own preparation, e.g. normalising uint8 images); tests/test_export.py lowers
        it with the train step for every platform.
    """
    create_state: Callable[[optax.GradientTransformation, jax.Array], TrainState]
    make_tx: Callable[[float, int], optax.GradientTransformation]
    train_step: Callable
    batches: object
    eval_step: Callable | None = None


def optimizer(config, learning_rate, momentum=0.9, **groups) -> optax.GradientTransformation:
    """`config.optimizer` (research/configs.optimizer) at `learning_rate` and `momentum` (floats or schedules).
    `groups`: make_optimizer's lr_multipliers / frozen."""
    o = config.optimizer
    return optimizers.make_optimizer(o.name, learning_rate, momentum, o.weight_decay, o.nesterov, o.b2,
                                     clip_norm=o.clip_norm or None, **groups)


def one_cycle_optimizer(config, peak_lr: float, total_steps: int,
                        **groups) -> optax.GradientTransformation:
    """`config.optimizer` with 1cycle (`config.one_cycle`) on the rate and on momentum/beta1 over total_steps;
    a constant rate (momentum 0.9) when total_steps is 0."""
    learning_rate, momentum = peak_lr, 0.9
    if total_steps:
        cycle = config.one_cycle
        learning_rate = schedules.one_cycle(total_steps, peak_lr, cycle.pct_start, cycle.div_factor,
                                            cycle.final_div_factor)
        momentum = schedules.one_cycle_momentum(total_steps, cycle.pct_start, cycle.max_momentum,
                                                cycle.min_momentum)
    return optimizer(config, learning_rate, momentum, **groups)


def lr_find(config, workdir: str, setup: Setup, num_seeds: int = 1) -> lr_finder.LRFindResult:
    """The LR range test (`config.lr_find`) on the experiment's model, optimizer and data; writes lr_find.png
    and lr_find.json. With num_seeds > 1 it sweeps K initialisations and data orders in one vmapped, compiled
    program and suggests from the mean curve."""
    lf = config.lr_find
    tx = setup.make_tx(lf.start_lr, 0)
    sweep = dict(start_lr=lf.start_lr, end_lr=lf.end_lr, num_steps=lf.num_steps)
    batches = setup.batches
    if num_seeds == 1:
        state = setup.create_state(tx, jax.random.key(config.seed))
        found = lr_finder.lr_range_test(setup.train_step, state,
                                        batches.batch_traceable if lf.compiled else batches.batch,
                                        seed=config.seed, compiled=lf.compiled, **sweep)
    else:
        seeds = [config.seed + k for k in range(num_seeds)]
        states = jax.vmap(lambda key: setup.create_state(tx, key))(jax.vmap(jax.random.key)(jnp.asarray(seeds)))
        found = lr_finder.lr_range_test_seeds(setup.train_step, states, batches.batch_traceable, seeds, **sweep)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        plots.lr_find(os.path.join(workdir, "lr_find.png"), found)
        with open(os.path.join(workdir, "lr_find.json"), "w") as f:
            json.dump(found.to_json(), f)
    return found


def learning_rate(config, workdir: str, setup: Setup) -> float:
    """`config.learning_rate` when set, else the range test's `config.lr_find.suggestion` (read back from
    workdir/lr_find.json when resuming, so a resumed run trains at the same rate)."""
    if config.learning_rate:
        return float(config.learning_rate)
    path = os.path.join(workdir, "lr_find.json")
    if os.path.exists(path):
        with open(path) as f:
            suggestions = json.load(f)["suggestions"]
    else:
        suggestions = lr_find(config, workdir, setup).suggestions
    if config.lr_find.suggestion not in suggestions:
        raise InputError(f"config.lr_find.suggestion={config.lr_find.suggestion!r} is not one of "
                         f"{sorted(suggestions)}")
    return suggestions[config.lr_find.suggestion]


def fit(config, workdir: str, setup: Setup, peak_lr: float, mesh, evaluate=None, num_steps: int | None = None,
        stop_at: int | None = None, **train_kwargs) -> TrainState:
    """A fresh state trained with 1cycle at `peak_lr` for `num_steps` (default `config.num_epochs` epochs),
    checkpointed and resumable in workdir as `config.checkpoint` says."""
    steps_per_epoch = setup.batches.steps_per_epoch
    num_steps = num_steps or config.num_epochs * steps_per_epoch
    state = setup.create_state(setup.make_tx(peak_lr, num_steps), jax.random.key(config.seed))
    c = config.checkpoint
    return trainer.train(state=state, train_step=setup.train_step, batches=setup.batches, num_steps=num_steps,
                         mesh=mesh, seed=config.seed, workdir=workdir, evaluate=evaluate, stop_at=stop_at,
                         checkpoint_every=max(1, round(c.every_epochs * steps_per_epoch)), log_every=config.log_every,
                         keep_checkpoints=c.keep, best_metric=c.best_metric or None, best_mode=c.best_mode,
                         skip_nonfinite=config.skip_nonfinite,
                         meta={"learning_rate": peak_lr, "config": config_json(config)}, **train_kwargs)


def config_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort())


def versions() -> dict[str, str]:
    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_results(workdir: str, metrics: dict, config: ml_collections.ConfigDict, timings: dict[str, float],
                  mesh, **extra) -> dict:
    """results.json, the same top-level shape for every experiment: {"metrics": final numbers (validation and
    test), "config", "timings" (seconds), "devices", "versions", ...extra}. Process 0 writes; returns it."""
    results = {"metrics": metrics, **extra, "config": config_json(config),
               "timings": {k: round(v, 2) for k, v in timings.items()},
               "devices": f"{mesh.size} x {jax.devices()[0].device_kind}", "versions": versions()}
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "results.json.tmp"), "w") as f:
            json.dump(results, f, indent=2)
        os.replace(os.path.join(workdir, "results.json.tmp"), os.path.join(workdir, "results.json"))
    return results


class Timer:
    """Named wall-clock sections: `with timer("train"): ...`, then `timer.seconds`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._started = time.time()

    def __call__(self, name: str):
        timer = self

        class _Section:
            def __enter__(self):
                self.started = time.time()

            def __exit__(self, *exc):
                timer.seconds[name] = timer.seconds.get(name, 0.0) + time.time() - self.started

        return _Section()

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": time.time() - self._started}
