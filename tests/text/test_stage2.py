"""ULMFiT's stage 2 from its parts, on real fortunes: a small language model pretrained on some topics, moved onto
another topic's vocabulary (research/text/pretrained_lm.for_vocab), starts that topic well below a fresh model
and a few fine-tuning steps lower its loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.core import sharding, steps
from research.core.train_state import TrainState
from research.text import fortunes, language_model, pretrained_lm, tokens, wt103
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


def test_transferred_language_model_starts_ahead_and_fine_tunes():
    source_stream, source_vocab = topic_stream(["computers", "science"])
    batch = source_stream.batch(0)
    init = jax.jit(MODEL.init)
    source_params, _ = train(init(jax.random.key(0), batch["input"], batch["reset"], batch["token_mask"])["params"],
                             map(source_stream.batch, range(30)))
    pretrained = wt103.Pretrained(source_vocab, {k: SIZES[k] for k in ("embed_dim", "hidden", "num_layers")},
                                  jax.device_get(source_params))

    target_stream, target_vocab = topic_stream(["work"])
    assert len(source_vocab) == len(target_vocab) == 1000
    moved = pretrained_lm.for_vocab(pretrained, target_vocab)
    assert moved.known > 0.5 * len(target_vocab) and moved.new > 0
    fresh = init(jax.random.key(1), batch["input"], batch["reset"], batch["token_mask"])["params"]
    start_moved = held_out_loss(moved.params, target_stream, 20)
    start_fresh = held_out_loss(fresh, target_stream, 20)
    assert start_moved < start_fresh - 0.7, (start_moved, start_fresh)

    fixed = target_stream.batch(0)  # a few steps on one real batch of the target text: its loss falls
    _, losses = train(jax.tree.map(jnp.asarray, moved.params), [fixed] * 8)
    assert losses[-1] < losses[0] - 0.3, losses
