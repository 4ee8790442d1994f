"""AWD-LSTM (Merity et al. 2017), the language model behind ULMFiT, and the ULMFiT text classifier on its
encoder.

Regularisation, all active in training only:
- embedding dropout: whole words (rows of the embedding matrix) dropped, the rest rescaled;
- variational dropout (one mask per sequence, shared by all time steps) on the embeddings (`input_drop`),
  between LSTM layers (`hidden_drop`) and on the encoder's output (`output_drop`);
- DropConnect on every LSTM's hidden-to-hidden kernel (`weight_drop`, see research/text/rnn.py), or on every
  QRNN layer's gate kernel;
- AR/TAR on the last layer's outputs are in the loss (research/text/language_model.py).
The decoder is tied to the embedding (its kernel is the embedding matrix transposed), so the last LSTM layer
has `embed_dim` units.

`cell` picks the recurrence: "lstm" (the default) or "qrnn" (fastai's QRNN option, research/text/qrnn.py: the
first layer's gates from a window of 2 inputs, the others from 1; cheaper, as only elementwise work is
sequential). Both carry their state across BPTT windows.

Parameter paths: encoder/embed/embedding, encoder/rnn_{i}/..., output_bias (language model) and head/...
(classifier), so a classifier loads a language model's encoder by copying params["encoder"].
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.text import qrnn, rnn

CELLS = ("lstm", "qrnn")


def variational_dropout(module: nn.Module, x_BxTxD, rate: float, train: bool) -> jax.Array:
    """Dropout with one mask per sequence (BxD), shared by all its time steps; identity outside training."""
    if not train or rate == 0.0:
        return x_BxTxD
    B, _, D = x_BxTxD.shape
    keep_Bx1xD = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, (B, 1, D))
    return jnp.where(keep_Bx1xD, x_BxTxD / (1.0 - rate), 0.0)


class AWDEncoder(nn.Module):
    vocab_size: int
    embed_dim: int = 400
    hidden: int = 1150
    num_layers: int = 3
    embed_drop: float = 0.1
    input_drop: float = 0.6
    hidden_drop: float = 0.3
    weight_drop: float = 0.5
    output_drop: float = 0.4
    cell: str = "lstm"

    def setup(self):
        if self.cell not in CELLS:
            raise ValueError(f"AWD-LSTM cell must be one of {CELLS}, got {self.cell!r}")
        self.embed = nn.Embed(self.vocab_size, self.embed_dim,
                              embedding_init=nn.initializers.uniform(0.2))  # U(0, 0.2), centred below
        if self.cell == "qrnn":
            self.layers = [qrnn.QRNN(size, 2 if i == 0 else 1, self.weight_drop, name=f"rnn_{i}")
                           for i, size in enumerate(self.sizes)]
        else:
            self.layers = [rnn.LSTM(size, self.weight_drop, name=f"rnn_{i}") for i, size in enumerate(self.sizes)]

    @property
    def sizes(self) -> tuple[int, ...]:
        return layer_sizes(self.hidden, self.embed_dim, self.num_layers)

    def initial_carry(self, batch_size: int):
        return initial_carry(self.cell, batch_size, self.sizes, self.embed_dim)

    def embedding_matrix(self, train: bool) -> jax.Array:
        table_VxE = self.embed.embedding - 0.1
        if train and self.embed_drop:
            keep_Vx1 = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.embed_drop, (self.vocab_size, 1))
            table_VxE = jnp.where(keep_Vx1, table_VxE / (1.0 - self.embed_drop), 0.0)
        return table_VxE

    def __call__(self, tokens_BxT, reset_B, mask_BxT, train: bool = False, carry=None):
        """(last layer's outputs before and after output dropout, BxTxE, new carry)."""
        if carry is None:
            carry = self.initial_carry(tokens_BxT.shape[0])
        carry = rnn.reset_carry(carry, reset_B)
        x = jnp.take(self.embedding_matrix(train), tokens_BxT, axis=0)
        x = variational_dropout(self, x, self.input_drop, train)
        new_carry = []
        for i, layer in enumerate(self.layers):
            x, layer_carry = layer(x, carry[i], mask_BxT, train)
            new_carry.append(layer_carry)
            if i < self.num_layers - 1:
                x = variational_dropout(self, x, self.hidden_drop, train)
        dropped = variational_dropout(self, x, self.output_drop, train)
        return x, dropped, tuple(new_carry)


def layer_sizes(hidden: int, embed_dim: int, num_layers: int) -> tuple[int, ...]:
    """Units per recurrent layer: `hidden`, except the last, which has `embed_dim` (the tied decoder reads it)."""
    return tuple(hidden if i < num_layers - 1 else embed_dim for i in range(num_layers))


def initial_carry(cell: str, batch_size: int, sizes, embed_dim: int):
    """The zero state of the encoder's stack of `cell` layers."""
    if cell == "qrnn":
        return qrnn.zero_carry(batch_size, sizes, embed_dim, first_window=2)
    return rnn.zero_carry("lstm", batch_size, sizes)


def encoder_groups(num_layers: int) -> list[str]:
    """Parameter-path regexes of the encoder's layer groups, input side first (ULMFiT's unfreezing order is
    the reverse)."""
    return ["^encoder/embed/", *[f"^encoder/rnn_{i}/" for i in range(num_layers)]]


class AWDLSTM(nn.Module):
    """The language model: encoder -> tied decoder. Returns ({"logits", "hidden", "hidden_dropped"}, carry)."""
    vocab_size: int
    embed_dim: int = 400
    hidden: int = 1150
    num_layers: int = 3
    embed_drop: float = 0.1
    input_drop: float = 0.6
    hidden_drop: float = 0.3
    weight_drop: float = 0.5
    output_drop: float = 0.4
    cell: str = "lstm"

    def setup(self):
        self.encoder = AWDEncoder(self.vocab_size, self.embed_dim, self.hidden, self.num_layers, self.embed_drop,
                                  self.input_drop, self.hidden_drop, self.weight_drop, self.output_drop, self.cell)
        self.output_bias = self.param("output_bias", nn.initializers.zeros, (self.vocab_size,))

    def __call__(self, tokens_BxT, reset_B, mask_BxT, train: bool = False, carry=None):
        hidden, dropped, carry = self.encoder(tokens_BxT, reset_B, mask_BxT, train, carry)
        logits_BxTxV = dropped @ self.encoder.embedding_matrix(False).T + self.output_bias
        return {"logits": logits_BxTxV, "hidden": hidden, "hidden_dropped": dropped}, carry

    def initial_carry(self, batch_size: int):
        return initial_carry(self.cell, batch_size, layer_sizes(self.hidden, self.embed_dim, self.num_layers),
                             self.embed_dim)


def concat_pool(hidden_BxTxE, last_BxE, mask_BxT) -> jax.Array:
    """fastai's concat pooling over the real positions: [last, max, mean] -> Bx3E. Padding changes none of them."""
    mask_BxTx1 = mask_BxT[..., None]
    max_BxE = jnp.max(jnp.where(mask_BxTx1, hidden_BxTxE, -jnp.inf), axis=1)
    mean_BxE = jnp.sum(hidden_BxTxE * mask_BxTx1, axis=1) / jnp.maximum(jnp.sum(mask_BxTx1, axis=1), 1.0)
    return jnp.concatenate([last_BxE, max_BxE, mean_BxE], axis=-1)


class WindowedEncoder(AWDEncoder):
    """The encoder read one BPTT window at a time under `nn.scan` (BPT3C): the recurrent state is carried from
    window to window and the concat-pooling statistics (running max, sum and count of the dropped outputs over
    real positions) are accumulated, so a document longer than the window is pooled over all of it. Its
    parameters are AWDEncoder's, at the same paths."""
    train: bool = False

    def __call__(self, state, window):
        carry, max_BxE, sum_BxE, count_Bx1 = state
        tokens_BxW, mask_BxW = window
        no_reset_B = jnp.zeros(tokens_BxW.shape[0], bool)  # the first window starts from the zero carry
        _, dropped, carry = super().__call__(tokens_BxW, no_reset_B, mask_BxW, self.train, carry)
        mask_BxWx1 = mask_BxW[..., None]
        max_BxE = jnp.maximum(max_BxE, jnp.max(jnp.where(mask_BxWx1, dropped, -jnp.inf), axis=1))
        sum_BxE = sum_BxE + jnp.sum(dropped * mask_BxWx1, axis=1)
        count_Bx1 = count_Bx1 + jnp.sum(mask_BxWx1, axis=1)
        return (carry, max_BxE, sum_BxE, count_Bx1), None


def windows(tokens_BxT, mask_BxT, window: int):
    """(tokens BxNxW, mask BxNxW): the sequence cut into N = ceil(T / window) windows, the last one padded
    (xxpad = 1, masked)."""
    B, T = tokens_BxT.shape
    N = -(-T // window)
    pad = N * window - T
    tokens_BxT = jnp.pad(tokens_BxT, ((0, 0), (0, pad)), constant_values=1)
    mask_BxT = jnp.pad(mask_BxT, ((0, 0), (0, pad)), constant_values=False)
    return tokens_BxT.reshape(B, N, window), mask_BxT.reshape(B, N, window)


class TextClassifier(nn.Module):
    """ULMFiT's classifier: the AWD-LSTM encoder read over each document, concat pooling, and fastai's head
    (BatchNorm, dropout, Linear, ReLU; BatchNorm, dropout, Linear). Called as
    `apply(variables, tokens_BxT, mask_BxT, train=...)` -> logits BxC.

    `bptt` > 0: BPT3C (fastai's classifier reading): the document is read in windows of `bptt` tokens with the
    state carried and pooled over all of it (`WindowedEncoder`), the same result as one pass outside training,
    with dropout masks drawn per window as fastai does. 0: one pass over the whole padded length."""
    vocab_size: int
    num_classes: int
    embed_dim: int = 400
    hidden: int = 1150
    num_layers: int = 3
    embed_drop: float = 0.05
    input_drop: float = 0.25
    hidden_drop: float = 0.15
    weight_drop: float = 0.2
    output_drop: float = 0.1
    head_hidden: int = 50
    head_drops: Sequence[float] = (0.2, 0.1)
    cell: str = "lstm"
    bptt: int = 0

    @nn.compact
    def __call__(self, tokens_BxT, mask_BxT, train: bool = False):
        sizes = (self.vocab_size, self.embed_dim, self.hidden, self.num_layers, self.embed_drop, self.input_drop,
                 self.hidden_drop, self.weight_drop, self.output_drop, self.cell)
        if self.bptt > 0:
            x = self.pool_windows(sizes, tokens_BxT, mask_BxT, train)
        else:
            encoder = AWDEncoder(*sizes, name="encoder")
            reset_B = jnp.ones(tokens_BxT.shape[0], bool)
            hidden, dropped, carry = encoder(tokens_BxT, reset_B, mask_BxT, train)
            del hidden
            last_BxE = carry[-1][0]  # the state after each document's last real token (padding leaves it)
            x = concat_pool(dropped, last_BxE, mask_BxT)
        for i, (width, drop) in enumerate(zip((self.head_hidden, self.num_classes), self.head_drops)):
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"head_bn_{i}")(x)
            x = nn.Dropout(drop)(x, deterministic=not train)
            x = nn.Dense(width, name=f"head_dense_{i}")(x)
            if i == 0:
                x = nn.relu(x)
        return x

    def pool_windows(self, sizes, tokens_BxT, mask_BxT, train: bool) -> jax.Array:
        """BPT3C: [last, max, mean] (Bx3E) over the whole document, read window by window."""
        scan = nn.scan(WindowedEncoder, variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                       in_axes=1, out_axes=1)
        encoder = scan(*sizes, train=train, name="encoder")
        B, E = tokens_BxT.shape[0], self.embed_dim
        state = (initial_carry(self.cell, B, layer_sizes(self.hidden, E, self.num_layers), E),
                 jnp.full((B, E), -jnp.inf), jnp.zeros((B, E)), jnp.zeros((B, 1)))
        (carry, max_BxE, sum_BxE, count_Bx1), _ = encoder(state, windows(tokens_BxT, mask_BxT, self.bptt))
        return jnp.concatenate([carry[-1][0], max_BxE, sum_BxE / jnp.maximum(count_Bx1, 1.0)], axis=-1)

    def layer_groups(self) -> list[str]:
        return [*encoder_groups(self.num_layers), "^head_"]
