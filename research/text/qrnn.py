"""A quasi-recurrent layer (Bradbury et al. 2016), fastai's fast alternative to the LSTM in the AWD-LSTM.

The gates of the whole window come from one matmul over all time steps (window 1: x_t; window 2: [x_t, x_{t-1}],
a width-2 convolution over time, which fastai uses on the first layer):
    z_t = tanh(W_z u_t + b_z),  f_t = sigmoid(W_f u_t + b_f),  o_t = sigmoid(W_o u_t + b_o)
and only an elementwise recurrence is sequential (f-pooling):
    c_t = f_t * c_{t-1} + (1 - f_t) * z_t,   h_t = o_t * c_t.
(fastai writes the pooling as c_t = f_t * z_t + (1 - f_t) * c_{t-1}: the same family with f -> 1 - f.) With no
matmul inside the recurrence it runs as a cheap `lax.scan`, or as an associative scan of the linear recurrence
c_t = a_t c_{t-1} + b_t (`scan="associative"`).

DropConnect (AWD-LSTM's weight drop) is on the gate kernel, one mask per forward pass. The carry is batch-major,
(h_BxH, c_BxH) for window 1 and (h_BxH, c_BxH, x_prev_BxD) for window 2 (the last real input, so the next window's
first step sees its predecessor): h is the output after the last real token, as the LSTM's carry is. Where
`mask_BxT` is False the state does not move (the forget gate is forced to 1 there); outputs at such padded
positions are o_t * c_t with the held c and are meant to be masked downstream.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.text import rnn


def shifted_inputs(inputs_BxTxD, x_prev_BxD) -> jax.Array:
    """x_{t-1} for every t: the carried previous input, then the window's inputs shifted by one step."""
    return jnp.concatenate([x_prev_BxD[:, None, :], inputs_BxTxD[:, :-1]], axis=1)


def f_pool_sequential(f_BxTxH, z_BxTxH, c0_BxH) -> jax.Array:
    """c_t = f_t * c_{t-1} + (1 - f_t) * z_t for every t, as a `lax.scan` over time; returns c_BxTxH."""

    def step(c_BxH, fz):
        f_BxH, z_BxH = fz
        c_BxH = f_BxH * c_BxH + (1.0 - f_BxH) * z_BxH
        return c_BxH, c_BxH

    _, c_TxBxH = jax.lax.scan(step, c0_BxH, (jnp.swapaxes(f_BxTxH, 0, 1), jnp.swapaxes(z_BxTxH, 0, 1)))
    return jnp.swapaxes(c_TxBxH, 0, 1)


def f_pool_associative(f_BxTxH, z_BxTxH, c0_BxH) -> jax.Array:
    """The same recurrence as `f_pool_sequential`, as `jax.lax.associative_scan` of the affine maps
    c -> a c + b (composition: (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)); c0 is folded into the first b."""
    a_BxTxH = f_BxTxH
    b_BxTxH = (1.0 - f_BxTxH) * z_BxTxH
    b_BxTxH = b_BxTxH.at[:, 0].add(f_BxTxH[:, 0] * c0_BxH)

    def compose(first, second):
        a1, b1 = first
        a2, b2 = second
        return a1 * a2, a2 * b1 + b2

    _, c_BxTxH = jax.lax.associative_scan(compose, (a_BxTxH, b_BxTxH), axis=1)
    return c_BxTxH


def last_real(values_BxTxK, mask_BxT, previous_BxK) -> jax.Array:
    """values at each row's last position where mask is True; `previous` for rows with no real position."""
    T = mask_BxT.shape[1]
    index_B = jnp.max(jnp.where(mask_BxT, jnp.arange(T)[None, :], -1), axis=1)
    picked_BxK = jnp.take_along_axis(values_BxTxK, jnp.maximum(index_B, 0)[:, None, None], axis=1)[:, 0]
    return jnp.where((index_B >= 0)[:, None], picked_BxK, previous_BxK)


class QRNN(nn.Module):
    """One QRNN layer with an output gate. `window`: 1 (gates from x_t) or 2 (from [x_t, x_{t-1}]);
    `weight_drop`: DropConnect rate on the gate kernel, in training only; `scan`: "sequential" or "associative"."""
    hidden: int
    window: int = 1
    weight_drop: float = 0.0
    scan: str = "sequential"

    @nn.compact
    def __call__(self, inputs_BxTxD, carry, mask_BxT, train: bool):
        if self.window not in (1, 2):
            raise ValueError(f"QRNN window must be 1 or 2, got {self.window}")
        H, D = self.hidden, inputs_BxTxD.shape[-1]
        fan_in = self.window * D
        kernel = self.param("kernel", rnn.uniform_init(fan_in), (fan_in, 3 * H))  # gates z, f, o
        bias = self.param("bias", rnn.uniform_init(fan_in), (3 * H,))
        kernel = rnn.drop_connect(self, kernel, self.weight_drop, train)
        h_BxH, c_BxH = carry[0], carry[1]
        source_BxTxU = inputs_BxTxD
        if self.window == 2:
            source_BxTxU = jnp.concatenate([inputs_BxTxD, shifted_inputs(inputs_BxTxD, carry[2])], axis=-1)
        gates_BxTx3H = jnp.einsum("btu,ug->btg", source_BxTxU, kernel) + bias
        z_pre, f_pre, o_pre = jnp.split(gates_BxTx3H, 3, axis=-1)
        f_BxTxH = jnp.where(mask_BxT[..., None], jax.nn.sigmoid(f_pre), 1.0)  # padding: the state holds
        pool = {"sequential": f_pool_sequential, "associative": f_pool_associative}[self.scan]
        c_BxTxH = pool(f_BxTxH, jnp.tanh(z_pre), c_BxH)
        h_BxTxH = jax.nn.sigmoid(o_pre) * c_BxTxH
        new_carry = (last_real(h_BxTxH, mask_BxT, h_BxH), c_BxTxH[:, -1])
        if self.window == 2:
            new_carry += (last_real(inputs_BxTxD, mask_BxT, carry[2]),)
        return h_BxTxH, new_carry


def zero_carry(batch_size: int, hidden_sizes, input_dim: int, first_window: int = 2) -> tuple:
    """The initial state of a QRNN stack: (h, c) per layer, plus the previous input x_prev (input_dim wide) on the
    first layer when its window is 2; all zeros."""
    carry = []
    for i, H in enumerate(hidden_sizes):
        layer = (jnp.zeros((batch_size, H), jnp.float32), jnp.zeros((batch_size, H), jnp.float32))
        if i == 0 and first_window == 2:
            layer += (jnp.zeros((batch_size, input_dim), jnp.float32),)
        carry.append(layer)
    return tuple(carry)
