"""Lesson 4, part 2: ULMFiT on fortune topics. The language model of experiments/fortunes_lm.py (loaded by its
workdir) fine-tuned to tell the 10 largest topic files apart (computers, cookie, definitions, men-women,
miscellaneous, people, politics, science, songs-poems, work), against two baselines on the same split:
TF-IDF + logistic regression (scikit-learn, C chosen on validation) and the same classifier without
language-model pretraining (best of its rate grid on validation).

Run (after the language model; default preset sized for a 2-core CPU):
  .venv/bin/python scripts/train.py --config experiments/fortunes_lm.py --workdir runs/fortunes_lm
  .venv/bin/python scripts/train.py --config experiments/fortunes_classifier.py --workdir runs/fortunes_classifier \\
      --config.lm_workdir=runs/fortunes_lm
The course's IMDB sentiment task (TFDS imdb_reviews; for an accelerator, needs the download; train the LM on
its unlabelled reviews with a folder of text first):
  .venv/bin/python scripts/train.py --config experiments/fortunes_classifier.py:imdb --workdir runs/imdb \\
      --config.lm_workdir=runs/imdb_lm
Your own labelled text: `--config.data.source=folder --config.data.path=DIR` (DIR/train/<class>/*,
DIR/test/<class>/*, the aclImdb layout) or `--config.data.source=csv --config.data.path=FILE.csv`.
Topics of new texts (a folder of files, or a file with one text per line; rows of input, predicted, probability):
  .venv/bin/python scripts/predict.py --workdir runs/fortunes_classifier --input DIR_OR_FILE
The recipe is research/text/ulmfit.py's; the TF-IDF baseline is research/text/baselines.py's.

Split: stratified by topic, 20% test (scored once at the end), 10% of the rest for validation (the
checkpoints, the baselines' hyperparameters). Reaches (idle 2-core CPU, LM of experiments/fortunes_lm.py's
default run; measured before near-duplicates were collapsed, not yet re-measured on the de-duplicated split):
ULMFiT test accuracy 50.2% (valid 49.6%) in 343 s; TF-IDF 49.8% (valid 52.7%); the same classifier without
pretraining 53.4% (valid 54.2%, lr 3e-3): the small LM's pretraining does not help yet.
"""

import ml_collections

from research.core import configs, experiment
from research.text import ulmfit

CAPABILITIES = experiment.Capabilities()


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("cpu", "imdb"), "experiments/fortunes_classifier.py")
    c = configs.base()
    c.lm_workdir = ""  # a finished experiments/fortunes_lm.py run
    c.data = ml_collections.ConfigDict(dict(
        source="fortunes", path="", num_topics=10, test_fraction=0.2, valid_fraction=0.1,
        text_column="text", label_column="label",
        labels_per_class=0))  # N > 0: N labelled training documents per class (ULMFiT's few-label setting)
    c.max_tokens = 160  # longer documents are cut (5% of the fortunes)
    c.buckets = (64, 160)  # padded lengths: one compilation each
    c.batch_size = 32
    c.eval_batch_size = 128
    c.classifier = ml_collections.ConfigDict(dict(
        embed_drop=0.02, input_drop=0.1, hidden_drop=0.06, weight_drop=0.08, output_drop=0.04, head_hidden=50,
        head_drops=(0.1, 0.05), bptt=0))  # bptt > 0: BPT3C, documents read in windows of bptt tokens
    c.phase_epochs = (1, 1, 1, 2)  # gradual unfreezing: head; + last layer; + one more; everything
    c.learning_rate = 2e-2  # the head's peak rate; lr/2, lr/4, lr/10 in the later phases
    c.group_factor = 2.6  # each lower layer group at lr / 2.6
    c.scratch_learning_rates = (3e-3, 1e-2)  # the no-pretraining baseline: same epochs in all, best on valid
    c.tfidf_cs = (1.0, 3.0, 10.0, 30.0)
    c.optimizer.b2 = 0.99
    c.optimizer.weight_decay = 0.01
    c.log_every = 50
    if preset == "imdb":
        c.data.source = "tfds"
        c.max_tokens, c.buckets = 1024, (256, 512, 1024)
        c.classifier.bptt = 64  # BPT3C: long reviews read whole, 64 tokens at a time (the buckets divide by it)
        c.batch_size = 64
    return c


def setup(config, mesh) -> experiment.Setup:
    """The classifier without pretraining (for scripts/lr_find.py and the benchmarks)."""
    return ulmfit.setup(config, mesh)


def predict(config, workdir: str, input_path: str) -> list[dict]:
    """scripts/predict.py: rows of input (file or line), predicted topic and its probability."""
    return ulmfit.predict(config, workdir, input_path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """TF-IDF, ULMFiT's phases from the language model, the no-pretraining classifier; results.json."""
    return ulmfit.train_and_evaluate(config, workdir)
