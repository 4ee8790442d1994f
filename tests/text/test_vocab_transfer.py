"""Vocabulary transfer (research/text/vocab_transfer.py) on hand-made vocabularies: known tokens keep their
rows and output biases, new ones get the means, and the moved model predicts the known tokens as before."""

import jax
import jax.numpy as jnp
import numpy as np

from research.text.awd_lstm import AWDLSTM
from research.text.vocab_transfer import transfer_vocab

OLD = ["xxunk", "xxpad", "xxbos", "the", "cat", "sat", "mat"]
NEW = ["xxunk", "xxpad", "xxbos", "mat", "dog", "the", "cat", "ran"]


def old_model_params():
    model = AWDLSTM(len(OLD), embed_dim=6, hidden=10, num_layers=2)
    tokens_BxT = jnp.zeros((1, 3), jnp.int32)
    params = model.init(jax.random.key(0), tokens_BxT, jnp.ones(1, bool), jnp.ones((1, 3), bool))["params"]
    bias = jnp.arange(len(OLD), dtype=jnp.float32) * 0.5 - 1.0  # distinct biases, to see where each goes
    return jax.device_get({**params, "output_bias": bias})


def test_known_tokens_keep_rows_and_new_ones_get_the_means():
    params = old_model_params()
    moved = transfer_vocab(params, OLD, NEW)
    assert (moved.known, moved.new) == (6, 2)
    old_E, new_E = params["encoder"]["embed"]["embedding"], moved.params["encoder"]["embed"]["embedding"]
    old_b, new_b = params["output_bias"], moved.params["output_bias"]
    assert new_E.shape == (len(NEW), 6) and new_b.shape == (len(NEW),)
    for i, token in enumerate(NEW):
        if token in OLD:
            np.testing.assert_array_equal(new_E[i], old_E[OLD.index(token)])
            assert new_b[i] == old_b[OLD.index(token)]
        else:
            np.testing.assert_allclose(new_E[i], old_E.mean(0), rtol=1e-6)
            np.testing.assert_allclose(new_b[i], old_b.mean(), rtol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, moved.params["encoder"]["rnn_1"], params["encoder"]["rnn_1"])


def test_the_moved_model_scores_known_tokens_as_before():
    """The same text (known tokens only) through the old model with old ids and the new model with new ids:
    each known token's logit is unchanged."""
    params = old_model_params()
    moved = transfer_vocab(params, OLD, NEW).params
    text = ["xxbos", "the", "cat", "sat", "mat"]
    text = [t for t in text if t in NEW]
    old_ids = jnp.asarray([[OLD.index(t) for t in text]])
    new_ids = jnp.asarray([[NEW.index(t) for t in text]])
    run = lambda vocab, p, ids: AWDLSTM(len(vocab), embed_dim=6, hidden=10, num_layers=2).apply(
        {"params": p}, ids, jnp.ones(1, bool), jnp.ones(ids.shape, bool))[0]["logits"][0]
    old_logits, new_logits = run(OLD, params, old_ids), run(NEW, moved, new_ids)
    for token in OLD:
        if token in NEW:
            np.testing.assert_allclose(new_logits[:, NEW.index(token)], old_logits[:, OLD.index(token)], atol=1e-5)
