"""K seeds in one vmapped program against K sequential runs, in one run: the time of the same number of
training steps per seed, and their ratio.

  .venv/bin/python scripts/benchmark_seeds.py --config experiments/fashion_mnist.py [--seeds 4] [--steps 50]

Both ways run the experiment's own train step (its `setup`) as the trainer runs it: jitted once with a donated
state, one batch per step from the batch source (for the vmapped program, every member's own batch, stacked).
Each is compiled and warmed up first (--warmup steps, not timed); then --steps steps per seed are timed:
K x steps one seed after the other (each seed a fresh state), against steps of the K-member program.
--steps 0 times the whole preset (config.num_epochs epochs). Prints the device, both times and
sequential / vmapped (above 1: vmapping is faster).
"""

import os
import sys
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file, experiments/NAME.py[:preset].",
                                          lock_config=True)
_SEEDS = flags.DEFINE_integer("seeds", 4, "K: seeds trained one after the other, and as one vmapped program.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed train steps per seed; 0: the whole preset.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from scripts.experiment_file import load_experiment  # after sys.path holds the repository root
    from research.core import seeds, sharding, trainer

    config = _CONFIG.value
    experiment = load_experiment(flags.FLAGS["config"].config_filename)
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    run = experiment.setup(config, mesh)
    total_steps = config.num_epochs * run.batches.steps_per_epoch
    steps = _STEPS.value or total_steps
    members = seeds.seed_range(config.seed, _SEEDS.value)
    tx = run.make_tx(1e-3, total_steps)

    def timed(step_fn, state, batch_at, rng) -> float:
        for i in range(_WARMUP.value):
            state, metrics = step_fn(state, batch_at(i), rng)
        jax.block_until_ready(metrics)
        started = time.perf_counter()
        for i in range(_WARMUP.value, _WARMUP.value + steps):
            state, metrics = step_fn(state, batch_at(i), jax.random.fold_in(rng, i))
        jax.block_until_ready(metrics)
        return time.perf_counter() - started

    sequential = 0.0
    step_fn = None
    for seed in members.seeds:
        state = run.create_state(tx, jax.random.key(seed))
        step_fn = step_fn or trainer.jit_train_step(run.train_step, state, mesh)
        sequential += timed(step_fn, state, run.batches.batch, jax.random.key(seed))
    states = seeds.create_states(run.create_state, tx, members)
    vmapped_fn = trainer.jit_train_step(seeds.member_step(run.train_step), states, mesh, members=True)
    vmapped = timed(vmapped_fn, states, seeds.MemberBatches(run.batches, members).batch, jax.random.key(0))
    k = members.size
    print(f"device: {mesh.size} x {jax.devices()[0].device_kind} ({jax.default_backend()}); "
          f"{flags.FLAGS['config'].config_filename}, batch {config.batch_size}, {steps} steps per seed")
    print(f"{k} sequential runs: {sequential:.1f} s ({1000 * sequential / (k * steps):.1f} ms per seed-step)")
    print(f"{k} seeds vmapped:   {vmapped:.1f} s ({1000 * vmapped / (k * steps):.1f} ms per seed-step)")
    print(f"ratio sequential / vmapped: {sequential / vmapped:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from scripts.experiment_file import parse_flags
    app.run(main, flags_parser=parse_flags)
