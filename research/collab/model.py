"""Collaborative-filtering models (lesson 5): `(user_B int, item_B int) -> B predicted ratings`.

Index 0 of users and of items is the id the training split never saw (no training row trains it): it looks up
the mean of the trained rows instead, i.e. the average user's factors and bias, so an unseen user gets what the
average user would get for that item, and an unseen user on an unseen item the global mean path (the offset
plus the mean biases and the mean factors' product). Tables are plain 2-D parameters (N x F, biases N x 1), so
decoupled weight decay reaches all of them (fastai decays biases too).

Both squash their score into `y_range` with a scaled sigmoid, low + (high - low) * sigmoid(score) (fastai uses
(0, 5.5) for 1-5 stars, so that 5 is reachable without an infinite score).
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.core.embeddings import embedding_size


def scaled_sigmoid(score_B: jax.Array, y_range: tuple[float, float]) -> jax.Array:
    low, high = y_range
    return low + (high - low) * nn.sigmoid(score_B)


def lookup(table_NxD: jax.Array, index_B: jax.Array, train: bool = False) -> jax.Array:
    """Rows `index_B` of the table; index 0 (unseen in training) gets the mean of rows 1..N-1. Training
    batches never hold index 0, so `train` skips the mean (a pass over the table per step)."""
    if train:
        return table_NxD[index_B]
    mean_D = jnp.mean(table_NxD[1:], axis=0)
    return jnp.where((index_B != 0)[:, None], table_NxD[index_B], mean_D)


class DotProductBias(nn.Module):
    """score = <user factors, item factors> + user bias + item bias + a global offset (fastai's
    DotProductBias plus the offset)."""
    num_users: int
    num_items: int
    num_factors: int = 50
    y_range: tuple[float, float] = (0.0, 5.5)
    init_std: float = 0.01

    @nn.compact
    def __call__(self, user_B: jax.Array, item_B: jax.Array, train: bool = False) -> jax.Array:
        init = nn.initializers.normal(self.init_std)
        user_BxF = lookup(self.param("user_factors", init, (self.num_users, self.num_factors)), user_B, train)
        item_BxF = lookup(self.param("item_factors", init, (self.num_items, self.num_factors)), item_B, train)
        user_bias_B = lookup(self.param("user_bias", init, (self.num_users, 1)), user_B, train)[:, 0]
        item_bias_B = lookup(self.param("item_bias", init, (self.num_items, 1)), item_B, train)[:, 0]
        offset = self.param("offset", nn.initializers.zeros, ())
        score_B = jnp.sum(user_BxF * item_BxF, -1) + user_bias_B + item_bias_B + offset
        return scaled_sigmoid(score_B, self.y_range)


class EmbeddingNet(nn.Module):
    """fastai's collab EmbeddingNN: user and item embeddings (fastai's width rule) concatenated, embedding
    dropout, then Dense -> ReLU -> BatchNorm -> Dropout blocks (fastai's TabularModel) and one output through
    the scaled sigmoid. Unseen ids get the mean embedding."""
    num_users: int
    num_items: int
    hidden: Sequence[int] = (100,)
    dropouts: Sequence[float] = (0.1,)
    embedding_dropout: float = 0.0
    user_factors: int = 0  # 0 = fastai's rule, embedding_size(num_users)
    item_factors: int = 0
    y_range: tuple[float, float] = (0.0, 5.5)
    init_std: float = 0.01

    @nn.compact
    def __call__(self, user_B: jax.Array, item_B: jax.Array, train: bool = False) -> jax.Array:
        init = nn.initializers.normal(self.init_std)
        user_width = self.user_factors or embedding_size(self.num_users)
        item_width = self.item_factors or embedding_size(self.num_items)
        user_BxU = lookup(self.param("user_factors", init, (self.num_users, user_width)), user_B, train)
        item_BxI = lookup(self.param("item_factors", init, (self.num_items, item_width)), item_B, train)
        x = jnp.concatenate([user_BxU, item_BxI], -1)
        x = nn.Dropout(self.embedding_dropout, deterministic=not train)(x)
        for width, rate in zip(self.hidden, self.dropouts):
            x = nn.relu(nn.Dense(width)(x))
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.Dropout(rate, deterministic=not train)(x)
        return scaled_sigmoid(nn.Dense(1, name="output")(x)[:, 0], self.y_range)
