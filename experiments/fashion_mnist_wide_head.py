"""A variant of lesson 1 (experiments/fashion_mnist.py) with another head: fastai's head (concatenated max and
average pooling, then BatchNorm -> dropout -> a 512-wide hidden layer -> BatchNorm -> dropout -> linear) on the
same small ResNet body, instead of average pooling and one linear layer; everything else is the baseline's
recipe (research/image_classifier.py).

Run:
  .venv/bin/python scripts/train.py --config experiments/fashion_mnist_wide_head.py --workdir runs/wide_head
Against its baseline over 3 seeds (each side one vmapped program where it can be):
  .venv/bin/python scripts/compare.py --baseline experiments/fashion_mnist.py \\
      --variant experiments/fashion_mnist_wide_head.py --seeds 3 --workdir runs/compare_wide_head

Reaches (README "The research workflow"): see the comparison there; measured on a reduced run only.
"""

import functools

import ml_collections

from research.core import experiment
from research.vision import classifier as image_classifier
from research.vision.head import FastaiHead

EXPERIMENT_FILE = "experiments/fashion_mnist_wide_head.py"


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    c = image_classifier.get_config(preset, EXPERIMENT_FILE)
    c.head = ml_collections.ConfigDict(dict(hidden=(512,), dropout=0.25))
    return c


def wide_head_model(config, num_classes: int):
    """The baseline's body with fastai's head in place of the pooled linear classifier."""
    head = functools.partial(FastaiHead, hidden=tuple(config.head.hidden), dropout=config.head.dropout)
    return image_classifier.resnet_model(config, num_classes).clone(head=head)


RECIPE = image_classifier.Recipe(make_model=wide_head_model)


def setup(config, mesh) -> experiment.Setup:
    return image_classifier.setup(config, mesh, RECIPE)


def train_and_evaluate(config, workdir: str) -> dict:
    return image_classifier.train_and_evaluate(config, workdir, RECIPE)


def train_and_evaluate_seeds(config, workdir: str, num_seeds: int) -> dict:
    return image_classifier.train_and_evaluate_seeds(config, workdir, RECIPE, num_seeds)


def predict(config, workdir: str, input_path: str, output_path: str) -> int:
    return image_classifier.predict(config, workdir, input_path, output_path, RECIPE)
