"""Lesson 1 (2018) as the course ran it: an ImageNet ResNet-34 fine-tuned on the Oxford-IIIT Pets (37 breeds);
the `dogs_vs_cats` preset is the course's dogs-vs-cats on TFDS cats_vs_dogs.

  1. head: torchvision's ImageNet ResNet-34 body (research/vision/pretrained.py downloads and checks it) with a
     new fastai head; the body is frozen (BatchNorm on its ImageNet statistics), the head trained with 1cycle.
  2. unfreeze: every layer group trains, at discriminative rates (lr/9, lr/3, lr), with SGDR restarts
     (cycle_len, cycle_mult) and a checkpoint at the end of each cycle (research/core/finetune.py).
10% of the training images validate; the test split is scored once, plain and with test-time augmentation
(flips and zooms). cats_vs_dogs has only a train split: its first 90% train (10% of them validate), the last 10%
test.

Needs a network (the TFDS dataset and the weights) and an accelerator: run it on a cloud machine.
  .venv/bin/python scripts/train.py --config experiments/pets.py --workdir runs/pets
  .venv/bin/python scripts/train.py --config experiments/pets.py:dogs_vs_cats --workdir runs/dogs_vs_cats
The course's fastai reaches about 6-7% error on pets and 99.4% (TTA) on dogs-vs-cats with ResNet-34; not run here
yet (no network on the development machine). Its wiring is tested offline on TFDS's mock examples with a tiny
random-weight ResNet.
"""

import ml_collections

from research.core import configs, experiment
from research.vision import image_sources, imagenet_classifier, pipeline

CAPABILITIES = experiment.Capabilities()


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("default", "dogs_vs_cats"), "experiments/pets.py")
    c = configs.base()
    c.data = image_sources.data_config(source="tfds", tfds_name="oxford_iiit_pet", image_size=224)
    c.arch = "resnet34"
    c.stage_sizes = ()  # () = the architecture's own; smaller for tests (random weights only)
    c.stage_widths = ()
    # A key of research.vision.pretrained.CHECKPOINTS (downloaded into its cache), a local .pth/.safetensors path, or
    # "" for random weights (tests only).
    c.weights = "resnet34"
    c.head = ml_collections.ConfigDict(dict(hidden=(512,), dropout=0.5))
    c.label_smoothing = 0.0
    c.batch_size = 64
    c.eval_batch_size = 64
    c.augment = pipeline.augment_config(flip=True, max_zoom=1.1, max_degrees=10.0, brightness=0.2, contrast=0.2)
    c.head_phase = ml_collections.ConfigDict(dict(epochs=4, learning_rate=3e-3))
    c.finetune = ml_collections.ConfigDict(dict(learning_rate=3e-4, cycle_len=1, cycle_mult=2, num_cycles=2,
                                                group_factor=3.0))
    c.tta = True
    del c.num_epochs, c.learning_rate  # the phases have their own
    if preset == "dogs_vs_cats":
        c.data.update(tfds_name="cats_vs_dogs", train_split="train[:90%]", test_split="train[90%:]")
        c.head_phase.epochs = 2
    return c


# The contract's entry points: the recipe's own (research/vision/imagenet_classifier.py).
setup, train_and_evaluate = imagenet_classifier.setup, imagenet_classifier.train_and_evaluate
predict = imagenet_classifier.predict
