"""Every experiment's train step, as `setup(config, mesh)` gives it on a mesh of 8 (CPU) devices, is exported with
`jax.export` for `cuda`, `tpu` and `cpu` at small sizes, and its eval step for `cuda`, and checked:
- lowering succeeds for each platform (no op without a GPU/TPU lowering, no host callback);
- the `cuda`/`tpu` modules hold lax's plain convolutions and flax's max-pool, not the CPU forms
  (research/vision/conv.py, pooling.py): as many stablehlo.convolution ops as the plain program has;
- no float64 anywhere; the state (parameters, optimizer state, BatchNorm statistics) stays float32 under
  mixed precision while the convolutions run in bfloat16;
- the shardings are the intended ones: the batch split over the data axis, the state replicated (data
  parallel) or its large arrays split over the fsdp axis (FSDP).
Run as a script, this file is the worker (`python tests/test_export.py TFDS_DIR OUT_JSON`), in a process with 8
CPU devices."""

import contextlib
import json
import os
import re
import subprocess
import sys
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 1500

# (experiment, preset, small overrides, fsdp devices, mock TFDS data). A 64-example batch splits over 8 devices.
# One case per distinct model and step: fashion_mnist:cpu has :long's ResNet and step (:long trains longer, with
# flips and crops; here it also runs with mixed precision and FSDP); fashion_mnist_sgdr, fashion_mnist_wide_head
# and fashion_transfer train fashion_mnist's ResNet with the same classification step (another schedule, a dense
# head, frozen groups); movielens:dot is movielens:net's embeddings without the MLP; fortunes_lm:cpu is
# fortunes_lm:long's AWD-LSTM smaller (and long adds FSDP); segmentation over an ImageNet ResNet-34 is pets'
# ResNet-34 under the U-Net.
# fortunes_classifier is not here: its setup reads a trained language model's workdir; its encoder is
# fortunes_lm's AWD-LSTM, exported below, and tests/test_experiments.py trains and runs it end to end.
IMAGES = {"data.train_examples": 600, "data.test_examples": 100, "batch_size": 64, "eval_batch_size": 64}
CASES = [
    ("fashion_mnist", "long", {**IMAGES, "mixed_precision": True}, 2, False),
    ("fashion_mosaics_multilabel", "small", {"batch_size": 64}, 1, False),
    ("pets", "default", {"weights": "", "data.image_size": 64, "batch_size": 16, "eval_batch_size": 16}, 1, True),
    ("segmentation", "default", {"data.canvases": "small", "batch_size": 16, "eval_batch_size": 16}, 1, False),
    ("sales_tabular", "txhousing", {"batch_size": 64}, 1, False),
    ("movielens", "net", {"batch_size": 64}, 1, False),
    ("fortunes_lm", "long", {"batch_size": 16, "bptt": 16}, 2, False),
    ("char_rnn", "cpu", {"batch_size": 16, "bptt": 16}, 1, False),
]
PLATFORMS = ("cpu", "cuda", "tpu")


def case_key(name: str, preset: str, overrides: dict) -> str:
    return f"{name}:{preset}" + (f"({overrides['model.arch']})" if "model.arch" in overrides else "")


def _configure(module, preset, overrides, fsdp, tfds_dir):
    config = module.get_config(preset)
    with config.unlocked():
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            node = config
            for parent in parents:
                node = node[parent]
            node[leaf] = value
        if "data_dir" in config:
            config.data_dir = tfds_dir
        config.fsdp_devices = fsdp
    return config


def export_case(name, preset, overrides, fsdp, tfds_dir) -> dict:
    """Lowers one experiment's jitted train step (as the trainer jits it) and eval step for every platform."""
    import importlib

    import jax
    import numpy as np
    from jax import export

    from research.core import sharding, trainer
    module = importlib.import_module(f"experiments.{name}")
    config = _configure(module, preset, overrides, fsdp, tfds_dir)
    mesh = sharding.make_mesh(None, fsdp)
    run = module.setup(config, mesh)
    tx = run.make_tx(1e-3, 100)
    state = jax.eval_shape(lambda key: run.create_state(tx, key), jax.random.key(0))  # shapes only: no init compile
    state = jax.tree.map(lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where),
                         state, sharding.state_shardings(state, mesh))
    batch = run.batches.batch(0)
    train = trainer.jit_train_step(run.train_step, state, mesh)
    evaluate = jax.jit(run.eval_step)
    result = {"kernels": sum(np.ndim(leaf) == 4 for leaf in jax.tree.leaves(state.params)),
              "state_dtypes": sorted({str(leaf.dtype) for leaf in jax.tree.leaves(state)
                                      if jax.dtypes.issubdtype(leaf.dtype, np.floating)})}
    for platform in PLATFORMS + ("plain",):
        with plain_kernels(platform == "plain"):  # "plain": the cpu lowering with the CPU forms replaced
            exported = export.export(train, platforms=["cpu" if platform == "plain" else platform])(
                state, batch, jax.random.key(1))
            eval_text = "" if platform in ("cpu", "tpu") else export.export(  # cuda's eval step against "plain"
                evaluate, platforms=["cpu" if platform == "plain" else platform])(state, batch).mlir_module()
        text = exported.mlir_module()
        new_state = exported.out_avals[:len(jax.tree.leaves(state))]
        result[platform] = {
            "convolutions": text.count("stablehlo.convolution"),
            "select_and_scatter": "stablehlo.select_and_scatter" in text,
            "bf16_convolutions": len(re.findall(r"stablehlo\.convolution.*bf16", text)),
            "f64": "f64" in text, "callback": "callback" in text.lower(),
            "new_state_dtypes": sorted({str(a.dtype) for a in new_state
                                        if jax.dtypes.issubdtype(a.dtype, np.floating)}),
            "eval_convolutions": eval_text.count("stablehlo.convolution"),
        }
    axes = argument_axes(text)
    result["state_axes"] = sorted({",".join(a) for name, a in axes
                                   if name.startswith("state") and not name.startswith("state.carry")})
    result["carry_axes"] = sorted({",".join(a) for name, a in axes if name.startswith("state.carry")})
    result["batch_axes"] = sorted({",".join(a) for name, a in axes if name.startswith("batch")})
    return result


