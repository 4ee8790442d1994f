"""ImageNet weights published for PyTorch, loaded into our Flax ResNets without PyTorch.

- `read_torch_checkpoint`: a `torch.save` file (the zip format of torch >= 1.6: `data.pkl` plus one raw file
  per storage) read with research/core/torch_files.py's restricted unpickler that rebuilds only tensors and
  (Ordered)dicts, so a checkpoint cannot run code on load. Torch's older format is refused with a clear error.
- `read_safetensors` / `write_safetensors`: the safetensors format (timm's and Hugging Face's): an 8-byte
  header length, a JSON header, raw little-endian bytes.
- `torchvision_resnet_variables`: torchvision's names and layouts onto ours: conv OIHW -> HWIO, linear
  (out, in) -> (in, out), BatchNorm weight/bias -> scale/bias and running_mean/var -> `batch_stats`.
- `load_into`: puts loaded variables into a model's own, checking every name and shape; the head (or any
  group) can be skipped so that a new head keeps its initialisation.
- `download`: the published torchvision and timm checkpoints, cached on disk and checked against their
  SHA-256 (torchvision's file names carry its first hex digits) after the download and before each use of the
  cached file. Needs a network: for users on the cloud.
"""

import dataclasses
import json
import os
import re
import struct
import zipfile
from typing import Mapping, Sequence

import jax
import ml_dtypes
import numpy as np

from research.core import torch_files
from research.core.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the RGB statistics (on [0, 1] pixels) all these checkpoints expect
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    url: str
    sha256: str  # the full digest, or the prefix that torchvision puts in its file names (torch.hub's check)
    filename: str


# torchvision's IMAGENET1K_V1 weights (the models fastai's 2018 course fine-tunes), and timm's safetensors
# copies of the same weights, pinned to a revision. timm's digests come from a public package definition;
# they could not be checked from this machine (no network).
_HF = "https://huggingface.co/timm"
CHECKPOINTS = {
    "resnet18": Checkpoint("https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd",
                           "resnet18-f37072fd.pth"),
    "resnet34": Checkpoint("https://download.pytorch.org/models/resnet34-b627a593.pth", "b627a593",
                           "resnet34-b627a593.pth"),
    "resnet50": Checkpoint("https://download.pytorch.org/models/resnet50-0676ba61.pth", "0676ba61",
                           "resnet50-0676ba61.pth"),
    "resnet18.tv_in1k": Checkpoint(
        f"{_HF}/resnet18.tv_in1k/resolve/bbd144b3e5565108aad885f145491d11bc6ce807/model.safetensors",
        "694f673df6520a3158624e8a89af086f59923ee4cd7436fe5bc3bc71d295ad81", "resnet18.tv_in1k.safetensors"),
    "resnet34.tv_in1k": Checkpoint(
        f"{_HF}/resnet34.tv_in1k/resolve/1b7b21cca82ff974d341713f777bf740c2db38c4/model.safetensors",
        "0bb82595a564991a9d424708b33f5d843f5aaed7f6c0886ff10849ff97022235", "resnet34.tv_in1k.safetensors"),
    "resnet50.tv_in1k": Checkpoint(
        f"{_HF}/resnet50.tv_in1k/resolve/78f3ecfdb38e06d9b8397f662e7ab8fee96026fa/model.safetensors",
        "5d061a3c593d795bfe682d9b152bafbcf550579873492def3515b46db1189888", "resnet50.tv_in1k.safetensors"),
}


def cache_dir() -> str:
    """$FASTJAX_CACHE/weights, else ~/.cache/fastjax/weights."""
    return os.path.join(torch_files.cache_root(), "weights")


def download(name: str, directory: str | None = None) -> str:
    """The path of checkpoint `name` (a key of CHECKPOINTS) in the cache, downloading it first if it is not
    there. The file appears under its final name only once its digest has been checked, and a cached file is
    checked again before it is used (research/core/torch_files.fetch)."""
    if name not in CHECKPOINTS:
        raise InputError(f"unknown pretrained checkpoint {name!r}: use one of {sorted(CHECKPOINTS)}")
    checkpoint = CHECKPOINTS[name]
    return torch_files.fetch(checkpoint.url, checkpoint.sha256,
                             os.path.join(directory or cache_dir(), checkpoint.filename))


# ----------------------------------------------------------------------------------------------- reading

