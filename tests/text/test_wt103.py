"""fastai's pretrained AWD-LSTM loaded without PyTorch (research/text/wt103.py), checked offline: a small state
dict with fastai's layout (vocabulary 50, embedding 8, hidden 12, 3 layers) is saved here by `torch.save`, loaded
by our loader, and our forward pass is compared with a PyTorch AWD-LSTM forward written below."""

import os
import pickle

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from research.core import torch_files
from research.core.errors import InputError
from research.text import tokens, wt103
from research.text.awd_lstm import AWDLSTM

V, E, H, L = 50, 8, 12, 3
ITOS = [tokens.UNK, tokens.PAD, tokens.BOS, "xxfld", tokens.MAJ, tokens.UP, tokens.REP, "xxwrep",
        *[f"w{i}" for i in range(V - 8)]]


def fastai_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict named and shaped as fastai's AWD-LSTM language model (v1 also saves the DropConnect copy
    module.weight_hh_l0 beside weight_hh_l0_raw; here it is saved with other values, so using it would show)."""
    torch.manual_seed(seed)
    embedding = torch.randn(V, E) * 0.3
    state = {"0.encoder.weight": embedding, "0.encoder_dp.emb.weight": embedding}
    for i in range(L):
        n_in, n_out = (E if i == 0 else H), (H if i < L - 1 else E)
        lstm = torch.nn.LSTM(n_in, n_out, batch_first=True)
        with torch.no_grad():
            for p in lstm.parameters():
                p.uniform_(-0.5, 0.5)  # biases too: both kept separate in torch, summed in ours
        state[f"0.rnns.{i}.weight_hh_l0_raw"] = lstm.weight_hh_l0.detach().clone()
        state[f"0.rnns.{i}.module.weight_ih_l0"] = lstm.weight_ih_l0.detach().clone()
        state[f"0.rnns.{i}.module.weight_hh_l0"] = torch.zeros_like(lstm.weight_hh_l0)
        state[f"0.rnns.{i}.module.bias_ih_l0"] = lstm.bias_ih_l0.detach().clone()
        state[f"0.rnns.{i}.module.bias_hh_l0"] = lstm.bias_hh_l0.detach().clone()
    state["1.decoder.weight"] = embedding  # tied: the same tensor
    state["1.decoder.bias"] = torch.randn(V)
    return state


def torch_awd_lstm_logits(state: dict[str, torch.Tensor], tokens_BxT: np.ndarray) -> np.ndarray:
    """fastai's AWD-LSTM in evaluation: embedding -> 3 nn.LSTM layers with the saved weights (the raw hidden
    kernel) -> decoder tied to the embedding, plus its bias."""
    with torch.no_grad():
        x = torch.nn.functional.embedding(torch.from_numpy(tokens_BxT).long(), state["0.encoder.weight"])
        for i in range(L):
            weight_ih = state[f"0.rnns.{i}.module.weight_ih_l0"]
            lstm = torch.nn.LSTM(weight_ih.shape[1], weight_ih.shape[0] // 4, batch_first=True)
            lstm.weight_ih_l0.copy_(weight_ih)
            lstm.weight_hh_l0.copy_(state[f"0.rnns.{i}.weight_hh_l0_raw"])
            lstm.bias_ih_l0.copy_(state[f"0.rnns.{i}.module.bias_ih_l0"])
            lstm.bias_hh_l0.copy_(state[f"0.rnns.{i}.module.bias_hh_l0"])
            x, _ = lstm(x)
        return torch.nn.functional.linear(x, state["1.decoder.weight"], state["1.decoder.bias"]).numpy()


def saved(tmp_path, state, legacy: bool) -> tuple[str, str]:
    weights, vocab = str(tmp_path / "lstm_fwd.pth"), str(tmp_path / "itos_wt103.pkl")
    torch.save(state, weights, _use_new_zipfile_serialization=not legacy)
    with open(vocab, "wb") as f:
        pickle.dump(ITOS, f)
    return weights, vocab


@pytest.mark.parametrize("legacy", [False, True])
def test_loaded_wt103_layout_gives_pytorchs_forward(tmp_path, legacy):
    state = fastai_state_dict()
    pretrained = wt103.load(*saved(tmp_path, state, legacy))
    assert pretrained.model_config == {"embed_dim": E, "hidden": H, "num_layers": L}
    assert pretrained.vocab.itos == ITOS and pretrained.vocab.stoi["w0"] == 8
    tokens_BxT = np.random.default_rng(0).integers(0, V, (2, 11)).astype(np.int32)
    model = AWDLSTM(V, **pretrained.model_config)
    outputs, _ = model.apply({"params": pretrained.params}, jnp.asarray(tokens_BxT), jnp.ones(2, bool),
                             jnp.ones((2, 11), bool), train=False)
    np.testing.assert_allclose(outputs["logits"], torch_awd_lstm_logits(state, tokens_BxT), atol=1e-5)


class OptimizerState:
    """A class of the training library pickled beside the weights (fastai saves {"model": ..., "opt": ...})."""

    def __init__(self):
        self.hypers = [{"lr": 1e-3}]


def test_a_checkpoint_with_other_classes_loads_its_model_tensors(tmp_path):
    state = fastai_state_dict()
    weights, vocab = saved(tmp_path, state, legacy=True)
    torch.save({"model": state, "opt": OptimizerState()}, weights, _use_new_zipfile_serialization=False)
    with pytest.raises(InputError, match="refusing to load .*OptimizerState"):
        torch_files.read_torch_checkpoint(weights, allow_legacy=True)
    pretrained = wt103.load(weights, vocab)
    np.testing.assert_array_equal(pretrained.params["output_bias"], state["1.decoder.bias"].numpy())


def test_itos_pickle_with_code_and_untied_weights_are_refused(tmp_path):
    evil = str(tmp_path / "itos.pkl")
    with open(evil, "wb") as f:
        pickle.dump(_RunsCode(), f)
    with pytest.raises(InputError, match="refusing to load (os|posix).system"):
        wt103.read_itos(evil)
    state = fastai_state_dict()
    state["1.decoder.weight"] = state["1.decoder.weight"] + 1.0
    with pytest.raises(InputError, match="not tied"):
        wt103.load(*saved(tmp_path, state, legacy=False))
    with pytest.raises(InputError, match="unknown pretrained language model 'WT2'"):
        wt103.download("WT2", str(tmp_path))
    assert wt103.ARCHIVES["WT103_FWD"].url.endswith("wt103-fwd.tgz")


def test_download_unpacks_only_the_two_files(tmp_path, monkeypatch):
    """A served .tgz (file:// URL) with fastai's layout: the weights and itos land in the cache, the digest of the
    first download is recorded, and a changed archive is refused afterwards."""
    import tarfile
    served = tmp_path / "server"
    served.mkdir()
    weights, vocab = saved(served, fastai_state_dict(), legacy=False)
    tgz = served / "wt103-fwd.tgz"
    with tarfile.open(tgz, "w:gz") as archive:
        archive.add(weights, arcname="wt103-fwd/lstm_fwd.pth")
        archive.add(vocab, arcname="wt103-fwd/itos_wt103.pkl")
    monkeypatch.setitem(wt103.ARCHIVES, "WT103_FWD", wt103.Archive(tgz.as_uri(), "", "lstm_fwd.pth"))
    cache = str(tmp_path / "cache")
    got = wt103.download("WT103_FWD", cache)
    assert got == (os.path.join(cache, "wt103_fwd", "lstm_fwd.pth"), os.path.join(cache, "wt103_fwd", "itos_wt103.pkl"))
    assert wt103.load(*got).vocab.itos == ITOS
    with open(os.path.join(cache, "wt103_fwd", "wt103-fwd.tgz"), "ab") as f:
        f.write(b"changed")
    with pytest.raises(InputError, match="delete it to download it again"):
        wt103.download("WT103_FWD", cache)


class _RunsCode:
    def __reduce__(self):
        return os.system, ("echo pwned",)
