"""BPT3C (research/text/awd_lstm.TextClassifier with `bptt`): a document read in windows with the state carried
is pooled over all of it, and gives what one pass over the whole document gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.text import padded_text
from research.text.awd_lstm import TextClassifier

SIZES = dict(embed_dim=8, hidden=12, num_layers=3)


def documents(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [np.concatenate([[2], rng.integers(3, 60, n - 1)]).astype(np.int32) for n in lengths]


def classifier_logits(bptt: int, variables, docs, max_len: int, cell: str = "lstm"):
    model = TextClassifier(60, 3, **SIZES, cell=cell, bptt=bptt)
    tokens_NxL, _ = padded_text.pad_documents(docs, max_len)
    return np.asarray(jax.jit(model.apply)(variables, tokens_NxL, tokens_NxL != 1))


@pytest.fixture(scope="module", params=["lstm", "qrnn"])
def variables_and_cell(request):
    model = TextClassifier(60, 3, **SIZES, cell=request.param)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.ones((2, 4), jnp.int32), jnp.ones((2, 4), bool))
    return variables, request.param


def test_one_window_equals_pooling_the_whole_document(variables_and_cell):
    variables, cell = variables_and_cell
    docs = documents([5, 17, 9, 2])
    whole = classifier_logits(0, variables, docs, 20, cell)
    np.testing.assert_allclose(classifier_logits(32, variables, docs, 20, cell), whole, atol=1e-5)


def test_long_documents_read_in_windows_equal_one_long_pass(variables_and_cell):
    variables, cell = variables_and_cell
    docs = documents([45, 7, 31, 16])  # several windows of 6, a short one ending in the first window
    whole = classifier_logits(0, variables, docs, 48, cell)
    np.testing.assert_allclose(classifier_logits(6, variables, docs, 48, cell), whole, atol=1e-5)
    np.testing.assert_allclose(classifier_logits(6, variables, docs, 60, cell), whole, atol=1e-5)  # more padding
    first_window_only = classifier_logits(0, variables, [d[:6] for d in docs], 6, cell)
    assert not np.allclose(first_window_only[0], whole[0], atol=1e-3)  # the later windows count


def test_windowed_classifier_has_the_same_parameters_and_trains_with_dropout():
    plain = TextClassifier(60, 3, **SIZES)
    windowed = TextClassifier(60, 3, **SIZES, bptt=5, embed_drop=0.1, input_drop=0.2, weight_drop=0.3)
    tokens_BxT, mask_BxT = jnp.full((2, 13), 7, jnp.int32), jnp.ones((2, 13), bool)
    v_plain = jax.eval_shape(plain.init, jax.random.key(0), tokens_BxT, mask_BxT)
    v_windowed = jax.jit(windowed.init)(jax.random.key(0), tokens_BxT, mask_BxT)
    assert jax.tree.map(jnp.shape, v_plain) == jax.tree.map(jnp.shape, v_windowed)  # an LM's encoder loads as is
    apply = jax.jit(lambda rng: windowed.apply(v_windowed, tokens_BxT, mask_BxT, train=True, rngs={"dropout": rng},
                                               mutable=["batch_stats"])[0])
    assert not np.allclose(apply(jax.random.key(0)), apply(jax.random.key(1)))
