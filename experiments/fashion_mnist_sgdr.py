"""A variant of lesson 1 (experiments/fashion_mnist.py) with another schedule: SGDR (cosine annealing with warm
restarts, Loshchilov & Hutter) instead of 1cycle; everything else is the baseline's recipe
(research/vision/classifier.py), which takes the schedule as its `make_tx` hook.

Run:
  .venv/bin/python scripts/train.py --config experiments/fashion_mnist_sgdr.py --workdir runs/fashion_mnist_sgdr
Against its baseline over 3 seeds (each side one vmapped program where it can be):
  .venv/bin/python scripts/compare.py --baseline experiments/fashion_mnist.py \\
      --variant experiments/fashion_mnist_sgdr.py --seeds 3 --workdir runs/compare_sgdr

Reaches (README "The research workflow"): see the comparison there; measured on a reduced run only.
"""

import ml_collections

from research.core import experiment, schedules
from research.vision import classifier

EXPERIMENT_FILE = "experiments/fashion_mnist_sgdr.py"
CAPABILITIES = experiment.Capabilities(seeds=True)


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    c = classifier.get_config(preset, EXPERIMENT_FILE)
    c.sgdr = ml_collections.ConfigDict(dict(num_cycles=2, cycle_mult=2))  # cycles of 1/3 and 2/3 of training
    return c


def sgdr_tx(config, peak_lr, total_steps: int):
    """SGDR from peak_lr over total_steps; the constant rate of the range test when total_steps is 0."""
    if not total_steps:
        return classifier.one_cycle_tx(config, peak_lr, 0)
    s = config.sgdr
    cycle_len = max(total_steps // schedules.sgdr_total_steps(1, s.cycle_mult, s.num_cycles), 1)
    return experiment.optimizer(config, schedules.sgdr(peak_lr, cycle_len, s.cycle_mult, s.num_cycles))


RECIPE = classifier.Recipe(make_tx=sgdr_tx)


# The contract's entry points: the lesson-1 recipe's, with this experiment's hooks.
setup, predict = RECIPE.setup, RECIPE.predict
train_and_evaluate, train_and_evaluate_seeds = RECIPE.train_and_evaluate, RECIPE.train_and_evaluate_seeds
