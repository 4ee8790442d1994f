"""fastai's AWD-LSTM pretrained on WikiText-103 (WT103_FWD, and WT103_BWD for text read backwards), loaded into
our AWDLSTM (research/text/awd_lstm.py) without PyTorch.

fastai publishes each model as a .tgz holding the weights (`lstm_fwd.pth` / `lstm_bwd.pth`, a `torch.save` state
dict, read by research/core/torch_files.py's restricted unpickler, torch's old format included; classes other
than tensors, such as an optimizer state saved beside the model, become inert objects) and the
vocabulary (`itos_wt103.pkl`, a pickle of a list of str, read by a pickle reader that allows only plain values).

fastai's state dict onto our parameters:
  0.encoder.weight (V x E)                      -> encoder/embed/embedding (+ 0.1: ours is stored offset, see
                                                   AWDEncoder.embedding_matrix); 0.encoder_dp.emb.weight is the
                                                   same tensor
  0.rnns.L.module.weight_ih_l0 (4H x D)         -> encoder/rnn_L/input_kernel (D x 4H), transposed
  0.rnns.L.weight_hh_l0_raw (4H x H)            -> encoder/rnn_L/hidden_kernel (H x 4H), transposed; the
                                                   DropConnect copy 0.rnns.L.module.weight_hh_l0 (fastai v1) is
                                                   ignored
  0.rnns.L.module.bias_ih_l0 + bias_hh_l0 (4H)  -> encoder/rnn_L/bias (our cell has one bias)
  1.decoder.weight                              -> tied: must equal the embedding
  1.decoder.bias (V)                            -> output_bias
PyTorch's LSTM gate order (i, f, g, o) is ours too, so the gate blocks keep their places. Layer sizes come from
the tensors (fastai v1: 400 / 1150 / 3 layers, v2: 400 / 1152 / 3). The backward model expects each document's
tokens reversed.

`download` fetches a model once into ~/.cache/fastjax/wt103/ (or $FASTJAX_CACHE/wt103/): for users with a
network, never in the tests.
"""

import dataclasses
import os
import re
import tarfile
from typing import Mapping, NamedTuple

import numpy as np

from research.core import torch_files
from research.core.errors import InputError
from research.text import tokens


@dataclasses.dataclass(frozen=True)
class Archive:
    url: str
    sha256: str  # "" where no digest is pinned: the first download's digest is recorded and checked from then on
    weights: str  # the .pth inside the archive
    vocab: str = "itos_wt103.pkl"


# fastai's URLs.WT103_FWD / WT103_BWD. fastai publishes no SHA-256 for them and this machine has no network, so
# no digest is pinned here: `download` records the digest of the first download beside the file and checks
# every later use against it.
ARCHIVES = {
    "WT103_FWD": Archive("https://s3.amazonaws.com/fast-ai-modelzoo/wt103-fwd.tgz", "", "lstm_fwd.pth"),
    "WT103_BWD": Archive("https://s3.amazonaws.com/fast-ai-modelzoo/wt103-bwd.tgz", "", "lstm_bwd.pth"),
}


class Pretrained(NamedTuple):
    vocab: tokens.Vocab
    model_config: dict  # AWDLSTM's size arguments: embed_dim, hidden, num_layers
    params: dict  # {"encoder": ..., "output_bias": ...}, as AWDLSTM.init makes them


def cache_dir() -> str:
    return os.path.join(torch_files.cache_root(), "wt103")


def download(name: str = "WT103_FWD", directory: str | None = None) -> tuple[str, str]:
    """(weights path, vocabulary path) of fastai's model `name`, downloaded and unpacked once into the cache."""
    if name not in ARCHIVES:
        raise InputError(f"unknown pretrained language model {name!r}: use one of {sorted(ARCHIVES)}")
    archive = ARCHIVES[name]
    directory = os.path.join(directory or cache_dir(), name.lower())
    weights, vocab = os.path.join(directory, archive.weights), os.path.join(directory, archive.vocab)
    tgz = os.path.join(directory, os.path.basename(archive.url))
    recorded_file = tgz + ".sha256"
    recorded = open(recorded_file).read().strip() if os.path.exists(recorded_file) else ""
    torch_files.fetch(archive.url, archive.sha256 or recorded, tgz)
    if not recorded:
        with open(recorded_file, "w") as f:
            f.write(torch_files.sha256(tgz) + "\n")
    if not (os.path.exists(weights) and os.path.exists(vocab)):
        unpack(tgz, directory, (archive.weights, archive.vocab))
    return weights, vocab


