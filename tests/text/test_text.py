"""The NLP area on real text (the Debian `fortunes` package): character vocabulary, the BPTT stream, the
recurrent carry, dropout only in training, the n-gram baseline, sampling, and real training steps (the char-RNN command
runs end to end in tests/test_experiments.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.core import sharding, steps
from research.core.errors import InputError
from research.core.train_state import TrainState
from research.text import (classifier as text_classifier, documents as text, fortunes, language_model, lm_tokens,
                           ngram, padded_text, rnn, tokens)
from research.text.awd_lstm import AWDLSTM, TextClassifier
from research.text.char_rnn import CharRNN
from research.text.lm_stream import eval_windows, LMStream
from research.text.padded_text import BucketedBatches


@pytest.fixture(scope="module")
def fortune_texts():
    return fortunes.read_fortunes(fortunes.topic_files()["science"])


def test_fortune_files_are_split_into_clean_texts(fortune_texts):
    assert len(fortune_texts) == 625  # "%" lines in the science file
    assert all(text_.strip() and "\b" not in text_ and not text_.startswith("%") for text_ in fortune_texts)
    split = fortunes.lm_split(seed=0)
    train, valid, test = map(set, split)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert len(split.test) == round(0.1 * (len(split.train) + len(split.valid) + len(split.test)))


def test_char_vocab_round_trip_with_unseen_characters(tmp_path):
    vocab = text.CharVocab.build(["Hello, wörld!\n", "", "Ünïcode ☃\n"])
    assert vocab.decode(vocab.encode("Hello ☃ wörld\n")) == "Hello ☃ wörld\n"
    assert vocab.encode("z€").tolist() == [0, 0]  # unseen characters -> id 0
    assert vocab.decode(vocab.encode("z")) == text.UNKNOWN_CHAR
    assert vocab.encode("").shape == (0,)
    vocab.save(str(tmp_path / "vocab.json"))
    assert text.CharVocab.load(str(tmp_path / "vocab.json")) == vocab
    assert text.join_documents(["a", "b\n"]) == "a\n%\nb\n%\n"


def test_bptt_stream_covers_every_token_once_per_epoch():
    ids_N = np.arange(4 * 41, dtype=np.int32)  # 4 rows of 41 tokens: 5 windows of ~8
    stream = LMStream(ids_N, batch_size=4, bptt=8, mesh=sharding.make_mesh(1), seed=3, jitter=2)
    assert stream.steps_per_epoch == 5 and stream.window == 12
    rows_BxL = ids_N.reshape(4, 41)
    epochs = []
    for epoch in range(2):
        inputs, targets, lengths = [[] for _ in range(4)], [[] for _ in range(4)], []
        for index in range(5):
            batch = jax.device_get(stream.batch(epoch * 5 + index))
            assert batch["reset"].tolist() == [index == 0] * 4  # a fresh state at the start of each epoch
            mask = batch["token_mask"]
            assert mask[:, :int(mask[0].sum())].all() and not mask[:, int(mask[0].sum()):].any()  # real first
            lengths.append(int(mask[0].sum()))
            for row in range(4):
                inputs[row].extend(batch["input"][row][mask[row]])
                targets[row].extend(batch["target"][row][mask[row]])
        np.testing.assert_array_equal(np.asarray(inputs), rows_BxL[:, :40])  # each row in order, once
        np.testing.assert_array_equal(np.asarray(targets), rows_BxL[:, 1:41])
        assert all(4 <= n <= 12 for n in lengths) and sum(lengths) == 40
        epochs.append(lengths)
    assert epochs[0] != epochs[1]  # the cut points move from epoch to epoch
    again = LMStream(ids_N, 4, 8, sharding.make_mesh(1), seed=3, jitter=2)  # a pure function of (seed, step)
    for step in (0, 7):
        for key, value in jax.device_get(stream.batch(step)).items():
            np.testing.assert_array_equal(value, jax.device_get(again.batch_traceable(jnp.asarray(step)))[key])


def test_eval_windows_predict_each_held_out_token_once():
    windows = list(eval_windows(np.arange(2 * 11), num_rows=2, window=4))
    targets = np.concatenate([w["target"][w["token_mask"]].reshape(2, -1) for w in windows], axis=1)
    np.testing.assert_array_equal(targets, np.arange(22).reshape(2, 11)[:, 1:])


def _char_model(vocab_size, cell="lstm", hidden=(32, 32), dropout=0.0):
    return CharRNN(vocab_size, 16, hidden, cell, dropout)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_state_carried_across_windows_equals_one_pass(cell):
    """Windows (padded to a fixed length) read one after another with the carry give the logits of one pass
    over the whole sequence; a reset row starts from a zero state."""
    model = _char_model(50, cell)
    tokens_BxT = jax.random.randint(jax.random.key(0), (2, 20), 0, 50)
    ones = lambda *shape: jnp.ones(shape, bool)
    no_reset = jnp.zeros(2, bool)
    variables = model.init(jax.random.key(1), tokens_BxT, no_reset, ones(2, 20))
    whole, _ = model.apply(variables, tokens_BxT, no_reset, ones(2, 20), carry=model.initial_carry(2))
    carry, pieces = model.initial_carry(2), []
    for start, length in ((0, 7), (7, 9), (16, 4)):  # windows of 10 with padding
        window = jnp.zeros((2, 10), jnp.int32).at[:, :length].set(tokens_BxT[:, start:start + length])
        mask = jnp.arange(10)[None, :].repeat(2, 0) < length
        outputs, carry = model.apply(variables, window, no_reset, mask, carry=carry)
        pieces.append(outputs["logits"][:, :length])
    np.testing.assert_allclose(jnp.concatenate(pieces, 1), whole["logits"], atol=1e-5)
    fresh, _ = model.apply(variables, tokens_BxT[:, :5], no_reset, ones(2, 5), carry=model.initial_carry(2))
    reset, _ = model.apply(variables, tokens_BxT[:, :5], jnp.ones(2, bool), ones(2, 5), carry=carry)
    np.testing.assert_allclose(reset["logits"], fresh["logits"], atol=1e-6)


def test_dropconnect_and_dropout_only_in_training():
    layer = rnn.LSTM(16, weight_drop=0.5)
    x = jax.random.normal(jax.random.key(0), (2, 6, 8))
    carry, mask = rnn.zero_carry("lstm", 2, (16,))[0], jnp.ones((2, 6), bool)
    variables = layer.init(jax.random.key(1), x, carry, mask, False)
    run = lambda train, seed: layer.apply(variables, x, carry, mask, train, rngs={"dropout": jax.random.key(seed)})[0]
    plain = rnn.LSTM(16).apply(variables, x, carry, mask, False)[0]
    np.testing.assert_array_equal(run(False, 0), run(False, 1))
    np.testing.assert_array_equal(run(False, 0), plain)
    assert not np.allclose(run(True, 0), run(True, 1)) and not np.allclose(run(True, 0), plain)
    model = _char_model(30, dropout=0.5)
    tokens = jnp.ones((2, 5), jnp.int32)
    v = model.init(jax.random.key(0), tokens, jnp.zeros(2, bool), jnp.ones((2, 5), bool))
    call = lambda train, seed: model.apply(v, tokens, jnp.zeros(2, bool), jnp.ones((2, 5), bool), train=train,
                                           rngs={"dropout": jax.random.key(seed)})[0]["logits"]
    np.testing.assert_array_equal(call(False, 0), call(False, 1))
    assert not np.allclose(call(True, 0), call(True, 1))


def test_kneser_ney_is_normalised_and_beats_a_unigram(fortune_texts):
    vocab = text.CharVocab.build(fortune_texts[:500])
    train = vocab.encode(text.join_documents(fortune_texts[:500]))
    held_out = vocab.encode(text.join_documents(fortune_texts[500:]))
    model = ngram.KneserNey(train, len(vocab), 4)
    for context in ("The ", "qzx", "%\n"):
        ids = vocab.encode(context)
        total = sum(np.exp(-model.token_losses(np.append(ids, w))[-1]) for w in range(len(vocab)))
        assert total == pytest.approx(1.0, abs=1e-9)
    unigram, four_gram = ngram.KneserNey(train, len(vocab), 1).loss(held_out), model.loss(held_out)
    assert 2.9 < unigram < 3.4 and four_gram < unigram - 0.6
    # Hand-computed: 2-gram KN on "abab" (ids 0 1 0 1, V=2). Bigrams ab x2, ba x1: n1 = n2 = 1, D2 = 1/3.
    # Continuation counts: a once (after b), b once (after a): n1 = 2, D1 = 1, P1(b) = (0 + 1*2*1/2) / 2 = 1/2.
    # P(b | a) = (2 - 1/3 + 1/3 * 1 type * 1/2) / 2 = 11/12.
    toy = ngram.KneserNey(np.array([0, 1, 0, 1]), 2, 2)
    assert np.exp(-toy.token_losses(np.array([0, 1]))) == pytest.approx([11 / 12])


def test_sampling_is_deterministic_under_a_seed():
    model = _char_model(40)
    variables = model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32), jnp.zeros(1, bool), jnp.ones((1, 4), bool))
    sample = language_model.make_sampler(model.apply, model.initial_carry, 30)
    prompt = jnp.asarray([3, 4, 5])
    draw = lambda seed, temperature=1.0, top_k=0: np.asarray(
        sample(variables["params"], prompt, jax.random.key(seed), jnp.float32(temperature), jnp.int32(top_k)))
    np.testing.assert_array_equal(draw(0), draw(0))
    assert not np.array_equal(draw(0), draw(1))
    np.testing.assert_array_equal(draw(0, top_k=1), draw(1, top_k=1))  # top-1 is greedy: no randomness left
    assert len(set(draw(2, top_k=3).tolist())) <= 3 * 30 and draw(2, top_k=3).max() < 40


def test_a_few_real_steps_lower_the_loss(fortune_texts):
    vocab = text.CharVocab.build(fortune_texts)
    ids = vocab.encode(text.join_documents(fortune_texts))
    stream = LMStream(ids, 32, 32, sharding.make_mesh(1), seed=0)
    model = _char_model(len(vocab), hidden=(64, 64))
    batch = stream.batch(0)
    variables = model.init(jax.random.key(0), batch["input"], batch["reset"], batch["token_mask"])
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats={},
                              tx=optax.adam(1e-2), carry=model.initial_carry(32))
    train_step = jax.jit(steps.make_train_step(language_model.task()))
    losses = []
    for step in range(40):
        state, metrics = train_step(state, stream.batch(step), jax.random.key(step))
        losses.append(float(metrics["loss"] / metrics["count"]))
    assert losses[0] > 4.0  # ~log(vocab) at the start
    counts = np.bincount(ids, minlength=len(vocab)) + 1.0  # the unigram model on the same (training) text
    unigram = float(-np.mean(np.log(counts / counts.sum())[ids]))
    assert np.mean(losses[-5:]) < min(unigram + 0.1, losses[0] - 1.0), (losses[-5:], unigram)  # measured 3.24
    assert not np.allclose(jax.device_get(state.carry[0][0]), 0.0)  # the state carried between windows


def test_token_kinds_write_the_prompt_then_the_sample():
    """samples.txt shows the prompt and the sample; scripts/generate.py prints the prompt, then `continuation`."""
    vocab = tokens.Vocab.build([tokens.tokenize("The cat sat on the mat.")], min_freq=1)
    ids = vocab.numericalize(tokens.tokenize("sat on the mat."))[1:]  # without xxbos
    written = lm_tokens.Words.written(vocab, "The cat", ids)
    assert written == "The cat sat on the mat ."
    assert lm_tokens.Words.continuation("The cat", written) == " sat on the mat ."
    assert lm_tokens.Words.continuation("", lm_tokens.Words.written(vocab, "", ids)) == "sat on the mat ."
    chars = text.CharVocab.build(["abc%\n"])
    written = lm_tokens.Characters.written(chars, "ab", chars.encode("ca"))
    assert written == "abca" and lm_tokens.Characters.continuation("ab", written) == "ca"
    np.testing.assert_array_equal(lm_tokens.Characters.prompt_ids(chars, ""), chars.encode("%\n"))


# --- words: tokenisation, AWD-LSTM, the classifier -------------------------------------------------------

TRICKY = ["Don't PANIC!!!! It's 3.14 -- café naïve\n  e-mail, U.S.A. :-) I said NO.", "", "ÉCOLE Über straße",
          "McDonald O'Reilly won't\t\tstop", "☃ emoji 🙂 and tabs\tend"]


def test_tokenisation_round_trips_on_tricky_text():
    assert tokens.tokenize("Don't PANIC!!!!") == ["xxbos", "xxmaj", "do", "n't", "xxup", "panic", "xxrep", "4", "!"]
    assert tokens.tokenize("") == ["xxbos"]
    for text_ in TRICKY:  # the same letters, case and repetitions come back; only spacing is normalised
        back = tokens.detokenize(tokens.tokenize(text_))
        assert "".join(back.split()) == "".join(text_.split())
    docs = [tokens.tokenize(t) for t in TRICKY]
    vocab = tokens.Vocab.build(docs, max_size=20, min_freq=1)
    assert vocab.itos[:6] == list(tokens.SPECIALS) and len(vocab) == 20
    assert tokens.Vocab.build(docs, min_freq=2).itos[6:] == sorted(
        [t for t in set(sum(docs, [])) if sum(d.count(t) for d in docs) >= 2 and t not in tokens.SPECIALS],
        key=lambda t: (-sum(d.count(t) for d in docs), t))
    full = tokens.Vocab.build(docs, min_freq=1)
    for doc in docs:  # numericalisation round trip: every token known
        assert full.textify(full.numericalize(doc)) == doc
    unknown = vocab.textify(vocab.numericalize(["xxbos", "zyzzyva", "xxmaj"]))
    assert unknown == ["xxbos", "xxunk", "xxmaj"]


def test_awd_lstm_dropouts_only_in_training():
    model = AWDLSTM(50, embed_dim=8, hidden=16, num_layers=2, embed_drop=0.1, input_drop=0.3, hidden_drop=0.2,
                    weight_drop=0.5, output_drop=0.3)
    tokens_BxT = jax.random.randint(jax.random.key(0), (2, 7), 0, 50)
    args = (tokens_BxT, jnp.zeros(2, bool), jnp.ones((2, 7), bool))
    variables = model.init(jax.random.key(1), *args)
    run = lambda train, seed: model.apply(variables, *args, train=train, rngs={"dropout": jax.random.key(seed)})[0]
    np.testing.assert_array_equal(run(False, 0)["logits"], run(False, 1)["logits"])
    np.testing.assert_array_equal(run(False, 0)["hidden"], run(False, 0)["hidden_dropped"])
    assert not np.allclose(run(True, 0)["logits"], run(True, 1)["logits"])
    # tied decoder: the output layer's kernel is the embedding matrix
    assert set(variables["params"]) == {"encoder", "output_bias"}


def test_padding_never_changes_a_classifier_prediction():
    model = TextClassifier(60, 3, embed_dim=8, hidden=16, num_layers=2)
    docs = [np.array([2, 7, 9, 11, 4]), np.array([2, 5]), np.array([2, 30, 31, 32, 33, 34, 35, 36, 37])]
    variables = model.init(jax.random.key(0), jnp.ones((2, 4), jnp.int32), jnp.ones((2, 4), bool))
    logits = []
    for max_len in (9, 16, 40):
        tokens_NxL, _ = padded_text.pad_documents(docs, max_len)
        logits.append(model.apply(variables, tokens_NxL, tokens_NxL != tokens.PAD_ID))
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
    np.testing.assert_allclose(logits[0], logits[2], atol=1e-5)
    alone = model.apply(variables, docs[1][None], np.ones((1, 2), bool))  # no padding at all
    np.testing.assert_allclose(alone[0], logits[2][1], atol=1e-5)


def test_bucketed_batches_are_pure_and_use_few_lengths():
    docs = [np.full(n, 5, np.int32) for n in [3, 70, 12, 150, 9, 40, 64, 65] * 4]
    batches = BucketedBatches(docs, np.arange(32) % 3, 4, (64, 160), sharding.make_mesh(1), seed=1)
    again = BucketedBatches(docs, np.arange(32) % 3, 4, (64, 160), sharding.make_mesh(1), seed=1)
    seen = []
    for step in range(8):
        batch = jax.device_get(batches.batch(step))
        assert batch["tokens"].shape[1] in (64, 160)
        np.testing.assert_array_equal(batch["tokens"], jax.device_get(again.batch(step))["tokens"])
        seen.extend(batch["token_mask"].sum(1).tolist())
    assert sorted(seen) == sorted(len(d) for d in docs)  # every document once per epoch


def test_padded_lengths_from_the_documents_read_the_longest_whole():
    """51 documents of 10 tokens, 39 of 100, 9 of 300, one of 1000: the median (the 51st shortest: 10), the 90th
    (the 91st: 300) and 99th (the 100th: 1000) percentiles and the longest, rounded up to BPT3C's window of 64."""
    lengths = [10] * 51 + [100] * 39 + [300] * 9 + [1000]
    assert padded_text.length_buckets(lengths, 64) == (64, 320, 1024)
    assert padded_text.length_buckets(lengths, 64, max_tokens=500) == (64, 320, 500)  # none above the cap
    docs = [np.full(n, 5, np.int32) for n in lengths]
    batches = BucketedBatches(docs, np.arange(100) % 2, 4, padded_text.length_buckets(lengths, 64),
                              sharding.make_mesh(1), seed=0)
    read = sorted(int(n) for step in range(25) for n in jax.device_get(batches.batch(step))["token_mask"].sum(1))
    assert read == sorted(lengths)  # every token of every document, the longest too
    with pytest.raises(InputError, match="no documents"):
        padded_text.length_buckets([], 64)


