"""ULMFiT's stage 2 from its parts, on real fortunes: a small language model pretrained on some topics, moved onto
another topic's vocabulary (research/text/pretrained_lm.for_vocab), starts that topic well below a fresh model
and a few fine-tuning steps lower its loss; research/text/lm_finetune.fine_tune (stage 2 as a run does it) lowers
the perplexity of held-out texts of that topic, and ends below the same fine-tuning from a fresh model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.core import sharding, steps
from research.core.train_state import TrainState
from research.text import fortunes, language_model, lm_finetune, pretrained_lm, tokens, wt103
from research.text.awd_lstm import AWDLSTM
from research.text.lm_stream import LMStream

SIZES = dict(embed_dim=24, hidden=48, num_layers=2, embed_drop=0.0, input_drop=0.1, hidden_drop=0.1,
             weight_drop=0.1, output_drop=0.1)
B, T = 16, 20


def topic_stream(topics, vocab=None):
    docs = [tokens.tokenize(t) for topic in topics for t in fortunes.read_fortunes(fortunes.topic_files()[topic])]
    vocab = vocab or tokens.Vocab.build(docs, max_size=1000, min_freq=2)
    ids = np.concatenate([vocab.numericalize(d) for d in docs])
    return LMStream(ids, B, T, sharding.make_mesh(1), seed=0), vocab


# One compilation of each for both sides: both vocabularies hold 1000 tokens, so one model and one optimizer.
MODEL = AWDLSTM(1000, **SIZES)
TRAIN_STEP = jax.jit(steps.make_train_step(language_model.task()))
ADAM = optax.adam(1e-2)


def train(params, batches):
    state = TrainState.create(apply_fn=MODEL.apply, params=params, batch_stats={}, tx=ADAM,
                              carry=MODEL.initial_carry(B))
    state = state.replace(step=jnp.asarray(0))  # the step counter as the train step returns it: one compilation
    losses = []
    for step, batch in enumerate(batches):
        state, metrics = TRAIN_STEP(state, batch, jax.random.key(step))
        losses.append(float(metrics["loss"] / metrics["count"]))
    return state.params, losses


@jax.jit
def window_loss(params, batch):
    outputs = MODEL.apply({"params": params}, batch["input"], batch["reset"], batch["token_mask"],
                          carry=MODEL.initial_carry(B))[0]
    summed = language_model.summed_metrics(outputs, batch)
    return summed["loss"] / summed["count"]


def held_out_loss(params, stream, steps_from, count=4):
    """Mean loss of `params` (no training) on `count` windows of the stream starting at step `steps_from`."""
    return float(np.mean([window_loss(params, stream.batch(step)) for step in range(steps_from, steps_from + count)]))


@pytest.fixture(scope="module")
def pretrained() -> wt103.Pretrained:
    """A language model after 30 steps on two topics (computers, science)."""
    source_stream, source_vocab = topic_stream(["computers", "science"])
    batch = source_stream.batch(0)
    params = jax.jit(MODEL.init)(jax.random.key(0), batch["input"], batch["reset"], batch["token_mask"])["params"]
    source_params, _ = train(params, map(source_stream.batch, range(30)))
    return wt103.Pretrained(source_vocab, {k: SIZES[k] for k in ("embed_dim", "hidden", "num_layers")},
                            jax.device_get(source_params))


def test_transferred_language_model_starts_ahead_and_fine_tunes(pretrained):
    init = jax.jit(MODEL.init)

    target_stream, target_vocab = topic_stream(["work"])
    batch = target_stream.batch(0)
    assert len(pretrained.vocab) == len(target_vocab) == 1000
    moved = pretrained_lm.for_vocab(pretrained, target_vocab)
    assert moved.known > 0.5 * len(target_vocab) and moved.new > 0
    fresh = init(jax.random.key(1), batch["input"], batch["reset"], batch["token_mask"])["params"]
    start_moved = held_out_loss(moved.params, target_stream, 20)
    start_fresh = held_out_loss(fresh, target_stream, 20)
    assert start_moved < start_fresh - 0.7, (start_moved, start_fresh)

    fixed = target_stream.batch(0)  # a few steps on one real batch of the target text: its loss falls
    _, losses = train(jax.tree.map(jnp.asarray, moved.params), [fixed] * 8)
    assert losses[-1] < losses[0] - 0.3, losses


def test_stage_two_lowers_the_target_perplexity_and_ends_below_a_fresh_start(pretrained, tmp_path):
    from experiments import fortunes_classifier
    config = fortunes_classifier.get_config()
    config.lm_finetune.update(epochs=1, learning_rate=3e-3, batch_size=16, bptt=20, vocab_size=1000, min_freq=2)
    config.eval_batch_size = 16
    texts = fortunes.read_fortunes(fortunes.topic_files()["work"])
    train_texts, valid_texts = texts[:-60], texts[-60:]
    vocab = lm_finetune.target_vocab(train_texts, 1000, 2)
    mesh = sharding.make_mesh(1)
    tuned = lm_finetune.fine_tune(config, train_texts, valid_texts, vocab, SIZES, pretrained, mesh,
                                  str(tmp_path / "pretrained")).metrics
    fresh = lm_finetune.fine_tune(config, train_texts, valid_texts, vocab, SIZES, None, mesh,
                                  str(tmp_path / "fresh")).metrics
    assert tuned["known_tokens"] > 0.5 * len(vocab) and "known_tokens" not in fresh
    assert tuned["before_valid_perplexity"] < 0.5 * fresh["before_valid_perplexity"], (tuned, fresh)
    assert tuned["after_valid_perplexity"] < 0.9 * tuned["before_valid_perplexity"], tuned
    assert tuned["after_valid_perplexity"] < fresh["after_valid_perplexity"], (tuned, fresh)
