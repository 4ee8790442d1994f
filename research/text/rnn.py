"""Recurrent layers as one `lax.scan` over time: an LSTM (with optional DropConnect on its hidden-to-hidden
weights, AWD-LSTM's weight drop) and a GRU.

Each layer maps (inputs_BxTxD, carry, mask_BxT) -> (outputs_BxTxH, new carry). The input-to-hidden product is
one large matmul over all time steps before the scan; only the hidden-to-hidden product runs inside it (the
part that is sequential). Where `mask_BxT` is False the state does not move, so a window padded to a fixed
length ends with the state after its last real token. Carries are batch-major: LSTM (h_BxH, c_BxH), GRU (h_BxH,).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def uniform_init(hidden: int):
    """PyTorch's recurrent-layer initialisation: U(-1/sqrt(H), 1/sqrt(H))."""
    bound = hidden ** -0.5
    return lambda rng, shape, dtype=jnp.float32: jax.random.uniform(rng, shape, dtype, -bound, bound)


def drop_connect(module: nn.Module, kernel, rate: float, train: bool):
    """`kernel` with each weight zeroed with probability `rate` (one mask per forward pass, shared by all time
    steps), rescaled by 1 / (1 - rate); unchanged outside training."""
    if not train or rate == 0.0:
        return kernel
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, kernel.shape)
    return jnp.where(keep, kernel / (1.0 - rate), 0.0)


def _scan(cell, carry, inputs_TxBxG, mask_BxT):
    """Runs `cell(carry, x_BxG) -> new carry` over time; returns (h_BxTxH, final carry)."""

    def step(carry, xs):
        x_BxG, m_B = xs
        new = cell(carry, x_BxG)
        new = tuple(jnp.where(m_B[:, None], n, c) for n, c in zip(new, carry))
        return new, new[0]

    carry, hidden_TxBxH = jax.lax.scan(step, carry, (inputs_TxBxG, mask_BxT.T))
    return jnp.swapaxes(hidden_TxBxH, 0, 1), carry


class LSTM(nn.Module):
    """One LSTM layer (gates i, f, g, o; forget-gate bias 1). `weight_drop`: DropConnect rate on the
    hidden-to-hidden kernel, in training only."""
    hidden: int
    weight_drop: float = 0.0

    @nn.compact
    def __call__(self, inputs_BxTxD, carry, mask_BxT, train: bool):
        H = self.hidden
        init = uniform_init(H)
        input_kernel = self.param("input_kernel", init, (inputs_BxTxD.shape[-1], 4 * H))
        hidden_kernel = self.param("hidden_kernel", init, (H, 4 * H))
        bias = self.param("bias", lambda rng, shape: jnp.zeros(shape).at[H:2 * H].set(1.0), (4 * H,))
        hidden_kernel = drop_connect(self, hidden_kernel, self.weight_drop, train)
        gates_TxBx4H = jnp.einsum("btd,dg->tbg", inputs_BxTxD, input_kernel) + bias

        def cell(carry, x_Bx4H):
            h, c = carry
            i, f, g, o = jnp.split(x_Bx4H + h @ hidden_kernel, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            return jax.nn.sigmoid(o) * jnp.tanh(c), c

        return _scan(cell, carry, gates_TxBx4H, mask_BxT)


class GRU(nn.Module):
    """One GRU layer (PyTorch's formulation: the reset gate scales the hidden product plus its bias)."""
    hidden: int

    @nn.compact
    def __call__(self, inputs_BxTxD, carry, mask_BxT, train: bool):
        del train
        H = self.hidden
        init = uniform_init(H)
        input_kernel = self.param("input_kernel", init, (inputs_BxTxD.shape[-1], 3 * H))
        hidden_kernel = self.param("hidden_kernel", init, (H, 3 * H))
        input_bias = self.param("input_bias", nn.initializers.zeros, (3 * H,))
        hidden_bias = self.param("hidden_bias", nn.initializers.zeros, (3 * H,))
        gates_TxBx3H = jnp.einsum("btd,dg->tbg", inputs_BxTxD, input_kernel) + input_bias

        def cell(carry, x_Bx3H):
            (h,) = carry
            xr, xz, xn = jnp.split(x_Bx3H, 3, axis=-1)
            hr, hz, hn = jnp.split(h @ hidden_kernel + hidden_bias, 3, axis=-1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            return ((1.0 - z) * n + z * h,)

        return _scan(cell, carry, gates_TxBx3H, mask_BxT)


def zero_carry(cell: str, batch_size: int, hidden_sizes) -> tuple:
    """The initial state of a stack of layers: per layer (h, c) for "lstm", (h,) for "gru", all zeros."""
    parts = {"lstm": 2, "gru": 1}[cell]
    return tuple(tuple(jnp.zeros((batch_size, h), jnp.float32) for _ in range(parts)) for h in hidden_sizes)


def reset_carry(carry, reset_B):
    """`carry` with the rows where reset_B zeroed (a new epoch or document starts there)."""
    return jax.tree.map(lambda x: jnp.where(reset_B[:, None], 0.0, x), carry)
