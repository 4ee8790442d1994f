"""The language models' baseline: an interpolated Kneser-Ney n-gram model (Chen & Goodman's interpolated KN with
one absolute discount per order, D = n1 / (n1 + 2 n2)), over any token ids (characters or words).

  P_k(w | h) = (max(c_k(h w) - D_k, 0) + D_k * N1+(h .) * P_{k-1}(w | h')) / c_k(h)    (P_{k-1} if c_k(h) = 0)

where c_k are raw counts at the highest order and continuation counts (the number of distinct tokens seen
before the n-gram) below it, and P_0 is uniform over the vocabulary, so every token, unseen ones included, has
a probability. Counting and scoring are vectorised with numpy: n-grams are int64 keys sum(id_i * V^i).
"""

import numpy as np

from research.core.errors import InputError


def _gram_keys(ids_N: np.ndarray, vocab_size: int, order: int) -> list[np.ndarray]:
    """keys[k - 1][t]: the k-gram ending at position t as an int64 (valid for t >= k - 1; earlier ones are -1)."""
    ids = np.asarray(ids_N, np.int64)
    keys, current = [], ids.copy()
    for k in range(1, order + 1):
        if k > 1:
            current = np.concatenate([np.full(1, -1, np.int64), np.where(current[:-1] >= 0,
                                                                          current[:-1] * vocab_size, -1)])
            current = np.where(current >= 0, current + ids, -1)
        keys.append(current.copy())
    return keys


class _Table:
    """Sorted n-gram keys with their counts, and per context (key // V): total count and number of types."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, vocab_size: int):
        self.keys, self.counts = keys, counts.astype(np.float64)
        contexts = keys // vocab_size
        self.context_keys, first = np.unique(contexts, return_index=True)
        self.context_totals = np.add.reduceat(self.counts, first)
        self.context_types = np.diff(np.append(first, len(keys))).astype(np.float64)
        n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
        self.discount = float(n1 / (n1 + 2 * n2)) if n1 + n2 else 0.5

    @staticmethod
    def _lookup(table_keys, values, query):
        index = np.clip(np.searchsorted(table_keys, query), 0, max(len(table_keys) - 1, 0))
        found = (table_keys[index] == query) if len(table_keys) else np.zeros(len(query), bool)
        return np.where(found, values[index] if len(values) else 0.0, 0.0)

    def count(self, query):
        return self._lookup(self.keys, self.counts, query)

    def context(self, query):
        return self._lookup(self.context_keys, self.context_totals, query), \
            self._lookup(self.context_keys, self.context_types, query)


class KneserNey:
    """An order-n interpolated Kneser-Ney model fitted on one token stream of ids in [0, vocab_size)."""

    def __init__(self, ids_N: np.ndarray, vocab_size: int, order: int):
        if order < 1:
            raise InputError(f"n-gram order must be >= 1, got {order}")
        if float(vocab_size) ** order >= 2.0 ** 62:
            raise InputError(f"n-gram order {order} is too large for a vocabulary of {vocab_size} (int64 keys)")
        self.vocab_size, self.order = vocab_size, order
        keys = _gram_keys(ids_N, vocab_size, order)
        self.tables = []
        for k in range(1, order + 1):
            if k == order:  # raw counts
                grams, counts = np.unique(keys[k - 1][keys[k - 1] >= 0], return_counts=True)
            else:  # continuation counts: distinct (k+1)-grams per k-gram suffix
                longer = np.unique(keys[k][keys[k] >= 0])
                grams, counts = np.unique(longer % vocab_size ** k, return_counts=True)
            self.tables.append(_Table(grams, counts, vocab_size))

    def token_losses(self, ids_M: np.ndarray) -> np.ndarray:
        """-log P(ids[t] | ids[:t]) in nats for t = 1 .. M-1 (the first token is context only)."""
        keys = _gram_keys(ids_M, self.vocab_size, self.order)
        V = self.vocab_size
        p = np.full(len(ids_M), 1.0 / V)
        for k, table in enumerate(self.tables, start=1):
            gram = keys[k - 1]
            valid = gram >= 0
            context = np.where(valid, gram // V, -1)
            total, types = table.context(context)
            c = table.count(gram)
            use = valid & (total > 0)
            D = table.discount
            interpolated = (np.maximum(c - D, 0.0) + D * types * p) / np.where(use, total, 1.0)
            p = np.where(use, interpolated, p)
        return -np.log(p[1:])

    def loss(self, ids_M: np.ndarray) -> float:
        """Mean held-out loss in nats per token."""
        return float(np.mean(self.token_losses(ids_M)))


def best_order(train_ids: np.ndarray, valid_ids: np.ndarray, vocab_size: int, orders) -> tuple[int, dict]:
    """The order with the lowest validation loss, and {order: validation loss}."""
    losses = {int(n): KneserNey(train_ids, vocab_size, int(n)).loss(valid_ids) for n in orders}
    return min(losses, key=losses.get), losses
