"""Learning-rate range test of an experiment: prints the suggestions, writes DIR/lr_find.png and DIR/lr_find.json.

  .venv/bin/python scripts/lr_find.py --config experiments/fashion_mnist.py --workdir runs/lr_find [--seeds 3]

Several hosts: the same command on every host with the --distributed flags of scripts/train.py.

Works for every experiment: it sweeps the model, optimizer and data of the experiment's `setup(config, mesh)`
(research/experiment.py). With --seeds K > 1, K initialisations and data orders are swept in one vmapped
program and the plot shows their mean and range.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from scripts import distributed_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file, experiments/NAME.py[:preset].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for lr_find.png and lr_find.json.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Number of seeds swept together (vmapped).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from research.core import compile_cache
    compile_cache.enable()  # before anything compiles
    from scripts.experiment_file import load_experiment  # after sys.path holds the repository root
    from research.core import experiment as recipes, sharding
    from research.core.errors import InputError
    experiment = load_experiment(flags.FLAGS["config"].config_filename)
    config = _CONFIG.value
    try:
        distributed_flags.start()
        mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
        result = recipes.lr_find(config, _WORKDIR.value, experiment.setup(config, mesh), num_seeds=_SEEDS.value)
    except InputError as e:
        sys.exit(f"error: {e}")
    print(f"{result.num_steps} steps, diverged at {result.divergence_value:.3g}; suggestions: "
          + ", ".join(f"{name} {value:.3g}" for name, value in result.suggestions.items()))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from scripts.experiment_file import parse_flags
    app.run(main, flags_parser=parse_flags)
