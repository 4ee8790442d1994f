"""Language-model batches: the token stream (documents already concatenated) cut into B parallel rows, read
left to right in windows of about `bptt` tokens, so a row's recurrent state carries from one window to the
next (truncated backpropagation through time).

Window lengths vary at random (fastai's variable BPTT, so that the cut points move from epoch to epoch): the
k-th boundary of epoch e is k * bptt + u_k with u_k drawn uniformly from [-jitter, jitter] (u = 0 at the two
ends), from fold_in(seed, e). A window is padded to the fixed length bptt + 2 * jitter (jit compiles once) and
`token_mask` marks its real positions. Every target token of a row is predicted exactly once per epoch. The
first window of each epoch has `reset` set: the model starts its rows from a zero state there.

The batch for global step t is a pure function of (seed, t), computed on the device from the rows held there
(see research/core/arrays.py for why), so resume is exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from research.core import sharding
from research.core.errors import InputError


def stream_rows(ids_N: np.ndarray, num_rows: int) -> np.ndarray:
    """The token stream cut into `num_rows` contiguous rows of equal length (the tail that does not fill a row
    is dropped): num_rows x (N // num_rows)."""
    length = len(ids_N) // num_rows
    if length < 2:
        raise InputError(f"the token stream ({len(ids_N)} tokens) is too short for {num_rows} rows")
    return np.asarray(ids_N[:num_rows * length], np.int32).reshape(num_rows, length)


class LMStream:
    """Batches {"input": BxW, "target": BxW (the next tokens), "token_mask": BxW, "reset": B} with
    W = bptt + 2 * jitter."""

    def __init__(self, ids_N: np.ndarray, batch_size: int, bptt: int, mesh: Mesh, seed: int, jitter: int = 0):
        sharding.check_batch_divides(batch_size, mesh)
        if not 0 <= 2 * jitter < bptt:
            raise InputError(f"bptt jitter must be in [0, bptt / 2): got jitter={jitter}, bptt={bptt}")
        rows_BxL = stream_rows(ids_N, batch_size)
        self.steps_per_epoch = (rows_BxL.shape[1] - 1) // bptt
        if self.steps_per_epoch < 1:
            raise InputError(f"the token stream ({len(ids_N)} tokens) is too short for {batch_size} rows of "
                             f"bptt={bptt}")
        rows_BxL = rows_BxL[:, :self.steps_per_epoch * bptt + 1]
        self.rows = sharding.host_to_global(rows_BxL, sharding.replicated(mesh))
        self.batch_size, self.bptt, self.jitter, self.window = batch_size, bptt, jitter, bptt + 2 * jitter
        self._seed = seed
        self._window = jax.jit(self._window_of, out_shardings=sharding.batch_sharded(mesh))

    def boundaries(self, epoch, stream=0) -> jax.Array:
        """The steps_per_epoch + 1 window boundaries of `epoch` (positions in a row)."""
        S = self.steps_per_epoch
        bounds = jnp.arange(S + 1) * self.bptt
        if self.jitter:
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self._seed), stream), epoch)
            shifts = jax.random.randint(key, (S + 1,), -self.jitter, self.jitter + 1)
            bounds = bounds + shifts.at[0].set(0).at[S].set(0)
        return bounds

    def batch(self, step: int) -> dict[str, jax.Array]:
        return self.batch_traceable(step)

    def batch_traceable(self, step, stream=0) -> dict[str, jax.Array]:
        """Step `step`'s batch with jax ops only (`step` may be traced); `stream` > 0 draws other cut points."""
        return self._window(self.rows, jnp.asarray(step), jnp.asarray(stream))

    def _window_of(self, rows_BxL, step, stream):
        epoch, index = jnp.divmod(step, self.steps_per_epoch)
        bounds = self.boundaries(epoch, stream)
        start, end = bounds[index], bounds[index + 1]
        positions_W = start + jnp.arange(self.window)
        last = rows_BxL.shape[1] - 1
        return {"input": rows_BxL[:, jnp.minimum(positions_W, last)],
                "target": rows_BxL[:, jnp.minimum(positions_W + 1, last)],
                "token_mask": jnp.broadcast_to(positions_W < end, (self.batch_size, self.window)),
                "reset": jnp.full((self.batch_size,), index == 0)}


def eval_windows(ids_N: np.ndarray, num_rows: int, window: int):
    """Held-out text as num_rows rows read in windows of `window` tokens, in order (the last one padded):
    yields {"input", "target", "token_mask"} numpy batches; the caller carries the state across them."""
    rows_BxL = stream_rows(ids_N, num_rows)
    length = rows_BxL.shape[1] - 1  # predicted positions per row
    for start in range(0, length, window):
        positions_W = start + np.arange(window)
        valid_W = positions_W < length
        yield {"input": rows_BxL[:, np.minimum(positions_W, length - 1)],
               "target": rows_BxL[:, np.minimum(positions_W + 1, length)],
               "token_mask": np.broadcast_to(valid_W, (num_rows, window)).copy()}

