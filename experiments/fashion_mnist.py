"""Lesson 1 on Fashion-MNIST or your own images: LR range test -> 1cycle fit at the suggested rate -> the best
checkpoint by validation accuracy -> test accuracy (plain and with TTA), scored once; confusion matrix,
most-confused pairs, top losses and class activation maps on the validation images.

The recipe is research/vision/classifier.py's (variants such as experiments/fashion_mnist_sgdr.py change its model
or optimizer in a few lines). Run (default preset, sized for a 2-core CPU):
  .venv/bin/python scripts/train.py --config experiments/fashion_mnist.py --workdir runs/fashion_mnist
Longer preset, for accelerators:
  .venv/bin/python scripts/train.py --config experiments/fashion_mnist.py:long --workdir runs/fashion_mnist_long
Predict for new images with the trained run:
  .venv/bin/python scripts/predict.py --workdir runs/fashion_mnist --input DIR_OR_CSV --output predictions.csv

Reaches (README "Results" has the times and the machine): the cpu preset, 3 epochs on 54k images (6k held out to
validate), suggested rate 8.77e-3: validation 92.53%, test 92.28% (92.31% with TTA), re-run 2026-12-03; about
3.5 minutes for the whole run on the idle 2-core CPU (docs/vision.md). The long preset (15 epochs, flips and crops; measured before the CPU
convolution gradients of research/vision/conv.py): validation 94.08%, test 93.35% (93.57% with TTA), 811 s of
training.

Your own images, no code (config keys `data.*`, research/vision/image_sources.py): a folder per class, a CSV, or a
TFDS catalog name, e.g.
  .venv/bin/python scripts/train.py --config experiments/fashion_mnist.py --workdir runs/mine \\
      --config.data.source=folder --config.data.path=DIR [--config.data.image_size=64]
DIR/train/<class>/* trains, DIR/valid/<class>/* validates (else 10% of train is held out), DIR/test/<class>/*
(if present) is scored once at the end.
"""

import ml_collections

from research.core import experiment
from research.vision import classifier

EXPERIMENT_FILE = "experiments/fashion_mnist.py"
RECIPE = classifier.Recipe()  # the small ResNet, AdamW with 1cycle
CAPABILITIES = experiment.Capabilities(seeds=True)


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    return classifier.get_config(preset, EXPERIMENT_FILE)


# The contract's entry points: the lesson-1 recipe's, with this experiment's hooks.
setup, predict = RECIPE.setup, RECIPE.predict
train_and_evaluate, train_and_evaluate_seeds = RECIPE.train_and_evaluate, RECIPE.train_and_evaluate_seeds
