"""Times the whole LR range test, ours against a PyTorch loop that does what fastai's `lr_find` does, on the same
model, data, batch size, optimizer, sweep and machine, in one run; prints both times and their ratio.

  .venv/bin/pip install torch==2.13.0   # the reference only (CPU build)
  .venv/bin/python scripts/benchmark_lr_find.py --config experiments/fashion_mnist.py

The reference follows fastai's LRFinder: exponential rates from start_lr to end_lr, one Adam step per rate
(decoupled weight decay, label smoothing as configured), the loss smoothed with a bias-corrected EMA (0.98),
stopping when it exceeds 4x its minimum; then it restores the model and optimizer state it started from, as
fastai does. fastai itself needs torchvision, which does not install beside this CPU build of torch, so the
loop is written out here. The model is the same small ResNet (BasicBlocks, BatchNorm, same widths and strides).
Both sides include their setup (model construction, compilation for JAX) in the time.
"""

import copy
import os
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file, experiments/NAME.py[:preset].",
                                          lock_config=True)
_THREADS = flags.DEFINE_integer("torch_threads", os.cpu_count() or 1, "PyTorch intra-op threads.")
flags.mark_flags_as_required(["config"])


def torch_small_resnet(config, num_classes: int):
    """The lesson-1 model (config.model) in PyTorch: a 3x3 stem without max-pool, then BasicBlock stages."""
    import torch.nn as tnn
    m = config.model
    stem = [*_conv_bn(1, m.stem_width, m.stem_stride), tnn.ReLU()]
    return torch_resnet(stem, m.stem_width, m.stage_sizes, m.stage_widths, m.stage_strides, num_classes)


def _conv_bn(cin, cout, stride, kernel=3):
    import torch.nn as tnn
    return [tnn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), tnn.BatchNorm2d(cout)]


def torch_resnet(stem: list, stem_width: int, stage_sizes, stage_widths, stage_strides, num_classes: int):
    """torchvision's ResNet layout written out (torchvision does not install beside the CPU build of torch): the
    `stem` layers, BasicBlock stages, a pooled linear classifier; convolutions He-initialised (fan out)."""
    import torch.nn as tnn

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = tnn.Sequential(*_conv_bn(cin, cout, stride), tnn.ReLU(), *_conv_bn(cout, cout, 1))
            self.shortcut = (tnn.Sequential(*_conv_bn(cin, cout, stride, 1)) if stride != 1 or cin != cout
                             else tnn.Identity())

        def forward(self, x):
            return (self.body(x) + self.shortcut(x)).relu()

    layers, width = list(stem), stem_width
    for blocks, out, stride in zip(stage_sizes, stage_widths, stage_strides):
        for b in range(blocks):
            layers.append(Block(width, out, stride if b == 0 else 1))
            width = out
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(width, num_classes)]
    model = tnn.Sequential(*layers)
    for module in model.modules():
        if isinstance(module, tnn.Conv2d):
            tnn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def torch_lr_find(config, images, labels, mean, std) -> tuple[int, float]:
    """fastai-style range test in PyTorch; returns (steps run, rate at the smoothed minimum)."""
    import torch

    torch.manual_seed(config.seed)
    lf, o = config.lr_find, config.optimizer
    model = torch_small_resnet(config, 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lf.start_lr, betas=(0.9, o.b2), eps=1e-8,
                                  weight_decay=o.weight_decay)
    saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(labels.astype(np.int64))
    rates = lf.start_lr * (lf.end_lr / lf.start_lr) ** (np.arange(lf.num_steps) / (lf.num_steps - 1))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    order = torch.randperm(len(y_all))
    average, best, step = 0.0, float("inf"), 0
    model.train()
    for step, rate in enumerate(rates):
        index = order[step * config.batch_size:(step + 1) * config.batch_size]
        x = (x_all[index].float() / 255 - mean) / std
        for group in optimizer.param_groups:
            group["lr"] = rate
        loss = loss_fn(model(x), y_all[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        average = 0.98 * average + 0.02 * loss.item()
        smoothed = average / (1 - 0.98 ** (step + 1))
        best = min(best, smoothed)
        if not np.isfinite(loss.item()) or smoothed > 4 * best:
            break
    model.load_state_dict(saved[0])
    optimizer.load_state_dict(saved[1])
    return step + 1, best


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import tempfile

    import torch

    from research.core import experiment as recipes, sharding
    from research.vision import image_sources
    from scripts.experiment_file import load_experiment

    torch.set_num_threads(_THREADS.value)
    config = _CONFIG.value
    experiment = load_experiment(flags.FLAGS["config"].config_filename)
    data = image_sources.load_image_data(config.data, config.data_dir)

    started = time.perf_counter()
    torch_steps, _ = torch_lr_find(config, data.train.images, data.train.labels, data.mean, data.std)
    torch_seconds = time.perf_counter() - started

    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    run = experiment.setup(config, mesh)  # its own copy of the data, loaded outside the timing as torch's was
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        result = recipes.lr_find(config, workdir, run)
        ours_seconds = time.perf_counter() - started

    print(f"PyTorch {torch.__version__} loop: {torch_steps} steps in {torch_seconds:.1f} s "
          f"({1000 * torch_seconds / torch_steps:.0f} ms/step)")
    print(f"ours (JAX, incl. compile, plot and json): {result.num_steps} steps in {ours_seconds:.1f} s "
          f"({1000 * ours_seconds / result.num_steps:.0f} ms/step)")
    print(f"time ratio ours / PyTorch: {ours_seconds / torch_seconds:.2f}; per step: "
          f"{(ours_seconds / result.num_steps) / (torch_seconds / torch_steps):.2f}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from scripts.experiment_file import parse_flags
    app.run(main, flags_parser=parse_flags)
