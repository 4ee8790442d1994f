"""fastai's classifier head for a pretrained body: concat pooling, then BatchNorm -> dropout -> linear blocks.

Pooling both the maximum and the average of the body's last feature map keeps more of what the body found
than the average alone (fastai's `AdaptiveConcatPool2d`). Each linear layer is preceded by BatchNorm and
dropout; hidden layers use ReLU and half the final dropout rate, as fastai's `create_head` does.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from research.core.init import he_normal_fan_in


def concat_pool(features_BxHxWxC: jnp.ndarray) -> jnp.ndarray:
    """Global max- and average-pooling, concatenated: BxHxWxC -> Bx2C (max first, as fastai)."""
    return jnp.concatenate([jnp.max(features_BxHxWxC, axis=(1, 2)), jnp.mean(features_BxHxWxC, axis=(1, 2))],
                           axis=-1)


class FastaiHead(nn.Module):
    """concat_pool -> [BN -> dropout(p/2) -> dense -> ReLU] for each hidden width -> BN -> dropout(p) -> dense.

    `__call__(features_BxHxWxC, train) -> logits_BxK`. Dropout draws from the "dropout" rng stream."""
    num_classes: int
    hidden: Sequence[int] = (512,)
    dropout: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features_BxHxWxC, train: bool):
        x = concat_pool(features_BxHxWxC)
        widths = (*self.hidden, self.num_classes)
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            # torch's BatchNorm1d momentum 0.1 is flax's 0.9.
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                             name=f"bn{i}")(x)
            x = nn.Dropout(self.dropout if last else self.dropout / 2, deterministic=not train)(x)
            x = nn.Dense(width, kernel_init=he_normal_fan_in, dtype=self.dtype, name=f"dense{i}")(x)
            if not last:
                x = nn.relu(x)
        return x.astype(jnp.float32)
