"""Lesson 4, part 2: ULMFiT on fortune topics, its three stages (research/text/ulmfit.py): a language model
pretrained on general English (stage 1, once: scripts/pretrain_lm.py), fine-tuned on the topics' training texts
(stage 2), then a classifier by gradual unfreezing (stage 3) that tells the 10 largest topic files apart
(computers, cookie, definitions, men-women, miscellaneous, people, politics, science, songs-poems, work).
Against, on the same split: TF-IDF + logistic regression (scikit-learn, C chosen on validation), the same
classifier without any language model (best of its rate grid on validation) and ULMFiT without stage 1
(stages 2 and 3 from a fresh language model).

Run (stage 1 once, about 41 minutes on an idle 2-core CPU; then this, sized for a 2-core CPU):
  .venv/bin/python scripts/pretrain_lm.py --workdir runs/general_lm
  .venv/bin/python scripts/train.py --config experiments/fortunes_classifier.py --workdir runs/fortunes_classifier
Few labels (ULMFiT's 100-label setting; the other training texts still serve stage 2): add
`--config.data.labels_per_class=100`. Another pretrained model: `--config.pretrained=WT103_FWD` (fastai's,
downloaded once) or the workdir of an experiments/fortunes_lm.py run.
The course's IMDB sentiment task (TFDS imdb_reviews; for an accelerator, needs the download):
  .venv/bin/python scripts/train.py --config experiments/fortunes_classifier.py:imdb --workdir runs/imdb
Your own labelled text: `--config.data.source=folder --config.data.path=DIR` (DIR/train/<class>/*,
DIR/test/<class>/*, the aclImdb layout; DIR/train/unsup/*, if there, is unlabelled text for stage 2; every
document is read whole) or `--config.data.source=csv --config.data.path=FILE.csv`.
Topics of new texts (a folder of files, or a file with one text per line; rows of input, predicted, probability):
  .venv/bin/python scripts/predict.py --workdir runs/fortunes_classifier --input DIR_OR_FILE
The TF-IDF baseline is research/text/baselines.py's.

Split: stratified by topic, 20% test (scored once at the end), 10% of the rest for validation (the
checkpoints, the baselines' hyperparameters). Reaches (docs/text.md, session 14): 100 labels per class, 3
seeds: ULMFiT 53.4 ± 1.3% test accuracy against no pretraining 47.8 ± 1.0%, TF-IDF 36.5 ± 0.8% and no stage 1
42.0 ± 2.0%; all labels, seed 0: 66.2% against 62.1%, 51.7% and 61.0%.
"""

import ml_collections

from research.core import configs, experiment
from research.text import ulmfit

CAPABILITIES = experiment.Capabilities()


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("cpu", "imdb"), "experiments/fortunes_classifier.py")
    c = configs.base()
    c.pretrained = "general-english-v1-awd"  # stage 1: scripts/pretrain_lm.py's artifact, WT103_FWD or an LM workdir
    c.lm_finetune = ml_collections.ConfigDict(dict(  # stage 2 on the training texts (epochs 0: skip it)
        epochs=2, learning_rate=3e-3, batch_size=32, bptt=70, vocab_size=8000, min_freq=2,
        max_unlabelled=10000))  # at most this many unlabelled texts, drawn by the seed (0: all)
    c.no_stage1_ablation = True  # also stages 2 and 3 from a fresh language model (what stage 1 buys)
    c.data = ml_collections.ConfigDict(dict(
        source="fortunes", path="", num_topics=10, test_fraction=0.2, valid_fraction=0.1,
        text_column="text", label_column="label",
        unlabelled_folder="unsup",  # a folder's train/unsup holds unlabelled texts for stage 2 (aclImdb), not a class
        labels_per_class=0))  # N > 0: N labelled training documents per class (ULMFiT's few-label setting)
    c.max_tokens = 0  # > 0: longer documents are cut; 0: every document read whole
    c.buckets = ()  # padded lengths, one compilation each; (): from the documents' lengths (median to longest)
    c.batch_size = 32
    c.eval_batch_size = 128
    c.classifier = ml_collections.ConfigDict(dict(
        embed_drop=0.02, input_drop=0.1, hidden_drop=0.06, weight_drop=0.08, output_drop=0.04, head_hidden=50,
        head_drops=(0.1, 0.05), bptt=64))  # BPT3C: documents read in windows of bptt tokens (0: in one pass)
    # Gradual unfreezing: head; + last layer; + one more; everything. Chosen on the validation texts at 100 labels
    # per class and at all labels (docs/text.md, session 14): the last phase longer than fastai's 2 epochs, and
    # one rate for all the trainable groups (fastai's lr / 2.6 per lower group trailed by 9 points at all labels).
    c.phase_epochs = (1, 1, 1, 6)
    c.learning_rate = 3e-2  # the head's peak rate; lr/2, lr/4, lr/10 in the later phases
    c.group_factor = 1.0  # each lower layer group at lr / group_factor
    c.scratch_learning_rates = (3e-3, 1e-2)  # the no-pretraining baseline: same epochs in all, best on valid
    c.tfidf_cs = (1.0, 3.0, 10.0, 30.0)
    c.optimizer.b2 = 0.99
    c.optimizer.weight_decay = 0.01
    c.log_every = 50
    if preset == "imdb":
        c.data.source = "tfds"
        c.max_tokens, c.buckets = 1024, (256, 512, 1024)  # reviews cut at 1024 tokens
        c.lm_finetune.max_unlabelled = 0  # stage 2 reads all 50k unlabelled reviews
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
