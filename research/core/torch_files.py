"""Files published for PyTorch, read without PyTorch and without running code from them, and downloaded once
into a cache with their digests checked. Shared by research/vision/pretrained.py (ImageNet ResNets) and
research/text/wt103.py (fastai's WikiText-103 AWD-LSTM).

- `read_torch_checkpoint`: a `torch.save` file read with a restricted unpickler that rebuilds only tensors (as
  numpy arrays), dicts, lists and plain values, so a checkpoint cannot run code on load. The zip format of
  torch >= 1.6 always; torch's older "legacy" stream (magic number, a pickle, then the raw storages) only with
  `allow_legacy=True` (fastai's 2019 weights are in it).
- `read_plain_pickle`: a pickle of plain values only (lists, dicts, strings, numbers), e.g. a vocabulary list.
- `fetch`: a URL downloaded into a cache path, kept only when its SHA-256 matches, checked again before each use.
"""

import dataclasses
import hashlib
import os
import pickle
import shutil
import struct
import tempfile
import urllib.request
import zipfile
from collections import OrderedDict

import ml_dtypes
import numpy as np

from research.core.errors import InputError


def cache_root() -> str:
    """$FASTJAX_CACHE, else ~/.cache/fastjax: where downloaded weights and built artifacts live."""
    return os.environ.get("FASTJAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fastjax")


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, expected_sha256: str, path: str) -> str:
    """`path`, downloading `url` there first if it is missing. The file appears under its final name only once
    its SHA-256 starts with `expected_sha256` (a full digest or a prefix), and a cached file is checked again
    before it is returned, so a damaged or replaced file is never used."""
    if os.path.exists(path):
        found = sha256(path)
        if not found.startswith(expected_sha256):
            raise InputError(f"{path}: SHA-256 {found} does not start with {expected_sha256} (damaged, "
                             f"or not {url}); delete it to download it again")
        return path
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    tmp.write(chunk)
        except OSError as e:
            os.unlink(tmp.name)
            raise InputError(f"could not download {url}: {e}; put the file at {path} by hand") from e
    if not digest.hexdigest().startswith(expected_sha256):
        os.unlink(tmp.name)
        raise InputError(f"{url}: SHA-256 {digest.hexdigest()} does not start with {expected_sha256}")
    shutil.move(tmp.name, path)
    return path


# ----------------------------------------------------------------------------------------------- torch files

# torch's typed storages (pickled as `torch.FloatStorage`, ...) and dtypes (`torch.float32`, in
# `_rebuild_tensor_v3`) as numpy dtypes; torch writes little-endian unless told otherwise.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "bool": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch's legacy format


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *args, dtype=None) -> np.ndarray:
    if dtype is not None:  # _rebuild_tensor_v3: an untyped (byte) storage and the tensor's dtype
        storage = storage.view(dtype)
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)  # a contiguous copy that owns its memory


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    return _rebuild_tensor(storage, offset, size, stride, dtype=dtype)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    return data


class _LazyStorage:
    """A legacy-format storage before its bytes are read (they follow the pickle)."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.data = dtype, numel, None


@dataclasses.dataclass(frozen=True)
class _LazyTensor:
    """A legacy-format tensor, rebuilt once its storage's bytes have been read."""
    storage: _LazyStorage
    offset: int
    size: tuple
    stride: tuple

    def array(self) -> np.ndarray:
        return _rebuild_tensor(self.storage.data, self.offset, self.size, self.stride)


def _lazy_tensor(storage, offset, size, stride, *args):
    return _LazyTensor(storage, int(offset), tuple(size), tuple(stride))


