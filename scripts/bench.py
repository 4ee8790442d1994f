"""Each task's model, one training step, ours against the same model and step in PyTorch, in one run:
compile time, median step time, examples/s, the process's peak memory, and the ratio of step times.

  .venv/bin/pip install torch==2.13.0   # the references (CPU build; a CUDA build on a GPU machine)
  .venv/bin/python scripts/bench.py [--models lesson1,resnet18_64,...] [--timed_steps 20] [--markdown out.md]

Every (model, side) runs in a fresh subprocess, so its peak resident memory is its own (it includes the
framework, ~0.3-0.5 GB, on a CPU; on a GPU the device's peak bytes in use). A step is forward, backward and an
Adam(W) update on a fixed random batch already on the device (data pipelines are not timed); the first call is
the compile time (JAX, with the persistent compilation cache off) or the warm-up (PyTorch). Steps run until
they block on the result. The PyTorch side is the same architecture written out in torch (BasicBlocks,
BatchNorm, the same widths and strides; an MLP with the same embeddings; nn.LSTM), eager, with `torch.set_num_threads`
= all cores. The U-Net has no PyTorch twin here: only ours is timed.
Results and the machine: docs/benchmarks.md.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

_MODELS = flags.DEFINE_list("models", None, "Models to time (default: all of MODELS).")
_STEPS = flags.DEFINE_integer("timed_steps", 20, "Timed steps (after 3 untimed).")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Also write the table to this file.")
_ONE = flags.DEFINE_string("one", "", "Internal: time one model on one side ('NAME:jax' or 'NAME:torch').")

# name -> (description, batch size)
MODELS = {
    "lesson1": ("lesson-1 small ResNet, 28x28x1", 128),
    "resnet18_64": ("ResNet-18, 64x64x3", 64),
    "resnet34_128": ("ResNet-34, 128x128x3", 32),
    "resnet18_224": ("ResNet-18, 224x224x3", 16),
    "unet": ("segmentation's U-Net (default preset), 64x64x1, 11 classes", 32),
    "tabular": ("entity-embedding MLP (txhousing sizes)", 64),
    "collab": ("dot product + biases (MovieLens-100k sizes)", 64),
    "char_rnn": ("2x256 LSTM, 100 symbols, BPTT 128", 32),
}


# --- ours ------------------------------------------------------------------------------------------------------

def jax_step(name: str, batch: int):
    """A zero-argument function running one of our jitted train steps (state donated) and blocking."""
    import jax
    from research.core import sharding, trainer
    from scripts.bench_models import jax_parts
    train_step, state, batch_data, rng = jax_parts(name, batch)
    mesh = sharding.make_mesh(1)
    state = jax.device_put(state, sharding.state_shardings(state, mesh))  # placed as the trainer places it
    step = trainer.jit_train_step(train_step, state, mesh)
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], batch_data, rng)
        jax.block_until_ready(metrics)

    return run


# --- PyTorch ---------------------------------------------------------------------------------------------------

def torch_step(name: str, batch: int):
    import torch
    import torch.nn as tnn
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "lesson1" or name.startswith("resnet"):
        from experiments import fashion_mnist
        from scripts.benchmark_lr_find import torch_small_resnet
        if name == "lesson1":
            model, shape = torch_small_resnet(fashion_mnist.get_config(), 10), (batch, 1, 28, 28)
        else:
            stages = (2, 2, 2, 2) if name.startswith("resnet18") else (3, 4, 6, 3)
            size = int(name.split("_")[1])
            model, shape = torch_imagenet_resnet(stages), (batch, 3, size, size)
        inputs = (torch.randn(shape, device=device),)
        target = torch.randint(0, 10, (batch,), device=device)
        loss_fn = tnn.CrossEntropyLoss(label_smoothing=0.1)
    elif name == "tabular":
        model = TorchTabular((47, 13, 3, 3), 4, (1000, 500), (0.0, 12.0))
        inputs = (torch.stack([torch.randint(0, n, (batch,)) for n in (47, 13, 3, 3)], 1).to(device),
                  torch.randn(batch, 4, device=device))
        target = torch.rand(batch, device=device) * 10
        loss_fn = lambda out, y: ((out[:, 0] - y) ** 2).mean()
    elif name == "collab":
        model = TorchDot(944, 1683, 50)
        inputs = (torch.randint(0, 944, (batch,), device=device), torch.randint(0, 1683, (batch,), device=device))
        target = 1 + 4 * torch.rand(batch, device=device)
        loss_fn = lambda out, y: ((out - y) ** 2).mean()
    elif name == "char_rnn":
        from scripts.benchmark_lstm import torch_step as lstm_step
        return lstm_step(batch, 128, 256, 2, 100, 64)
    else:
        return None
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def run():
        loss = loss_fn(model(*inputs), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the step, as block_until_ready does

    return run


def torch_imagenet_resnet(stage_sizes):
    """torchvision's ResNet-18/34 (7x7 stem and max-pool, BasicBlocks, 10 classes)."""
    import torch.nn as tnn
    from scripts.benchmark_lr_find import torch_resnet
    stem = [tnn.Conv2d(3, 64, 7, 2, 3, bias=False), tnn.BatchNorm2d(64), tnn.ReLU(), tnn.MaxPool2d(3, 2, 1)]
    return torch_resnet(stem, 64, stage_sizes, (64, 128, 256, 512), (1, 2, 2, 2), 10)