def unpack(tgz: str, directory: str, wanted: tuple[str, ...]) -> None:
    """The regular files of `tgz` whose base names are in `wanted`, written to `directory` under those names
    (no path from the archive is used, so nothing lands outside `directory`)."""
    found = set()
    with tarfile.open(tgz, "r:gz") as archive:
        for member in archive.getmembers():
            name = os.path.basename(member.name)
            if member.isfile() and name in wanted:
                with archive.extractfile(member) as source, open(os.path.join(directory, name), "wb") as target:
                    target.write(source.read())
                found.add(name)
    missing = sorted(set(wanted) - found)
    if missing:
        raise InputError(f"{tgz}: the archive holds no {', '.join(missing)}")


def read_itos(path: str) -> list[str]:
    """fastai's vocabulary (id -> token) from its pickle; it must start with xxunk, xxpad, xxbos as ours does."""
    itos = torch_files.read_plain_pickle(path)
    if not isinstance(itos, list) or not all(isinstance(t, str) for t in itos):
        raise InputError(f"{path}: expected a pickled list of str (fastai's itos)")
    if itos[:3] != [tokens.UNK, tokens.PAD, tokens.BOS]:
        raise InputError(f"{path}: the vocabulary starts {itos[:3]}, not {[tokens.UNK, tokens.PAD, tokens.BOS]}")
    return itos


def awd_lstm_params(state_dict: Mapping[str, np.ndarray], source: str = "weights") -> tuple[dict, dict]:
    """(our AWDLSTM's params, its size arguments) from a fastai AWD-LSTM language model's state dict."""
    need = lambda key: _need(state_dict, key, source)
    embedding_VxE = np.asarray(need("0.encoder.weight"), np.float32)
    decoder_VxE = need("1.decoder.weight")
    if decoder_VxE.shape != embedding_VxE.shape or not np.array_equal(decoder_VxE, embedding_VxE):
        raise InputError(f"{source}: the decoder is not tied to the embedding; our AWD-LSTM always ties them")
    if any(".layers." in k for k in state_dict):
        raise InputError(f"{source}: QRNN weights (fastai's qrnn=True) are not supported, only the LSTM model")
    layer_ids = sorted({int(m.group(1)) for k in state_dict for m in [re.match(r"0\.rnns\.(\d+)\.", k)] if m})
    if layer_ids != list(range(len(layer_ids))) or not layer_ids:
        raise InputError(f"{source}: expected layers 0.rnns.0 ... 0.rnns.N, found {layer_ids}")
    encoder = {"embed": {"embedding": embedding_VxE + 0.1}}
    sizes = []
    for i in layer_ids:
        prefix = f"0.rnns.{i}."
        w_ih_4HxD = need(prefix + "module.weight_ih_l0")
        w_hh_4HxH = need(prefix + "weight_hh_l0_raw")
        bias_4H = need(prefix + "module.bias_ih_l0") + need(prefix + "module.bias_hh_l0")
        encoder[f"rnn_{i}"] = {"input_kernel": np.asarray(w_ih_4HxD.T, np.float32),
                               "hidden_kernel": np.asarray(w_hh_4HxH.T, np.float32),
                               "bias": np.asarray(bias_4H, np.float32)}
        sizes.append(w_hh_4HxH.shape[1])
    V, E = embedding_VxE.shape
    if sizes[-1] != E:
        raise InputError(f"{source}: the last layer has {sizes[-1]} units, the embedding {E}: not tied")
    config = {"embed_dim": int(E), "hidden": int(sizes[0] if len(sizes) > 1 else E), "num_layers": len(sizes)}
    params = {"encoder": encoder, "output_bias": np.asarray(need("1.decoder.bias"), np.float32)}
    if params["output_bias"].shape != (V,):
        raise InputError(f"{source}: 1.decoder.bias has shape {params['output_bias'].shape}, want ({V},)")
    return params, config


def _need(state_dict: Mapping[str, np.ndarray], key: str, source: str) -> np.ndarray:
    if key not in state_dict:
        raise InputError(f"{source}: no tensor {key}: not a fastai AWD-LSTM language model")
    return state_dict[key]


def load(weights_path: str, vocab_path: str) -> Pretrained:
    """fastai's pretrained AWD-LSTM from its .pth and itos .pkl, as our vocabulary, sizes and params."""
    itos = read_itos(vocab_path)
    state_dict = torch_files.read_torch_checkpoint(weights_path, allow_legacy=True, inert_globals=True)
    params, config = awd_lstm_params(state_dict, weights_path)
    if len(itos) != params["output_bias"].shape[0]:
        raise InputError(f"{vocab_path} holds {len(itos)} tokens, the weights {params['output_bias'].shape[0]}")
    return Pretrained(tokens.Vocab(itos), config, params)


def load_named(name: str = "WT103_FWD", directory: str | None = None) -> Pretrained:
    """`load` of fastai's published model `name` (downloaded once; needs a network the first time)."""
    return load(*download(name, directory))
