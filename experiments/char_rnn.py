"""Lesson 6: a character-level RNN (2-layer LSTM, or a GRU) that learns to write fortunes, against an
interpolated Kneser-Ney n-gram model on the same split.

Run (default preset, sized for a 2-core CPU):
  .venv/bin/python scripts/train.py --config experiments/char_rnn.py --workdir runs/char_rnn
The GRU variant:
  .venv/bin/python scripts/train.py --config experiments/char_rnn.py:gru --workdir runs/char_rnn_gru
Write new text with the trained run:
  .venv/bin/python scripts/generate.py --workdir runs/char_rnn --prompt "The " --temperature 0.5 --length 400
Per-file loss of new text (rows of file, characters, nats per character):
  .venv/bin/python scripts/predict.py --workdir runs/char_rnn --input DIR_OR_FILE
The recipe is research/text/lm_recipe.py's, shared with experiments/fortunes_lm.py (words, AWD-LSTM).

Data: the Debian `fortunes` package (research/text/fortunes.py), fortunes held out by document: 10% test
(scored once at the end), 5% validation (checkpoint and n-gram order chosen there). Your own text, no code:
`--config.data.source=folder --config.data.path=DIR` (one document per file; paragraphs if fewer than 10 files).

Reaches (default preset, 2-core CPU, on the de-duplicated split of research/text/near_duplicates.py): held-out
(test) loss 1.928 nats per character after 3 epochs (771 steps), validation 1.926; the Kneser-Ney baseline (order
7, chosen on validation) reaches 1.504, so the net does NOT yet beat it, nor issue 15's 1.65 (README "NLP"). The
whole command took 428 s on the idle CPU before de-duplication; session 15's idle machine, about 2x slower per
step, took 14.8 minutes to train it, and 6.2 for the same model with the QRNN cell (`model.cell=qrnn`: test
1.835; scripts/benchmark_lm_cells.py, docs/benchmarks.md).
Writes samples.txt (temperatures 0.5 and 1.0), vocab.json, results.json, checkpoints.
"""

import ml_collections

from research.core import configs, experiment
from research.text import language_model, lm_recipe, lm_tokens
from research.text.char_rnn import CharRNN

CAPABILITIES = experiment.Capabilities(generate=True)


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


def make_model(config, vocab_size: int) -> CharRNN:
    m = config.model
    return CharRNN(vocab_size, m.embed_dim, tuple(m.hidden_sizes), m.cell, m.dropout)


RECIPE = lm_recipe.Recipe(lm_tokens.Characters(), make_model, lambda config: language_model.task())


def generate(config, workdir: str, prompt: str, temperature: float, length: int, top_k: int = 0,
             seed: int = 0) -> str:
    """scripts/generate.py: the characters the run's best checkpoint writes after `prompt`."""
    return RECIPE.generate(config, workdir, prompt, temperature, length, top_k, seed)


def predict(config, workdir: str, input_path: str) -> list[dict]:
    """scripts/predict.py: rows of file, characters and loss (nats per character) for each text file."""
    return RECIPE.predict(config, workdir, input_path)


def setup(config, mesh) -> experiment.Setup:
    """The CharRNN, its optimizer and the character stream (for scripts/lr_find.py and the benchmarks)."""
    return RECIPE.setup(config, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The n-gram baseline, the fit, test nats per character from the best checkpoint, samples.txt, results.json."""
    return RECIPE.train_and_evaluate(config, workdir)