def test_ulmfit_phases_freeze_and_discriminate():
    groups = ["^encoder/embed/", "^encoder/rnn_0/", "^encoder/rnn_1/", "^head_"]
    phases = text_classifier.ulmfit_phases(len(groups), (1, 1, 1, 2), 2e-2)
    assert [p.trainable_groups for p in phases] == [1, 2, 3, 4]
    assert [p.learning_rate for p in phases] == pytest.approx([2e-2, 1e-2, 5e-3, 2e-3])
    captured = {}
    make_tx = lambda lr, steps_, **groups_: captured.update(lr=lr, **groups_)
    text_classifier.phase_optimizer(make_tx, groups, phases[1], 10)
    assert captured["frozen"] == groups[:2]
    assert captured["lr_multipliers"] == [("^encoder/rnn_1/", pytest.approx(1 / 2.6))]


def test_labelled_text_errors_are_one_line_naming_the_file_or_column(tmp_path):
    """Your own labelled text (research/text/labelled_text.py): bytes that are not utf-8, a test class the
    training data lacks, a missing column or folder are one-line InputErrors naming the file, column or class;
    empty documents are skipped and a class missing from the test split is a warning, both naming the split."""
    from research.text import labelled_text

    def folders(root, files):
        for relative, content in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(root)

    good = {"train/a/1.txt": "apples are red", "train/a/2.txt": "apples again", "train/b/1.txt": "bananas",
            "train/b/2.txt": "bananas are yellow", "test/a/1.txt": "an apple", "test/b/1.txt": "a banana"}
    split, names = labelled_text.load("folder", folders(tmp_path / "good", good), 0, valid_fraction=0.5)
    assert names == ["a", "b"] and len(split.test.texts) == 2
    cases = {
        "latin1": ({**good, "train/a/3.txt": "caf\xe9".encode("latin-1")}, r"train/a/3.txt is not utf-8 text"),
        "unknown": ({**good, "test/c/1.txt": "cherries"}, r"test: classes \['c'\] are not among the training"),
        "no_test": ({k: v for k, v in good.items() if k.startswith("train")}, r"no_test/test is not a folder"),
    }
    for name, (files, message) in cases.items():
        with pytest.raises(InputError, match=message) as raised:
            labelled_text.load("folder", folders(tmp_path / name, files), 0, valid_fraction=0.5)
        assert "\n" not in str(raised.value), name
    empty = {**good, "train/a/3.txt": "  \n", "test/b/1.txt": ""}
    with pytest.warns(UserWarning) as warned:
        split, _ = labelled_text.load("folder", folders(tmp_path / "empty", empty), 0, valid_fraction=0.5)
    messages = [str(w.message) for w in warned]
    assert any("skipping 1 empty documents in" in m and "empty test" in m for m in messages), messages
    assert any("has no documents of classes ['b']" in m for m in messages), messages
    assert len(split.test.texts) == 1

    table = tmp_path / "rows.csv"
    table.write_text("body,topic\n" + "hello there,x\nbye now,y\n" * 5)
    with pytest.raises(InputError, match=f"{table} has no column 'text'"):
        labelled_text.load("csv", str(table), 0)
    with pytest.raises(InputError, match=f"{table} has no column 'label'"):
        labelled_text.load("csv", str(table), 0, text_column="body")
    split, names = labelled_text.load("csv", str(table), 0, text_column="body", label_column="topic")
    assert names == ["x", "y"]
    with pytest.raises(InputError, match="CSV file not found: .*nothing.csv"):
        labelled_text.load("csv", str(tmp_path / "nothing.csv"), 0)
    with pytest.raises(InputError, match="config.data.source must be"):
        labelled_text.load("parquet", str(table), 0)


