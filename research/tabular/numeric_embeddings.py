"""Embeddings for numerical features (Gorishniy, Rubachev & Babenko 2022, "On Embeddings for Numerical Features
in Tabular Deep Learning"): each continuous input becomes a vector instead of one number, so the first layer can
bend a feature's effect the way a tree's splits do.

Piecewise-linear encoding with quantile bins: a feature's training quantiles cut its range into T bins with
edges e_0 < ... < e_T; x is encoded as T numbers, component t = clip((x - e_t) / (e_{t+1} - e_t), 0, 1): 1 for
every bin wholly below x, the fraction of x's own bin, 0 above. Each component is non-decreasing in x, so the
encoding is monotone, and a linear layer on it is any piecewise-linear function of x with knots at the edges.
Each feature then has its own linear layer (the raw value included) and a ReLU.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def quantile_edges(values_N: np.ndarray, num_bins: int) -> list[float]:
    """At most num_bins + 1 increasing edges: the distinct quantiles 0, 1/num_bins, ..., 1 of the values (a
    feature with few distinct values gets fewer bins)."""
    edges = np.unique(np.quantile(np.asarray(values_N, np.float64), np.linspace(0.0, 1.0, num_bins + 1)))
    if len(edges) == 1:  # a constant feature: one bin of width 1 around it
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return [float(e) for e in edges]


def padded_edges(edges_per_feature: list[list[float]]) -> np.ndarray:
    """F x (T + 1) edges, T the most bins of any feature; a feature with fewer bins is padded with unit-wide bins
    above its last edge, which stay 0 for every value in its training range."""
    width = max(len(e) for e in edges_per_feature)
    rows = [list(e) + [e[-1] + k for k in range(1, width - len(e) + 1)] for e in edges_per_feature]
    return np.asarray(rows, np.float32)


def piecewise_linear_encoding(x_BxF: jax.Array, edges_FxE: jax.Array) -> jax.Array:
    """B x F x (E - 1): component t of feature f is clip((x - e_t) / (e_{t+1} - e_t), 0, 1)."""
    low_FxT, high_FxT = edges_FxE[:, :-1], edges_FxE[:, 1:]
    return jnp.clip((x_BxF[:, :, None] - low_FxT) / (high_FxT - low_FxT), 0.0, 1.0)


class PiecewiseLinearEmbedding(nn.Module):
    """`x_BxF -> B x (F * dim)`: each feature's [x, encoding] through its own Dense(dim) and a ReLU.

    edges: F x (T + 1) bin edges (`padded_edges` of each feature's `quantile_edges` on the training rows), a
      constant of the model, saved with the run's preprocessing."""
    edges: tuple[tuple[float, ...], ...]
    dim: int = 8

    @nn.compact
    def __call__(self, x_BxF: jax.Array) -> jax.Array:
        edges_FxE = jnp.asarray(self.edges, jnp.float32)
        num_features, num_edges = edges_FxE.shape
        encoded_BxFxT = piecewise_linear_encoding(x_BxF, edges_FxE)
        inputs_BxFxI = jnp.concatenate([x_BxF[:, :, None], encoded_BxFxT], -1)
        kernel_FxIxD = self.param("kernel", nn.initializers.variance_scaling(1.0, "fan_in", "uniform",
                                                                             in_axis=1, out_axis=2, batch_axis=(0,)),
                                  (num_features, num_edges, self.dim))
        bias_FxD = self.param("bias", nn.initializers.zeros, (num_features, self.dim))
        embedded_BxFxD = nn.relu(jnp.einsum("bfi,fid->bfd", inputs_BxFxI, kernel_FxIxD) + bias_FxD)
        return embedded_BxFxD.reshape(x_BxF.shape[0], num_features * self.dim)