def TorchTabular(cardinalities, num_cont, hidden, y_range):
    import torch
    import torch.nn as tnn
    from research.core.embeddings import embedding_size

    class Tabular(tnn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = tnn.ModuleList([tnn.Embedding(n, embedding_size(n)) for n in cardinalities])
            self.embedding_dropout = tnn.Dropout(0.04)
            self.cont_norm = tnn.BatchNorm1d(num_cont)
            width = sum(embedding_size(n) for n in cardinalities) + num_cont
            layers = []
            for out, rate in zip(hidden, (0.001, 0.01)):
                layers += [tnn.Linear(width, out), tnn.ReLU(), tnn.BatchNorm1d(out), tnn.Dropout(rate)]
                width = out
            self.mlp = tnn.Sequential(*layers, tnn.Linear(width, 1))

        def forward(self, cat, cont):
            x = torch.cat([e(cat[:, i]) for i, e in enumerate(self.embeddings)], 1)
            x = torch.cat([self.embedding_dropout(x), self.cont_norm(cont)], 1)
            low, high = y_range
            return low + (high - low) * torch.sigmoid(self.mlp(x))

    return Tabular()


def TorchDot(num_users, num_items, factors):
    import torch
    import torch.nn as tnn

    class Dot(tnn.Module):
        def __init__(self):
            super().__init__()
            self.user, self.item = tnn.Embedding(num_users, factors), tnn.Embedding(num_items, factors)
            self.user_bias, self.item_bias = tnn.Embedding(num_users, 1), tnn.Embedding(num_items, 1)

        def forward(self, user, item):
            score = ((self.user(user) * self.item(item)).sum(1) + self.user_bias(user)[:, 0]
                     + self.item_bias(item)[:, 0])
            return 5.5 * torch.sigmoid(score)

    return Dot()


# --- running ---------------------------------------------------------------------------------------------------

def _peak_memory_mb(side: str) -> float:
    if side == "jax":
        import jax
        stats = jax.devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2 ** 20
    else:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2 ** 20
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def time_one(name: str, side: str, steps: int) -> dict:
    batch = MODELS[name][1]
    if side == "torch":
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    run = jax_step(name, batch) if side == "jax" else torch_step(name, batch)
    if run is None:
        return {}
    run()
    first = time.perf_counter() - started
    for _ in range(2):
        run()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    step = statistics.median(times)
    return {"first_s": first, "step_ms": 1000 * step, "examples_per_s": batch / step,
            "peak_mb": _peak_memory_mb(side)}


def main(argv):
    del argv
    if _ONE.value:
        name, side = _ONE.value.split(":")
        print("RESULT " + json.dumps(time_one(name, side, _STEPS.value)))
        return
    import jax
    import torch
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
    rows = [f"jax {jax.__version__} ({jax.default_backend()}: {jax.devices()[0].device_kind}), torch "
            f"{torch.__version__}, {os.cpu_count()} CPUs, {_STEPS.value} timed steps", "",
            "| model | batch | ours: compile s | ours: step ms | ours: examples/s | ours: peak MB "
            "| PyTorch: step ms | PyTorch: peak MB | PyTorch step / ours |", "|---|---|---|---|---|---|---|---|---|"]
    for name in _MODELS.value or list(MODELS):
        results = {}
        for side in ("jax", "torch"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--one={name}:{side}",
                                  f"--timed_steps={_STEPS.value}"], capture_output=True, text=True, env=env,
                                 timeout=3600)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                sys.exit(f"error: {name} ({side}) failed: {out.stderr.strip().splitlines()[-1:]}")
            results[side] = json.loads(line[0][len("RESULT "):])
        ours, ref = results["jax"], results["torch"]
        description, batch = MODELS[name]
        row = (f"| {description} | {batch} | {ours['first_s']:.1f} | {ours['step_ms']:.1f} | "
               f"{ours['examples_per_s']:.0f} | {ours['peak_mb']:.0f} | ")
        row += (f"{ref['step_ms']:.1f} | {ref['peak_mb']:.0f} | **{ref['step_ms'] / ours['step_ms']:.2f}** |" if ref
                else "- | - | - |")
        rows.append(row)
        print(row, flush=True)
    if _MARKDOWN.value:
        with open(_MARKDOWN.value, "w") as f:
            f.write("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