def test_an_interrupted_and_resumed_word_lm_equals_an_uninterrupted_one(tmp_path):
    """experiments/fortunes_lm.py on two topics for 2 epochs: stopped in the middle of epoch 1 (the recurrent
    state carried across windows is in the checkpoint), rerun in the same workdir, it ends with the uninterrupted
    run's state (parameters, optimizer, carry) bit for bit, and the same metrics."""
    from experiments import fortunes_lm
    from research.core.checkpoint import Checkpointer
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("goedel", "pets"):
        (corpus / f"{name}.txt").write_text("\n".join(fortunes.read_fortunes(fortunes.topic_files()[name])))
    config = fortunes_lm.get_config()
    config.data.update(source="folder", path=str(corpus))
    config.model.update(hidden=32, embed_dim=16, num_layers=2)
    config.update(batch_size=8, eval_batch_size=8, bptt=16, num_epochs=2, ngram_orders=(2,), learning_rate=5e-3)
    config.samples.length = 5
    straight = fortunes_lm.train_and_evaluate(config, str(tmp_path / "straight"))
    total = straight["steps"]
    assert fortunes_lm.train_and_evaluate(config, str(tmp_path / "resumed"), stop_at=total // 4) == {}
    assert Checkpointer(str(tmp_path / "resumed" / "checkpoints")).latest_step() == total // 4
    resumed = fortunes_lm.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert resumed["metrics"] == straight["metrics"]
    a = Checkpointer(str(tmp_path / "straight" / "checkpoints")).manager.restore(total)["state"]
    b = Checkpointer(str(tmp_path / "resumed" / "checkpoints")).manager.restore(total)["state"]
    assert "carry" in a and not np.allclose(jax.tree.leaves(a["carry"])[0], 0)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
