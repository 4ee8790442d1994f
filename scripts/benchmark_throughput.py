"""Training throughput of any experiment's model and batch pipeline (its `setup`), in examples per second.

  .venv/bin/python scripts/benchmark_throughput.py --config experiments/fashion_mnist.py [--steps 50]

Times `--steps` jitted train steps (batch gather + augmentation + forward/backward + update) after a warm-up
that compiles them, on the experiment's real data, and prints the device, the batch size and images/s.
"""

import os
import sys
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file, experiments/NAME.py[:preset].",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 50, "Timed train steps.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps first (compilation).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from scripts.experiment_file import load_experiment  # after sys.path holds the repository root
    from research.core import sharding, trainer

    config = _CONFIG.value
    experiment = load_experiment(flags.FLAGS["config"].config_filename)
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    run = experiment.setup(config, mesh)
    batches = run.batches
    state = run.create_state(run.make_tx(1e-3, config.num_epochs * batches.steps_per_epoch), jax.random.key(0))
    step = trainer.jit_train_step(run.train_step, state, mesh)
    rng = jax.random.key(0)
    for i in range(_WARMUP.value):
        state, metrics = step(state, batches.batch(i), rng)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for i in range(_WARMUP.value, _WARMUP.value + _STEPS.value):
        state, metrics = step(state, batches.batch(i), rng)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - started
    print(f"device: {mesh.size} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"batch {config.batch_size}: {_STEPS.value * config.batch_size / seconds:.0f} examples/s, "
          f"{1000 * seconds / _STEPS.value:.1f} ms/step")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from scripts.experiment_file import parse_flags
    app.run(main, flags_parser=parse_flags)
