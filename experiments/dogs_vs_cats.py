"""Lesson 1's dogs-vs-cats (2018): the pets flow (experiments/pets.py) on TFDS cats_vs_dogs, 2 classes.

TFDS has only a train split (23,262 images): the first 90% train, the last 10% test. An ImageNet ResNet-34,
a new fastai head on the frozen body, then unfreeze with discriminative rates and SGDR; accuracy with
test-time augmentation.

Needs a network (the TFDS dataset and the weights) and an accelerator: run it on a cloud machine.
  .venv/bin/python scripts/train.py --config experiments/dogs_vs_cats.py --workdir runs/dogs_vs_cats
The course reached 99.4% with TTA (resnet34); not run here yet (no network on the development machine).
"""

import ml_collections

from experiments import pets
from research.errors import InputError


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    if preset != "default":
        raise InputError(f"unknown preset {preset!r} for experiments/dogs_vs_cats.py: use 'default'")
    c = pets.get_config()
    c.tfds_name = "cats_vs_dogs"
    c.train_split = "train[:90%]"
    c.test_split = "train[90%:]"
    c.head_phase.epochs = 2
    c.finetune.cycle_len = 1
    c.finetune.cycle_mult = 2
    c.finetune.num_cycles = 2
    return c


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    return pets.train_and_evaluate(config, workdir)
