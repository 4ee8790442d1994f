"""Classifier batches of token sequences: padded to a few fixed lengths (buckets) with a mask, documents of
similar length batched together (fastai's sortish sampling), the token matrix held on the device.

Padding goes after the tokens (xxpad = 1) and `token_mask` marks the real ones; the classifier ignores padded
positions (research/text/awd_lstm.py), so the bucket a document lands in never changes its prediction.
Few bucket lengths mean few compilations of the train step. The batch for step t is a pure function of
(seed, t): epoch e's order comes from numpy's generator seeded with (seed, e).
"""

import jax
import numpy as np
from jax.sharding import Mesh

from research.core import sharding
from research.core.errors import InputError
from research.text.tokens import PAD_ID


def pad_documents(docs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens NxL, lengths N): each document cut to its first max_len tokens and padded with xxpad."""
    lengths = np.asarray([min(len(d), max_len) for d in docs], np.int32)
    tokens = np.full((len(docs), max_len), PAD_ID, np.int32)
    for i, doc in enumerate(docs):
        tokens[i, :lengths[i]] = doc[:max_len]
    return tokens, lengths


def length_buckets(lengths, multiple: int, max_tokens: int = 0,
                   quantiles=(0.5, 0.9, 0.99, 1.0)) -> tuple[int, ...]:
    """Padded lengths from the documents' own: the `quantiles` of `lengths` (the last, 1.0, is the longest
    document, so none is cut), each rounded up to a multiple of `multiple` (BPT3C's window), and with
    `max_tokens` > 0 none above it. A few lengths: a few compilations, little padding."""
    lengths = np.asarray(lengths)
    if not len(lengths):
        raise InputError("no documents to choose padded lengths from")
    if max_tokens > 0:
        lengths = np.minimum(lengths, max_tokens)
    picks = np.quantile(lengths, quantiles, method="higher")
    rounded = {max(multiple, -(-int(p) // multiple) * multiple) for p in picks}
    if max_tokens > 0:
        rounded = {min(b, max_tokens) for b in rounded}
    return tuple(sorted(rounded))


def bucket_length(lengths, buckets) -> int:
    """The smallest bucket that holds the longest of `lengths`."""
    longest = int(np.max(lengths))
    return next(b for b in sorted(buckets) if b >= longest)


class BucketedBatches:
    """Training batches {"tokens": BxL, "token_mask": BxL, "label": B}, L one of `buckets`."""

    def __init__(self, docs: list[np.ndarray], labels: np.ndarray, batch_size: int, buckets, mesh: Mesh,
                 seed: int, sort_chunk: int = 20):
        sharding.check_batch_divides(batch_size, mesh)
        if len(docs) < batch_size:
            raise InputError(f"batch_size={batch_size} is larger than the dataset ({len(docs)} documents)")
        self.buckets = tuple(sorted(buckets))
        tokens, self.lengths = pad_documents(docs, self.buckets[-1])
        self.tokens = sharding.host_to_global(tokens, sharding.replicated(mesh))
        self.labels = sharding.host_to_global(np.asarray(labels, np.int32), sharding.replicated(mesh))
        self.batch_size, self.seed, self.sort_chunk = batch_size, seed, sort_chunk
        self.steps_per_epoch = len(docs) // batch_size
        self._epoch, self._batches = -1, None
        self._gather = jax.jit(_gather, static_argnums=3, out_shardings=sharding.batch_sharded(mesh))

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Row indices of each batch of `epoch`: shuffled, sorted by length within chunks of sort_chunk
        batches, then the batches shuffled (the last partial batch dropped)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        chunk = self.batch_size * self.sort_chunk
        order = np.concatenate([part[np.argsort(-self.lengths[part], kind="stable")]
                                for part in np.split(order, range(chunk, len(order), chunk))])
        batches = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.steps_per_epoch)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def batch(self, step: int) -> dict:
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self.epoch_batches(epoch)
        rows = self._batches[index]
        return self._gather(self.tokens, self.labels, rows, bucket_length(self.lengths[rows], self.buckets))


def _gather(tokens_NxL, labels_N, rows_B, length: int) -> dict:
    tokens_BxL = tokens_NxL[rows_B, :length]
    return {"tokens": tokens_BxL, "token_mask": tokens_BxL != PAD_ID, "label": labels_N[rows_B]}


def eval_batches(docs: list[np.ndarray], labels: np.ndarray, batch_size: int, buckets):
    """Evaluation batches (numpy) of exactly batch_size rows, documents in length order, each batch padded to
    its bucket; `mask` marks real rows (the last batch is padded with empty rows) and `index` their position
    in `docs`."""
    tokens, lengths = pad_documents(docs, max(buckets))
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        real = len(rows)
        rows_B = np.concatenate([rows, np.full(batch_size - real, rows[0])])
        length = bucket_length(lengths[rows], buckets)
        batch_tokens = tokens[rows_B, :length]
        yield {"tokens": batch_tokens, "token_mask": batch_tokens != PAD_ID,
               "label": np.asarray(labels, np.int32)[rows_B],
               "mask": np.arange(batch_size) < real, "index": rows_B}
