"""One prepared run for the day a GPU is lent: the GPU-only checks, every model's step against PyTorch CUDA, and
the lesson-1 long preset to its accuracy, within 8 minutes, written as one JSON the docs can quote.

  .venv/bin/python scripts/device_check.py --dry_run            # here, on the CPU: the plan, nothing run
  python3 scripts/device_check.py --out $OUT/device_check.json   # there (the device's own jax, torch, flax)

The device image has jax (CUDA), flax, optax, orbax and torch, but not every package this project pins: carry
the missing ones as wheels (ml-collections, tensorflow-datasets, grain, array-record, tokenizers, ...), and the
Fashion-MNIST files (`--fashion_mnist_dir`, the four .gz files; the machine has no network). Each stage runs in
its own process with its own time limit, so one that fails or overruns leaves the others' results; the JSON has
each stage's command, status, seconds and result.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print and record the plan without running it (works on a CPU).")
_OUT = flags.DEFINE_string("out", "device_check.json", "The JSON to write.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/device_check", "Scratch folder for the stages' runs.")
_FASHION_MNIST_DIR = flags.DEFINE_string("fashion_mnist_dir", "", "Folder with Fashion-MNIST's four .gz files.")
_STAGE = flags.DEFINE_enum("stage", "", ["", "gpu_matches_cpu"], "Internal: run one in-process stage.")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_S = 8 * 60


def stages(workdir: str) -> list[dict]:
    """name, argv (run from the repository root with this Python), time limit in seconds, the file holding its
    result. The limits add up to the 8-minute budget."""
    python = sys.executable
    return [
        {"name": "gpu_matches_cpu", "timeout_s": 60, "result": os.path.join(workdir, "gpu_matches_cpu.json"),
         "argv": [python, "scripts/device_check.py", "--stage=gpu_matches_cpu",
                  f"--out={os.path.join(workdir, 'gpu_matches_cpu.json')}"]},
        {"name": "bench", "timeout_s": 180, "result": os.path.join(workdir, "bench.md"),
         "argv": [python, "scripts/bench.py", "--timed_steps=20", f"--markdown={os.path.join(workdir, 'bench.md')}"]},
        {"name": "lesson1_long", "timeout_s": 240, "result": os.path.join(workdir, "lesson1_long", "results.json"),
         "argv": [python, "scripts/train.py", "--config=experiments/fashion_mnist.py:long",
                  "--config.mixed_precision=True", f"--workdir={os.path.join(workdir, 'lesson1_long')}"]},
    ]


def gpu_matches_cpu(out: str) -> None:
    """ResNet-18 at 64 px (stem max-pool, a 2x2 last stage) and the lesson-1 ResNet: outputs and gradients on
    the GPU (cuDNN's convolutions, flax's max-pool) against the CPU path (research/vision/conv.py, pooling.py),
    in float32 at the highest matmul precision; largest relative difference per model."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from research.vision import resnet
    jax.config.update("jax_default_matmul_precision", "highest")
    results = {"devices": [str(d) for d in jax.devices()]}
    for name, model, shape in [("resnet18_64", resnet.resnet18(num_classes=5), (8, 64, 64, 3)),
                               ("lesson1", resnet.small_resnet(10, stage_widths=(32, 64, 128)), (32, 28, 28, 1))]:
        x = jax.random.normal(jax.random.key(1), shape)
        variables = model.init(jax.random.key(0), x, train=False)

        def loss(params):
            outputs, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                     mutable=["batch_stats"])
            return jnp.sum(outputs ** 2)

        per_device = {}
        for platform in ("gpu", "cpu"):
            device = jax.devices(platform)[0]
            params = jax.device_put(variables["params"], device)
            per_device[platform] = jax.tree.leaves(jax.device_get(jax.jit(jax.grad(loss))(params)))
        worst = max(float(np.abs(g - c).max() / (np.abs(c).max() + 1e-12))
                    for g, c in zip(per_device["gpu"], per_device["cpu"]))
        results[name] = {"max_relative_gradient_difference": worst, "ok": worst < 1e-3}
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


def run_stage(stage: dict, env: dict) -> dict:
    record = {"name": stage["name"], "command": " ".join(stage["argv"]), "timeout_s": stage["timeout_s"]}
    start = time.time()
    try:
        run = subprocess.run(stage["argv"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             timeout=stage["timeout_s"])
        record["status"] = "ok" if run.returncode == 0 else f"exit {run.returncode}"
        record["output_tail"] = (run.stdout + run.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        record["status"] = "timed out"
    record["seconds"] = round(time.time() - start, 1)
    if os.path.exists(stage["result"]):
        with open(stage["result"]) as f:
            record["result"] = json.load(f) if stage["result"].endswith(".json") else f.read()
    return record


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _STAGE.value == "gpu_matches_cpu":
        return gpu_matches_cpu(_OUT.value)
    plan = stages(_WORKDIR.value)
    assert sum(s["timeout_s"] for s in plan) <= BUDGET_S
    env = dict(os.environ)
    if _FASHION_MNIST_DIR.value:
        env["FASHION_MNIST_DIR"] = _FASHION_MNIST_DIR.value
    report = {"dry_run": _DRY_RUN.value, "budget_s": BUDGET_S, "stages": []}
    os.makedirs(_WORKDIR.value, exist_ok=True)
    for stage in plan:
        missing = [a for a in stage["argv"][1:2] if not os.path.exists(os.path.join(REPO_ROOT, a))]
        if missing:
            raise app.UsageError(f"stage {stage['name']}: {missing[0]} does not exist")
        if _DRY_RUN.value:
            print(f"{stage['name']} (at most {stage['timeout_s']} s): {' '.join(stage['argv'])}")
            report["stages"].append({"name": stage["name"], "command": " ".join(stage["argv"]), "status": "planned",
                                     "timeout_s": stage["timeout_s"]})
        else:
            report["stages"].append(run_stage(stage, env))
            print(f"{stage['name']}: {report['stages'][-1]['status']} in {report['stages'][-1]['seconds']} s")
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    sys.path.insert(0, REPO_ROOT)
    app.run(main)
