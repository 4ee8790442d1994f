"""The lesson-6 character model: embedding -> a stack of LSTM (or GRU, or QRNN) layers -> a linear layer to the
next character's logits, with the recurrent state carried from one window to the next. The QRNN
(research/text/qrnn.py) reads a window of 2 characters on its first layer, 1 on the others, as fastai's does.

Called as `model.apply(variables, tokens_BxT, reset_B, mask_BxT, train=..., carry=carry)` and returns
({"logits": BxTxV}, new carry); the carry is reset (zeroed) on the rows where reset_B.
"""

from typing import Sequence

import flax.linen as nn

from research.text import qrnn, rnn


class CharRNN(nn.Module):
    vocab_size: int
    embed_dim: int = 64
    hidden_sizes: Sequence[int] = (512, 512)
    cell: str = "lstm"  # or "gru", "qrnn"
    dropout: float = 0.0  # between layers and before the output layer

    @nn.compact
    def __call__(self, tokens_BxT, reset_B, mask_BxT, train: bool = False, carry=None):
        if carry is None:
            carry = self.initial_carry(tokens_BxT.shape[0])
        carry = rnn.reset_carry(carry, reset_B)
        x = nn.Embed(self.vocab_size, self.embed_dim)(tokens_BxT)
        new_carry = []
        for i, hidden in enumerate(self.hidden_sizes):
            if self.cell == "qrnn":
                layer = qrnn.QRNN(hidden, window=2 if i == 0 else 1, name=f"rnn_{i}")
            else:
                layer = {"lstm": rnn.LSTM, "gru": rnn.GRU}[self.cell](hidden, name=f"rnn_{i}")
            x, layer_carry = layer(x, carry[i], mask_BxT, train)
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
            new_carry.append(layer_carry)
        logits_BxTxV = nn.Dense(self.vocab_size, name="output")(x)
        return {"logits": logits_BxTxV}, tuple(new_carry)

    def initial_carry(self, batch_size: int):
        if self.cell == "qrnn":
            return qrnn.zero_carry(batch_size, self.hidden_sizes, self.embed_dim, first_window=2)
        return rnn.zero_carry(self.cell, batch_size, self.hidden_sizes)

    def layer_groups(self) -> list[str]:
        """Parameter-path regexes from input to output."""
        return ["^Embed", *[f"^rnn_{i}/" for i in range(len(self.hidden_sizes))], "^output"]

