"""Lesson 6: a character-level RNN (2-layer LSTM, or a GRU) that learns to write fortunes, against an
interpolated Kneser-Ney n-gram model on the same split.

Run (default preset, sized for a 2-core CPU):
  .venv/bin/python scripts/train.py --config experiments/char_rnn.py --workdir runs/char_rnn
The GRU variant:
  .venv/bin/python scripts/train.py --config experiments/char_rnn.py:gru --workdir runs/char_rnn_gru
Write new text with the trained run:
  .venv/bin/python scripts/generate.py --workdir runs/char_rnn --prompt "The " --temperature 0.5 --length 400
Per-file loss of new text (nats per character, CSV):
  .venv/bin/python scripts/predict.py --workdir runs/char_rnn --input DIR_OR_FILE

Data: the Debian `fortunes` package (research/data/fortunes.py), fortunes held out by document: 10% test
(scored once at the end), 5% validation (checkpoint and n-gram order chosen there). Your own text, no code:
`--config.data.source=folder --config.data.path=DIR` (one document per file; paragraphs if fewer than 10 files).

Reaches (default preset, idle 2-core CPU, 428 s for the whole command): held-out (test) loss 1.912 nats per
character after 3 epochs (795 steps), validation 1.906; the Kneser-Ney baseline (order 8, chosen on validation)
reaches 1.470, so the net does NOT yet beat it, nor issue 15's 1.65 (README "NLP").
Writes samples.txt (temperatures 0.5 and 1.0), vocab.json, results.json, checkpoints.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.core import configs, experiment, sharding, steps
from research.core.errors import InputError
from research.core.train_state import TrainState
from research.text import documents as text, fortunes, language_model, lm_recipe
from research.text.char_rnn import CharRNN
from research.text.lm_stream import LMStream

VOCAB_FILE = "vocab.json"


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("cpu", "gru", "long"), "experiments/char_rnn.py")
    c = configs.base()
    c.data = ml_collections.ConfigDict(dict(
        source="fortunes",  # or "folder": your own text files under `path`
        path="",  # fortunes: the fortune directory ("" = $FORTUNES_DIR or /usr/share/games/fortunes)
        test_fraction=0.1, valid_fraction=0.05))
    # 2 x 256 (not 512): on the 2-core CPU our LSTM step is ~1.7x slower than PyTorch's, and 3 epochs of this
    # size fit 7 minutes where 2 epochs of 2 x 512 take about 12.
    c.model = ml_collections.ConfigDict(dict(cell="lstm", embed_dim=64, hidden_sizes=(256, 256), dropout=0.0))
    c.batch_size = 64
    c.bptt = 128
    c.eval_batch_size = 64  # held-out rows read in parallel
    c.num_epochs = 3
    c.learning_rate = 4e-3  # > 0: no range test (0 runs it)
    c.optimizer.clip_norm = 1.0
    c.checkpoint.best_metric = "valid_loss"
    c.checkpoint.best_mode = "min"
    c.log_every = 100
    c.ngram_orders = (4, 5, 6, 7, 8)  # the baseline's order is chosen on the validation text
    c.samples = ml_collections.ConfigDict(dict(prompt="The ", length=600, temperatures=(0.5, 1.0), top_k=0))
    if preset == "gru":
        c.model.cell = "gru"
    if preset == "long":
        c.model.update(hidden_sizes=(1024, 1024), dropout=0.2)
        c.num_epochs = 20
        c.learning_rate = 2e-3
    return c


def load_documents(data: ml_collections.ConfigDict, seed: int) -> tuple[fortunes.Split, str]:
    """(train/valid/test documents, the separator written between documents)."""
    if data.source == "fortunes":
        return fortunes.lm_split(data.path, seed, data.test_fraction, data.valid_fraction), "%\n"
    if data.source == "folder":
        if not data.path:
            raise InputError("config.data.path must name a folder of text files when data.source='folder'")
        documents = text.read_documents(data.path)
        split = text.split_documents(documents, seed, data.test_fraction, data.valid_fraction)
        return fortunes.Split(*split), "\n"
    raise InputError(f"config.data.source must be 'fortunes' or 'folder', got {data.source!r}")


def encode_splits(config, workdir: str | None = None) -> tuple[dict[str, np.ndarray], text.CharVocab]:
    """{split: character ids of its documents joined}, and the vocabulary of the training text (saved to
    workdir/vocab.json when workdir is given)."""
    split, separator = load_documents(config.data, config.seed)
    vocab = text.CharVocab.build(split.train)
    if workdir is not None and jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        vocab.save(os.path.join(workdir, VOCAB_FILE))
    ids = {name: vocab.encode(text.join_documents(docs, separator)) for name, docs in split._asdict().items()}
    return ids, vocab


def make_model(config, vocab_size: int) -> CharRNN:
    m = config.model
    return CharRNN(vocab_size, m.embed_dim, tuple(m.hidden_sizes), m.cell, m.dropout)


def setup(config, mesh, data: tuple[dict, text.CharVocab] | None = None) -> experiment.Setup:
    ids, vocab = data or encode_splits(config)
    batches = LMStream(ids["train"], config.batch_size, config.bptt, mesh, config.seed)
    return experiment.Setup(
        create_state=lm_recipe.create_state_fn(make_model(config, len(vocab)), config.batch_size, batches.window),
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
        train_step=steps.make_train_step(language_model.task()), batches=batches)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        ids, vocab = encode_splits(config, workdir)
    model = make_model(config, len(vocab))
    sample = lambda params, prompt, *args: prompt + sample_text(params, model, vocab, prompt, *args)
    return lm_recipe.train_and_evaluate(config, workdir, ids, len(vocab), setup(config, mesh, (ids, vocab)), model,
                                        sample, mesh, timer)


def sample_text(params, model: CharRNN, vocab: text.CharVocab, prompt: str, temperature: float, length: int,
                top_k: int = 0, seed: int = 0) -> str:
    """`length` characters written after `prompt` (deterministic under `seed`)."""
    prompt_ids = vocab.encode(prompt or "%\n")
    sampler = language_model.make_sampler(model.apply, model.initial_carry, length)
    ids = sampler(params, jnp.asarray(prompt_ids), jax.random.key(seed), jnp.float32(temperature),
                  jnp.int32(top_k))
    return vocab.decode(np.asarray(ids))


def _restore(config, workdir: str) -> tuple[TrainState, CharRNN, text.CharVocab]:
    vocab = text.CharVocab.load(os.path.join(workdir, VOCAB_FILE))
    model = make_model(config, len(vocab))
    return lm_recipe.restore(config, workdir, model), model, vocab


def generate(config, workdir: str, prompt: str, temperature: float, length: int, top_k: int = 0,
             seed: int = 0) -> str:
    """scripts/generate.py: text written by the run's best checkpoint after `prompt`."""
    state, model, vocab = _restore(config, workdir)
    return sample_text(state.params, model, vocab, prompt, temperature, length, top_k, seed)


def predict(config, workdir: str, input_path: str, output_path: str) -> int:
    """Loss (nats per character) of the run's model on each text file under `input_path`: a CSV of file,
    characters, loss."""
    state, model, vocab = _restore(config, workdir)
    rows = []
    files = [input_path] if os.path.isfile(input_path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(input_path) for name in names)
    for file in files:
        documents = text.read_documents(file)
        ids = vocab.encode(text.join_documents(documents, "\n"))
        if len(ids) < 2:
            raise InputError(f"{file} holds fewer than 2 characters")
        evaluate = language_model.make_evaluator(model.apply, model.initial_carry, ids, 1, config.bptt, "")
        rows.append((file, len(ids), evaluate(state)["loss"]))
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with open(output_path, "w", encoding="utf-8") as f:
        f.write("file,characters,loss_nats_per_char\n")
        f.writelines(f"{file},{n},{loss:.4f}\n" for file, n, loss in rows)
    return len(rows)
