"""Entity embeddings for tables (Guo & Berkhahn 2016; fastai's tabular model, the 2018 course's Rossmann net):
one embedding per categorical column, embedding dropout, continuous columns through BatchNorm (or, with
`numeric_edges`, each through its piecewise-linear embedding: research/tabular/numeric_embeddings.py), then an
MLP of Dense -> ReLU -> [BatchNorm] -> Dropout blocks and an output layer, squashed into `y_range` for
regression."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.core.embeddings import embedding_size
from research.tabular.numeric_embeddings import PiecewiseLinearEmbedding


class TabularModel(nn.Module):
    """`(cat_BxC int, cont_BxF float) -> B x num_outputs`.

    cardinalities: rows of each categorical column's embedding (its categories plus the unknown index 0).
    y_range: (low, high) squashes a single output into that range with a scaled sigmoid (regression); None
      leaves the outputs as they are (logits for classification).
    numeric_edges: F x (T + 1) bin edges of the continuous inputs' piecewise-linear embeddings (numeric_dim
      each); None feeds them to the MLP as they are, through BatchNorm (fastai's way).
    batch_norm: BatchNorm after each hidden layer's ReLU (fastai's way).
    """
    cardinalities: Sequence[int]
    num_outputs: int = 1
    hidden: Sequence[int] = (1000, 500)
    dropouts: Sequence[float] = (0.001, 0.01)
    embedding_dropout: float = 0.04
    y_range: tuple[float, float] | None = None
    numeric_edges: tuple[tuple[float, ...], ...] | None = None
    numeric_dim: int = 8
    batch_norm: bool = True

    @nn.compact
    def __call__(self, cat_BxC: jax.Array, cont_BxF: jax.Array, train: bool) -> jax.Array:
        features = [nn.Embed(n, embedding_size(n), embedding_init=nn.initializers.normal(0.01),
                             name=f"embedding_{i}")(cat_BxC[:, i]) for i, n in enumerate(self.cardinalities)]
        if features:
            embedded = nn.Dropout(self.embedding_dropout, deterministic=not train)(jnp.concatenate(features, -1))
            features = [embedded]
        if cont_BxF.shape[-1] and self.numeric_edges is not None:
            features.append(PiecewiseLinearEmbedding(self.numeric_edges, self.numeric_dim, name="numeric")(cont_BxF))
        elif cont_BxF.shape[-1]:
            features.append(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="cont_norm")(cont_BxF))
        x = jnp.concatenate(features, -1)
        for width, rate in zip(self.hidden, self.dropouts):
            x = nn.relu(nn.Dense(width)(x))
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.Dropout(rate, deterministic=not train)(x)
        outputs = nn.Dense(self.num_outputs, name="output")(x)
        if self.y_range is None:
            return outputs
        low, high = self.y_range
        return low + (high - low) * nn.sigmoid(outputs)