@contextlib.contextmanager
def plain_kernels(on: bool):
    """With `on`, the CPU branch of conv.py and pooling.py replaced by the GPU/TPU one (lax's convolution,
    flax's max-pool): the reference program that the cuda and tpu exports must match."""
    import jax
    from jax import lax

    from research.vision import conv, pooling
    if not on:
        yield
        return
    saved = conv.cpu_conv, pooling.slice_max_pool
    conv.cpu_conv = lambda lhs, rhs, **conv_args: lax.conv_general_dilated(lhs, rhs, **conv_args)
    pooling.slice_max_pool = pooling.plain_max_pool
    jax.clear_caches()  # jit's cached traces hold the CPU branch
    try:
        yield
    finally:
        conv.cpu_conv, pooling.slice_max_pool = saved
        jax.clear_caches()


def argument_axes(module_text: str) -> list[tuple[str, list[str]]]:
    """(name, mesh axes its sharding splits it over) for each argument of the exported main function that the
    program uses (jit drops unused ones), from Shardy's `sdy.sharding` attributes and the arguments' locations
    (`state.params[...]`, `batch['image']`, `rng`)."""
    signature = next(line for line in module_text.splitlines() if "func.func public @main" in line)
    arguments = re.findall(r"%arg\d+: tensor<[^>]*> \{sdy\.sharding = #sdy\.sharding<@mesh, (\[.*?\])>.*?\} "
                           r"loc\(\"(.*?)\"\)", signature)
    return [(name, sorted(set(re.findall(r'"(\w+)"', spec)))) for spec, name in arguments]


def worker(tfds_dir: str, out_path: str) -> None:
    import tensorflow_datasets as tfds
    results = {}
    for name, preset, overrides, fsdp, mock in CASES:
        key, start = case_key(name, preset, overrides), time.time()
        try:
            if mock:
                with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
                    results[key] = export_case(name, preset, overrides, fsdp, tfds_dir)
            else:
                results[key] = export_case(name, preset, overrides, fsdp, tfds_dir)
        except Exception as e:  # reported per case, so one failure names itself and the others still run
            results[key] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        print(key, "error" if "error" in results[key] else "ok", f"{time.time() - start:.1f} s", flush=True)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


@pytest.fixture(scope="module")
def exported(tfds_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "export.json")
    xla_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = {**os.environ, "XLA_FLAGS": xla_flags, "PYTHONPATH": REPO_ROOT}
    run = subprocess.run([sys.executable, os.path.abspath(__file__), tfds_dir, out], capture_output=True, text=True,
                         env=env, timeout=TIMEOUT, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


@pytest.mark.parametrize("case", [case_key(*c[:3]) for c in CASES])
def test_steps_lower_for_every_platform_with_the_plain_kernels(exported, case):
    r = exported[case]
    assert "error" not in r, r.get("error")
    for platform in PLATFORMS:
        assert not r[platform]["f64"] and not r[platform]["callback"], platform
    for platform, keys in (("cuda", ("convolutions", "eval_convolutions", "select_and_scatter")),
                           ("tpu", ("convolutions", "select_and_scatter"))):  # the plain program's kernels
        for key in keys:
            assert r[platform][key] == r["plain"][key], (platform, key, r[platform][key], r["plain"][key])
    if r["kernels"] and r["plain"]["convolutions"] > r["kernels"]:  # a trained image model: the CPU forms are used
        assert r["cpu"]["convolutions"] < r["plain"]["convolutions"]


def test_mixed_precision_keeps_the_state_float32_and_convolves_in_bfloat16(exported):
    r = exported["fashion_mnist:long"]  # mixed precision
    assert r["state_dtypes"] == ["float32"]
    for platform in PLATFORMS:
        assert r[platform]["new_state_dtypes"] == ["float32"], platform
    assert r["cuda"]["bf16_convolutions"] > 0  # and without mixed precision none:
    assert exported["fashion_mosaics_multilabel:small"]["cuda"]["bf16_convolutions"] == 0


@pytest.mark.parametrize("case", [case_key(*c[:3]) for c in CASES])
def test_shardings_are_data_parallel_or_fsdp_as_configured(exported, case):
    r = exported[case]
    assert "error" not in r, r.get("error")
    fsdp = next(c[3] for c in CASES if case_key(*c[:3]) == case)
    assert r["batch_axes"] == ["data,fsdp"], r["batch_axes"]  # every batch array split over all devices
    if fsdp > 1:
        assert r["state_axes"] == ["", "fsdp"], r["state_axes"]  # large arrays split over fsdp, small replicated
    else:
        assert r["state_axes"] == [""], r["state_axes"]  # data parallel: the whole state on every device
    assert r["carry_axes"] in ([], ["data,fsdp"]), r["carry_axes"]  # a recurrent carry is split like the batch


if __name__ == "__main__":
    sys.path.insert(0, REPO_ROOT)
    worker(sys.argv[1], sys.argv[2])
