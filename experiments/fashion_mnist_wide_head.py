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


# The contract's entry points: the lesson-1 recipe's, with this experiment's hooks.
setup, predict = RECIPE.setup, RECIPE.predict
train_and_evaluate, train_and_evaluate_seeds = RECIPE.train_and_evaluate, RECIPE.train_and_evaluate_seeds