def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    """The tensors of a `torch.save` file (zip format) as {name: numpy array}, without importing torch: the
    restricted unpickler of research/core/torch_files.py, which rebuilds only tensors and dicts."""
    return torch_files.read_torch_checkpoint(path)


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file as {name: numpy array}."""
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: not a safetensors file (bad JSON header: {e})") from e
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise InputError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
        tensors[name] = np.frombuffer(data[begin:end], dtype).astype(dtype.newbyteorder("=")).reshape(
            info["shape"])
    return tensors


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray]) -> None:
    """Writes {name: array} as a .safetensors file (e.g. to convert a torch checkpoint once)."""
    codes = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.asarray(array)
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()  # C order, any strides
        header[name] = {"dtype": codes[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for raw in chunks:
            f.write(raw)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torch checkpoint (.pth/.pt, zip) or a .safetensors file, by its first bytes."""
    if not os.path.exists(path):
        raise InputError(f"pretrained weights file {path} does not exist")
    return read_torch_checkpoint(path) if zipfile.is_zipfile(path) else read_safetensors(path)


# ----------------------------------------------------------------------------------------------- mapping

def _flax_module_path(torch_module: str) -> tuple[str, ...]:
    """'layer1.0.downsample.1' -> ('layer1_0', 'downsample_bn'); 'bn1' -> ('bn1',)."""
    module = re.sub(r"^layer(\d+)\.(\d+)(\.|$)", r"layer\1_\2/", torch_module)
    module = module.replace("downsample.0", "downsample_conv").replace("downsample.1", "downsample_bn")
    return tuple(part for part in module.split("/") if part)


def torchvision_resnet_variables(state_dict: Mapping[str, np.ndarray]) -> dict:
    """{"params": ..., "batch_stats": ...} nested like our ResNet's variables, from a torchvision (or timm)
    ResNet state dict: conv kernels OIHW -> HWIO, linear weights transposed, BatchNorm statistics apart."""
    variables = {"params": {}, "batch_stats": {}}

    def put(collection, module, leaf, value):
        node = variables[collection]
        for part in module:
            node = node.setdefault(part, {})
        node[leaf] = np.asarray(value, np.float32)

    for name, value in state_dict.items():
        module_name, _, leaf = name.rpartition(".")
        module = _flax_module_path(module_name)
        if leaf == "num_batches_tracked":
            continue
        elif leaf == "weight" and value.ndim == 4:
            put("params", module, "kernel", np.transpose(value, (2, 3, 1, 0)))
        elif leaf == "weight" and value.ndim == 2:
            put("params", module, "kernel", value.T)
        elif leaf == "weight" and value.ndim == 1:
            put("params", module, "scale", value)
        elif leaf == "bias":
            put("params", module, "bias", value)
        elif leaf == "running_mean":
            put("batch_stats", module, "mean", value)
        elif leaf == "running_var":
            put("batch_stats", module, "var", value)
        else:
            raise InputError(f"unexpected tensor {name} with shape {tuple(value.shape)}: not a torchvision ResNet")
    return variables


def _flat(tree) -> dict[str, object]:
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def load_into(variables: Mapping, loaded: Mapping, skip: Sequence[str] = (), source: str = "weights") -> dict:
    """`variables` (a model's own, e.g. from `model.init`) with every leaf replaced by the one of the same name
    in `loaded`, except names matching a regex in `skip` (e.g. a new head: `skip=("^params/(fc|head)/",
    "^batch_stats/(fc|head)/")`), which keep their values and are ignored in `loaded`.

    Every other name must be present on both sides with the same shape, else an InputError names it."""
    patterns = [re.compile(pattern) for pattern in skip]
    skipped = lambda name: any(p.search(name) for p in patterns)
    ours = {k: v for k, v in _flat(variables).items() if not skipped(k)}
    theirs = {k: v for k, v in _flat(loaded).items() if not skipped(k)}
    missing, unexpected = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
    if missing or unexpected:
        raise InputError(f"{source} do not fit the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
                         f", unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
    for name, value in ours.items():
        if tuple(value.shape) != tuple(np.shape(theirs[name])):
            raise InputError(f"{source}: {name} has shape {tuple(np.shape(theirs[name]))}, the model wants "
                             f"{tuple(value.shape)}")

    def pick(path, leaf):
        name = "/".join(str(k.key) for k in path)
        return leaf if skipped(name) else np.asarray(theirs[name], dtype=leaf.dtype)

    return jax.tree_util.tree_map_with_path(pick, dict(variables))


# The classifier's variables in `load_into`'s names ("params/fc/kernel", "batch_stats/head/bn/mean"): torchvision's
# `fc` or a new fastai `head`, which keep their own initialisation when a body is loaded.
HEAD_VARIABLES = ("^[a-z_]+/(fc|head)/",)


def load_torchvision_resnet(path: str, variables: Mapping, skip_head: bool = True) -> dict:
    """A torchvision/timm ResNet checkpoint (.pth or .safetensors) loaded into a model's `variables`.

    With skip_head, the classifier (`fc`, or a new `head`) keeps its own initialisation."""
    skip = HEAD_VARIABLES if skip_head else ()
    return load_into(variables, torchvision_resnet_variables(read_state_dict(path)), skip, source=path)
