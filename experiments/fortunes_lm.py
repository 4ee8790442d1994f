"""Lesson 4, part 1: an AWD-LSTM word-level language model on the fortunes (a body that
experiments/fortunes_classifier.py can start from), against an interpolated Kneser-Ney n-gram model on the same
split.

Run (default preset, sized for a 2-core CPU):
  .venv/bin/python scripts/train.py --config experiments/fortunes_lm.py --workdir runs/fortunes_lm
ULMFiT's stage 1 (`:general`: one pass over research/text/general_corpus.py's general-English corpus, published
as a named artifact for experiments/fortunes_classifier.py): .venv/bin/python scripts/pretrain_lm.py --workdir DIR
Write text with it:
  .venv/bin/python scripts/generate.py --workdir runs/fortunes_lm --prompt "The meaning of life" \\
      --temperature 0.8 --length 60
Per-file perplexity of new text (rows of file, tokens, loss, perplexity):
  .venv/bin/python scripts/predict.py --workdir runs/fortunes_lm --input DIR_OR_FILE
The recipe is research/text/lm_recipe.py's, shared with experiments/char_rnn.py (characters, not words).

Data: every fortune of the Debian `fortunes` package, held out by document (10% test, 5% validation), minus
the texts the topic classifier holds out (valid and test of research/text/fortunes.topic_split with the same
seed), so the classifier is never scored on text its body has read. Your own text: `--config.data.source=folder
--config.data.path=DIR` (one document per file). Tokens: research/text/tokens.py (vocab.json in the workdir).

Reaches (default preset, its QRNN cell, 2-core CPU, on the de-duplicated split of research/text/near_duplicates.py):
test perplexity 57.4 (valid 54.3) after 4 epochs (872 steps), 13.0 minutes of training on the idle CPU
(scripts/benchmark_lm_cells.py --runs qrnn:4, session 15), below the Kneser-Ney 4-gram baseline's 62.1 on the same
split; its validation perplexity passes the 4-gram's after 9.6 minutes. 3 epochs stopped at 64.1 (session 13),
and the LSTM cell (`--config.model.cell=lstm`) at 78.0 after 3 epochs. Writes samples.txt,
vocab.json, results.json.
"""

import ml_collections

from research.core import configs, experiment
from research.text import language_model, lm_recipe, lm_tokens
from research.text.awd_lstm import AWDLSTM

CAPABILITIES = experiment.Capabilities(generate=True)


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("cpu", "long", "general"), "experiments/fortunes_lm.py")
    c = configs.base()
    c.data = ml_collections.ConfigDict(dict(
        source="fortunes", path="", test_fraction=0.1, valid_fraction=0.05,
        exclude_classifier_holdout=True, classifier_topics=10))
    c.vocab = ml_collections.ConfigDict(dict(max_size=8000, min_freq=3))
    # AWD-LSTM's dropouts scaled by fastai's drop_mult 0.3 (a small model trained for few epochs).
    c.model = ml_collections.ConfigDict(dict(
        embed_dim=200, hidden=400, num_layers=3, embed_drop=0.03, input_drop=0.18, hidden_drop=0.09,
        weight_drop=0.15, output_drop=0.12,
        cell="qrnn"))  # or "lstm"; the QRNN (research/text/qrnn.py) learns more per CPU-minute (docs/benchmarks.md)
    c.ar, c.tar = 2.0, 1.0
    c.batch_size = 32
    c.bptt = 70
    c.bptt_jitter = 5  # windows of 60-80 tokens
    c.eval_batch_size = 32
    c.num_epochs = 4  # 3 stopped at test perplexity 64.1, above Kneser-Ney's 62.1; 4 reach 57.4 (docs/text.md)
    c.learning_rate = 5e-3
    c.optimizer.clip_norm = 0.5
    c.optimizer.weight_decay = 0.01
    c.checkpoint.best_metric = "valid_loss"
    c.checkpoint.best_mode = "min"
    c.log_every = 100
    c.ngram_orders = (2, 3, 4)
    c.samples = ml_collections.ConfigDict(dict(prompt="", length=80, temperatures=(0.5, 1.0), top_k=0))
    if preset == "long":  # the paper's sizes, for an accelerator
        c.model.update(embed_dim=400, hidden=1150, embed_drop=0.1, input_drop=0.6, hidden_drop=0.3,
                       weight_drop=0.5, output_drop=0.4)
        c.model.cell = "lstm"  # the paper's AWD-LSTM
        c.vocab.max_size = 60000
        c.num_epochs = 15
    if preset == "general":  # ULMFiT's stage 1 (scripts/pretrain_lm.py): one pass over the general-English corpus
        c.data.update(source="general", test_fraction=0.01, valid_fraction=0.01, exclude_classifier_holdout=False)
        c.vocab.max_size = 10000  # the tied softmax is most of a step on the CPU
        c.num_epochs = 1
        c.checkpoint.every_epochs = 0.1  # resumable within the pass
        c.ngram_orders = (3,)
        c.log_every = 200
    return c


def make_model(config, vocab_size: int) -> AWDLSTM:
    return AWDLSTM(vocab_size, **config.model.to_dict())


RECIPE = lm_recipe.Recipe(lm_tokens.Words(), make_model, lambda config: language_model.task(config.ar, config.tar))


def setup(config, mesh) -> experiment.Setup:
    """The AWD-LSTM, its optimizer and the word stream (for scripts/lr_find.py and the benchmarks)."""
    return RECIPE.setup(config, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None = None) -> dict:
    """The n-gram baseline, the fit, test perplexity from the best checkpoint, samples.txt, results.json."""
    return RECIPE.train_and_evaluate(config, workdir, stop_at)


def generate(config, workdir: str, prompt: str, temperature: float, length: int, top_k: int = 0,
             seed: int = 0) -> str:
    """scripts/generate.py: the words the run's best checkpoint writes after `prompt`."""
    return RECIPE.generate(config, workdir, prompt, temperature, length, top_k, seed)


def predict(config, workdir: str, input_path: str) -> list[dict]:
    """scripts/predict.py: rows of file, tokens, loss and perplexity for each text file under `input_path`."""
    return RECIPE.predict(config, workdir, input_path)
