"""A variant of lesson 1 (experiments/fashion_mnist.py) with another head: fastai's head (concatenated max and
average pooling, then BatchNorm -> dropout -> a 512-wide hidden layer -> BatchNorm -> dropout -> linear) on the
same small ResNet body, instead of average pooling and one linear layer; everything else is the baseline's
recipe (research/vision/classifier.py), which takes the model as its `make_model` hook. With no linear `fc`
layer, its class activation maps are Grad-CAM's (research/vision/interpret.py).

Compared with its baseline over 3 seeds (README "The research workflow"; measured on a reduced run only), each
side one vmapped program where it can be:
  .venv/bin/python scripts/compare.py --baseline experiments/fashion_mnist.py \\
      --variant experiments/fashion_mnist_wide_head.py --seeds 3 --workdir runs/compare_wide_head
Alone: .venv/bin/python scripts/train.py --config experiments/fashion_mnist_wide_head.py --workdir runs/wide_head
"""

import ml_collections

from research.core import experiment
from research.vision import architectures, classifier

EXPERIMENT_FILE = "experiments/fashion_mnist_wide_head.py"
CAPABILITIES = experiment.Capabilities(seeds=True)


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    c = classifier.get_config(preset, EXPERIMENT_FILE)
    c.head = ml_collections.ConfigDict(dict(hidden=(512,), dropout=0.25))
    return c


def wide_head_model(config, num_classes: int):
    """The baseline's body with fastai's head in place of the pooled linear classifier."""
    return classifier.resnet_model(config, num_classes).clone(head=architectures.fastai_head(config.head))


RECIPE = classifier.Recipe(make_model=wide_head_model)


def setup(config, mesh) -> experiment.Setup:
    return classifier.setup(config, mesh, RECIPE)


def train_and_evaluate(config, workdir: str) -> dict:
    return classifier.train_and_evaluate(config, workdir, RECIPE)


def train_and_evaluate_seeds(config, workdir: str, num_seeds: int) -> dict:
    return classifier.train_and_evaluate_seeds(config, workdir, RECIPE, num_seeds)


def predict(config, workdir: str, input_path: str) -> list[dict]:
    return classifier.predict(config, workdir, input_path, RECIPE)