class _Inert:
    """What an unknown global becomes with `inert_globals`: built from any arguments and state, and holding
    none of them (no code of the checkpoint's runs; its tensors elsewhere are still rebuilt)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _TensorUnpickler(pickle.Unpickler):
    """Rebuilds tensors (as numpy arrays), dicts and plain values; refuses every other global, so loading runs no
    code. `storage(storage type, key, numel, view)` returns the storage a persistent id names; `rebuild` makes a
    tensor of a storage (an array, or a placeholder until the storage is read)."""

    _ALLOWED = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    }

    def __init__(self, file, path: str, storage, rebuild=_rebuild_tensor, inert_globals: bool = False):
        super().__init__(file)
        self._path, self._storage, self._rebuild = path, storage, rebuild
        self._inert_globals = inert_globals

    def find_class(self, module: str, name: str):
        if (module, name) in (("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2")):
            return self._rebuild
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
        if module == "torch" and name in _TORCH_DTYPES:
            return np.dtype(_TORCH_DTYPES[name])
        if self._inert_globals:
            return _Inert
        raise InputError(f"{self._path}: refusing to load {module}.{name}: only tensors and dicts are allowed")

    def persistent_load(self, pid):
        # zip: ('storage', type, key, location, numel); legacy: the same and view metadata (or None)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise InputError(f"{self._path}: unexpected persistent id {pid!r}")
        return self._storage(pid[1], str(pid[2]), int(pid[4]), pid[5] if len(pid) == 6 else None)


def _zip_tensors(path: str, inert_globals: bool = False):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise InputError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][:-len("data.pkl")]
        byteorder = "little"
        if f"{prefix}byteorder" in names:
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        storages = {}

        def storage(storage_type, key, numel, view):
            del view
            if key not in storages:  # tensors that share a storage name it more than once
                dtype = storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
                data = archive.read(f"{prefix}data/{key}")
                storages[key] = np.frombuffer(data, dtype, count=numel).astype(dtype.newbyteorder("="))
            return storages[key]

        with archive.open(pickles[0]) as f:
            return _TensorUnpickler(f, path, storage, inert_globals=inert_globals).load()


def _legacy_tensors(path: str, inert_globals: bool = False):
    """torch's pre-1.6 format: pickles of the magic number, the protocol version and system info, then the
    object (storages as persistent ids), the list of storage keys, and each storage as an int64 element count
    followed by its bytes, in that order."""
    with open(path, "rb") as f:
        plain = lambda: _PlainUnpickler(f, path).load()
        try:
            magic = plain()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise InputError(f"{path}: not a torch checkpoint ({e})") from e
        if magic != _LEGACY_MAGIC:
            raise InputError(f"{path}: not a torch checkpoint (no zip archive, no legacy magic number)")
        plain()  # protocol version
        info = plain()
        byteorder = "<" if not isinstance(info, dict) or info.get("little_endian", True) else ">"
        storages, views = {}, []

        def storage(storage_type, key, numel, view):
            if key not in storages:
                storages[key] = _LazyStorage(storage_type.dtype, numel)
            if view is None:
                return storages[key]
            view_key, offset, view_size = view  # an old-style view: part of another storage
            lazy = _LazyStorage(storage_type.dtype, view_size)
            views.append((lazy, storages[key], int(offset)))
            return lazy

        obj = _TensorUnpickler(f, path, storage, _lazy_tensor, inert_globals).load()
        for key in plain():  # the storages' bytes, in the order of this list
            lazy = storages[str(key)]
            (numel,) = struct.unpack("<q" if byteorder == "<" else ">q", f.read(8))
            dtype = lazy.dtype.newbyteorder(byteorder)
            raw = f.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise InputError(f"{path}: truncated (storage {key} wants {numel} elements)")
            lazy.data = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
        for lazy, base, offset in views:
            lazy.data = base.data[offset:offset + lazy.numel]
        return _resolve(obj)


def _resolve(obj):
    """Legacy placeholders -> numpy arrays, in any nesting of dicts, lists and tuples."""
    if isinstance(obj, _LazyTensor):
        return obj.array()
    if isinstance(obj, dict):
        resolved = type(obj)() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            resolved[k] = _resolve(v)
        return resolved
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    return obj


def read_torch_checkpoint(path: str, allow_legacy: bool = False, inert_globals: bool = False) -> dict[str, np.ndarray]:
    """The tensors of a `torch.save` file as {name: numpy array}, without importing torch.

    Accepts a state dict, or a dict holding one under "state_dict" or "model" (common training checkpoints).
    Other classes in the file are refused, or with `inert_globals` replaced by inert objects (for a checkpoint
    that also pickles, say, its optimizer's state with a library's classes: only the tensors are kept)."""
    if zipfile.is_zipfile(path):
        obj = _zip_tensors(path, inert_globals)
    elif allow_legacy:
        obj = _legacy_tensors(path, inert_globals)
    else:
        raise InputError(f"{path}: not a zip-format torch checkpoint (torch < 1.6 wrote a legacy format; "
                         "re-save it with a recent torch.save)")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state dict, found a {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}


class _PlainUnpickler(pickle.Unpickler):
    """Plain values only: any global (a class or function to call) is refused."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        raise InputError(f"{self._path}: refusing to load {module}.{name}: only plain values are allowed")


def read_plain_pickle(path: str):
    """The object of a pickle file made only of lists, dicts, tuples, strings and numbers (no code runs)."""
    if not os.path.exists(path):
        raise InputError(f"{path} does not exist")
    with open(path, "rb") as f:
        try:
            return _PlainUnpickler(f, path).load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise InputError(f"{path}: not a pickle of plain values ({e})") from e
