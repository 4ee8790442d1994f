"""The QRNN layer (research/text/qrnn.py) against a per-step reference written with numpy, its carry across
windows, DropConnect only in training, and the AWD-LSTM with the QRNN cell learning from a few steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.core import steps
from research.core.train_state import TrainState
from research.text import language_model, qrnn
from research.text.awd_lstm import AWDLSTM
from research.text.char_rnn import CharRNN


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_qrnn(kernel, bias, x_BxTxD, mask_BxT, carry):
    """One step at a time, each step's gates from its own inputs: the definition, with no batching over time."""
    window = kernel.shape[0] // x_BxTxD.shape[-1]
    h, c = np.array(carry[0], np.float64), np.array(carry[1], np.float64)
    x_prev = np.array(carry[2], np.float64) if window == 2 else None
    B, T, _ = x_BxTxD.shape
    H = c.shape[-1]
    outputs = np.zeros((B, T, H))
    for t in range(T):
        x_t = x_BxTxD[:, t].astype(np.float64)
        u_t = np.concatenate([x_t, x_prev], -1) if window == 2 else x_t
        gates = u_t @ kernel + bias
        z, f, o = np.tanh(gates[:, :H]), sigmoid(gates[:, H:2 * H]), sigmoid(gates[:, 2 * H:])
        real = mask_BxT[:, t][:, None]
        c = np.where(real, f * c + (1.0 - f) * z, c)
        outputs[:, t] = o * c
        h = np.where(real, o * c, h)
        if window == 2:
            x_prev = np.where(real, x_t, x_prev)
    return outputs, (h, c, x_prev) if window == 2 else (h, c)


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("scan", ["sequential", "associative"])
def test_qrnn_equals_its_per_step_reference(window, scan):
    B, T, D, H = 3, 9, 5, 7
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    mask = np.ones((B, T), bool)
    mask[1, 6:] = False  # a padded row: its state must stop at the last real token
    mask[2, :] = False  # a row with no real token keeps the carry it came with
    carry = tuple(jnp.asarray(rng.normal(size=(B, n)).astype(np.float32)) for n in (H, H, D)[:window + 1])
    layer = qrnn.QRNN(H, window=window, scan=scan)
    variables = layer.init(jax.random.key(0), x, carry, mask, False)
    params = variables["params"]
    params = {"kernel": params["kernel"], "bias": jnp.asarray(rng.normal(size=(3 * H,)).astype(np.float32))}
    out, new_carry = layer.apply({"params": params}, x, carry, mask, False)
    expected_out, expected_carry = reference_qrnn(np.asarray(params["kernel"], np.float64),
                                                  np.asarray(params["bias"], np.float64), x, mask, carry)
    np.testing.assert_allclose(np.where(mask[..., None], out, 0.0), np.where(mask[..., None], expected_out, 0.0),
                               atol=1e-5)
    assert len(new_carry) == len(expected_carry)
    for ours, theirs in zip(new_carry, expected_carry):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(new_carry[0][2], carry[0][2], atol=0)  # the empty row's state did not move


@pytest.mark.parametrize("model", [AWDLSTM(40, embed_dim=8, hidden=12, num_layers=3, cell="qrnn"),
                                   CharRNN(40, embed_dim=8, hidden_sizes=(12, 12), cell="qrnn")])
def test_qrnn_windows_with_the_carry_equal_one_pass(model):
    tokens_BxT = jax.random.randint(jax.random.key(0), (2, 20), 0, 40)
    no_reset, ones = jnp.zeros(2, bool), jnp.ones((2, 20), bool)
    variables = model.init(jax.random.key(1), tokens_BxT, no_reset, ones)
    apply = jax.jit(model.apply)  # two shapes: the whole sequence and a window
    whole, _ = apply(variables, tokens_BxT, no_reset, ones, carry=model.initial_carry(2))
    carry, pieces = model.initial_carry(2), []
    for start, length in ((0, 7), (7, 9), (16, 4)):  # windows of 10 tokens with padding
        window = jnp.zeros((2, 10), jnp.int32).at[:, :length].set(tokens_BxT[:, start:start + length])
        mask = jnp.arange(10)[None, :].repeat(2, 0) < length
        outputs, carry = apply(variables, window, no_reset, mask, carry=carry)
        pieces.append(outputs["logits"][:, :length])
    np.testing.assert_allclose(jnp.concatenate(pieces, 1), whole["logits"], atol=1e-5)
    assert jax.tree.map(jnp.shape, carry) == jax.tree.map(jnp.shape, model.initial_carry(2))


def test_qrnn_dropconnect_only_in_training():
    layer = qrnn.QRNN(6, window=1, weight_drop=0.5)
    x = jax.random.normal(jax.random.key(0), (2, 5, 4))
    carry, mask = qrnn.zero_carry(2, (6,), 4, first_window=1)[0], jnp.ones((2, 5), bool)
    variables = layer.init(jax.random.key(1), x, carry, mask, False)
    run = lambda train, seed: layer.apply(variables, x, carry, mask, train, rngs={"dropout": jax.random.key(seed)})[0]
    np.testing.assert_array_equal(run(False, 0), run(False, 1))
    assert not np.allclose(run(True, 0), run(True, 1))


def test_awd_lstm_with_qrnn_cell_lowers_the_loss():
    """A few Adam steps on a fixed batch of a repeating sequence: the QRNN language model learns it."""
    vocab, B, T = 30, 8, 16
    model = AWDLSTM(vocab, embed_dim=16, hidden=32, num_layers=3, embed_drop=0.0, input_drop=0.1, hidden_drop=0.1,
                    weight_drop=0.1, output_drop=0.1, cell="qrnn")
    stream = (np.arange(B * (T + 1)) * 7 % vocab).reshape(B, T + 1).astype(np.int32)
    batch = {"input": jnp.asarray(stream[:, :-1]), "target": jnp.asarray(stream[:, 1:]),
             "reset": jnp.ones(B, bool), "token_mask": jnp.ones((B, T), bool)}
    variables = model.init(jax.random.key(0), batch["input"], batch["reset"], batch["token_mask"])
    assert set(variables["params"]["encoder"]["rnn_0"]) == {"kernel", "bias"}
    assert variables["params"]["encoder"]["rnn_0"]["kernel"].shape == (2 * 16, 3 * 32)  # window 2 on layer 0
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats={},
                              tx=optax.adam(3e-2), carry=model.initial_carry(B))
    train_step = jax.jit(steps.make_train_step(language_model.task(ar=1.0, tar=1.0)))
    losses = []
    for step in range(30):
        state, metrics = train_step(state, batch, jax.random.key(step))
        losses.append(float(metrics["loss"] / metrics["count"]))
    assert losses[0] > 3.0  # ~log(30)
    assert np.mean(losses[-3:]) < losses[0] - 1.0
