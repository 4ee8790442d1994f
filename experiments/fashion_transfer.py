"""Transfer learning offline (lessons 1, 2 and 7): pretrain on Fashion-MNIST classes 0-4, fine-tune on 5-9.

The recipe fastai applies to an ImageNet ResNet, with Fashion-MNIST standing in for ImageNet:
  1. pretrain: the lesson-1 small ResNet (torchvision-style `fc` head) on every training image of classes 0-4
     (T-shirt, trouser, pullover, dress, coat), one 1cycle fit.
  2. head: a new fastai head (concat pooling, BN, dropout, linear) on that body, for classes 5-9 (sandal, shirt,
     sneaker, bag, ankle boot) with only n labelled training images each; the body is frozen (its BatchNorm
     layers keep their running statistics, its parameters get no update).
  3. fine-tune: everything unfrozen, discriminative learning rates (lr/9, lr/3, lr for fastai's three layer
     groups) and SGDR (restarts after cycle_steps, cycle_steps*cycle_mult, ...; a checkpoint ends each cycle).
  baseline: the same architecture (the pretraining's initial body, the same new head) trained from scratch on
     the same images for as many steps as phases 2 and 3 together (1cycle), at each rate of a small grid; the
     rate with the best accuracy on validation images counts.
Phases 2, 3 and the baseline run for each n in `labelled_per_class` (10 and 100). Validation: `valid_per_class`
other training images of each target class (the same for every n). The fine-tuned model and the chosen baseline
are scored once on the real test images of classes 5-9 (5000). Each phase trains in its own sub-workdir
(pretrain/, n100/head/, n100/finetune/, n100/scratch_lr0.01/, ...), so rerunning the command resumes.

The recipe is research/vision/transfer.py's. Run:
  .venv/bin/python scripts/train.py --config experiments/fashion_transfer.py --workdir runs/fashion_transfer

Measured (an idle 2-core CPU, 193 s for the whole command; the baselines
chosen on validation): the pretrained body reaches 93.04% on classes 0-4; on classes 5-9 (5000 test images)
  10 labelled images per class:  fine-tuned 88.50%, from scratch 86.26% (lr 1e-2, best on validation): +2.24 points
  100 labelled images per class: fine-tuned 92.18%, from scratch 91.72% (lr 1e-2): +0.46 points
Transfer helps, but far less than ImageNet features help on pets: a body that learnt tops, trousers and dresses
knows little about sandals, sneakers, boots and bags, and those classes are easy to learn from few images.
A better-trained body helps some: `--config.pretrain.epochs=8` (94.72% on classes 0-4) fine-tunes to 93.24% from
100 images per class and 87.84% from 10.

How much room there is (an idle 2-core CPU, 250 s): pretrained instead on the target classes themselves, all 30k
labelled training images of classes 5-9, the body reaches 97.20% on their test images, the ceiling of this model
and schedule. That body, with the new head and fine-tuned the same way, reaches 96.94% from 100 images per class
and 94.98% from 10, +5.22 and +8.28 points over the baselines
as they were then chosen (on test). So +5 points at 100 images
per class needs a body that already knows the target classes; the 0-4 body's features do not get there.
  .venv/bin/python scripts/train.py --config experiments/fashion_transfer.py --workdir runs/transfer_oracle \
      --config.source_classes='(5,6,7,8,9)'
"""

import ml_collections

from research.core import configs, experiment
from research.vision import transfer

CAPABILITIES = experiment.Capabilities()


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("cpu",), "experiments/fashion_transfer.py")
    c = configs.base()
    c.source_classes = (0, 1, 2, 3, 4)
    c.target_classes = (5, 6, 7, 8, 9)
    # Labelled training images per target class: one fine-tuning and one baseline per entry, on nested subsets
    # (the 10 are among the 100), all from the same pretrained body.
    c.labelled_per_class = (10, 100)
    c.valid_per_class = 100  # other training images of each target class, to choose the baseline's rate on
    c.train_examples = 0  # > 0 reads the first N training images only (quick runs, tests)
    c.test_examples = 0  # > 0 reads the first N test images only
    c.model = ml_collections.ConfigDict(dict(  # the lesson-1 small ResNet
        stem_width=32, stem_stride=2, stage_sizes=(1, 1, 2), stage_widths=(32, 64, 128), stage_strides=(1, 2, 2)))
    c.head = ml_collections.ConfigDict(dict(hidden=(512,), dropout=0.5))
    c.label_smoothing = 0.1
    # Label smoothing is left out of pretraining: it makes the body's features less transferable (Kornblith et
    # al., 2021, "Why do better loss functions lead to less transferable features?").
    c.pretrain = ml_collections.ConfigDict(dict(epochs=3, batch_size=128, learning_rate=1e-2, label_smoothing=0.0,
                                                flip=True, crop_padding=2))
    # Phases on the few labelled images, in steps (the same for every labelled_per_class), with augmentation.
    c.small_batch_size = 25
    c.augment = ml_collections.ConfigDict(dict(flip=True, crop_padding=2))
    c.head_phase = ml_collections.ConfigDict(dict(steps=100, learning_rate=1e-2))
    c.finetune = ml_collections.ConfigDict(dict(learning_rate=1e-2, cycle_steps=20, cycle_mult=2, num_cycles=3,
                                                group_factor=3.0))  # lr/9, lr/3, lr
    c.scratch_learning_rates = (3e-3, 1e-2, 3e-2)
    c.one_cycle.final_div_factor = 1e5  # fastai's default, as in the head phase (research/core/finetune.py)
    return c


# The contract's entry points: the recipe's own.
setup, train_and_evaluate, predict = transfer.setup, transfer.train_and_evaluate, transfer.predict
