"""Lesson 4, part 1: an AWD-LSTM word-level language model on the fortunes (the body that
experiments/fortunes_classifier.py fine-tunes), against an interpolated Kneser-Ney n-gram model on the same
split.

Run (default preset, sized for a 2-core CPU):
  .venv/bin/python scripts/train.py --config experiments/fortunes_lm.py --workdir runs/fortunes_lm
Write text with it:
  .venv/bin/python scripts/generate.py --workdir runs/fortunes_lm --prompt "The meaning of life" --temperature 0.8 --length 60

Data: every fortune of the Debian `fortunes` package, held out by document (10% test, 5% validation), minus
the texts the topic classifier holds out (valid and test of research/data/fortunes.topic_split with the same
seed), so the classifier is never scored on text its body has read. Your own text: `--config.data.source=folder
--config.data.path=DIR` (one document per file). Tokens: research/data/tokens.py (vocab.json in the workdir).

Reaches (default preset, idle 2-core CPU, 454 s): test perplexity 73.3 (valid 71.5) after 3 epochs; the
Kneser-Ney 4-gram baseline reaches 57.5 on the same split. Writes samples.txt, vocab.json, results.json.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.core import configs, experiment, sharding, steps
from research.core.errors import InputError
from research.text import documents as text, fortunes, language_model, lm_recipe, tokens
from research.text.awd_lstm import AWDLSTM
from research.text.lm_stream import LMStream

VOCAB_FILE = "vocab.json"


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("cpu", "long"), "experiments/fortunes_lm.py")
    c = configs.base()
    c.data = ml_collections.ConfigDict(dict(
        source="fortunes", path="", test_fraction=0.1, valid_fraction=0.05,
        exclude_classifier_holdout=True, classifier_topics=10))
    c.vocab = ml_collections.ConfigDict(dict(max_size=8000, min_freq=3))
    # AWD-LSTM's dropouts scaled by fastai's drop_mult 0.3 (a small model trained for few epochs).
    c.model = ml_collections.ConfigDict(dict(
        embed_dim=200, hidden=400, num_layers=3, embed_drop=0.03, input_drop=0.18, hidden_drop=0.09,
        weight_drop=0.15, output_drop=0.12))
    c.ar, c.tar = 2.0, 1.0
    c.batch_size = 32
    c.bptt = 70
    c.bptt_jitter = 5  # windows of 60-80 tokens
    c.eval_batch_size = 32
    c.num_epochs = 3
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
        c.vocab.max_size = 60000
        c.num_epochs = 15
    return c


def load_documents(config) -> fortunes.Split:
    data = config.data
    if data.source == "fortunes":
        split = fortunes.lm_split(data.path, config.seed, data.test_fraction, data.valid_fraction)
        if data.exclude_classifier_holdout:
            held, _ = fortunes.topic_split(data.path, data.classifier_topics, config.seed)
            exclude = set(held.valid.texts) | set(held.test.texts)
            split = split._replace(train=[t for t in split.train if t not in exclude])
        return split
    if data.source == "folder":
        if not data.path:
            raise InputError("config.data.path must name a folder of text files when data.source='folder'")
        return fortunes.Split(*text.split_documents(text.read_documents(data.path), config.seed,
                                                    data.test_fraction, data.valid_fraction))
    raise InputError(f"config.data.source must be 'fortunes' or 'folder', got {data.source!r}")


def encode_splits(config, workdir: str | None = None) -> tuple[dict[str, np.ndarray], tokens.Vocab]:
    """{split: token ids of its documents, each starting with xxbos, concatenated} and the training vocabulary
    (saved to workdir/vocab.json when workdir is given)."""
    split = load_documents(config)
    tokenized = {name: [tokens.tokenize(doc) for doc in docs] for name, docs in split._asdict().items()}
    vocab = tokens.Vocab.build(tokenized["train"], config.vocab.max_size, config.vocab.min_freq)
    if workdir is not None and jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        vocab.save(os.path.join(workdir, VOCAB_FILE))
    ids = {name: np.concatenate([vocab.numericalize(t) for t in docs]) for name, docs in tokenized.items()}
    return ids, vocab


def make_model(config, vocab_size: int) -> AWDLSTM:
    return AWDLSTM(vocab_size, **config.model.to_dict())


def setup(config, mesh, data: tuple[dict, tokens.Vocab] | None = None) -> experiment.Setup:
    ids, vocab = data or encode_splits(config)
    batches = LMStream(ids["train"], config.batch_size, config.bptt, mesh, config.seed, config.bptt_jitter)
    return experiment.Setup(
        create_state=lm_recipe.create_state_fn(make_model(config, len(vocab)), config.batch_size, batches.window),
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
        train_step=steps.make_train_step(language_model.task(config.ar, config.tar)), batches=batches)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        ids, vocab = encode_splits(config, workdir)
    model = make_model(config, len(vocab))
    sample = functools.partial(sample_text, model=model, vocab=vocab)
    return lm_recipe.train_and_evaluate(config, workdir, ids, len(vocab), setup(config, mesh, (ids, vocab)), model,
                                        sample, mesh, timer)


def sample_text(params, prompt: str, temperature: float, length: int, top_k: int = 0, seed: int = 0, *,
                model: AWDLSTM, vocab: tokens.Vocab) -> str:
    """`length` tokens after `prompt` (a new document when empty), detokenised; deterministic under `seed`."""
    prompt_tokens = tokens.tokenize(prompt)
    sampler = language_model.make_sampler(model.apply, model.initial_carry, length)
    ids = sampler(params, jnp.asarray(vocab.numericalize(prompt_tokens)), jax.random.key(seed),
                  jnp.float32(temperature), jnp.int32(top_k))
    return tokens.detokenize(prompt_tokens + vocab.textify(np.asarray(ids)))


def _restore(config, workdir: str):
    vocab = tokens.Vocab.load(os.path.join(workdir, VOCAB_FILE))
    model = make_model(config, len(vocab))
    return lm_recipe.restore(config, workdir, model), model, vocab


def generate(config, workdir: str, prompt: str, temperature: float, length: int, top_k: int = 0,
             seed: int = 0) -> str:
    """scripts/generate.py: the prompt and `length` more tokens, as text (scripts/generate.py prints the prompt
    too, so it is cut from the front here)."""
    state, model, vocab = _restore(config, workdir)
    written = sample_text(state.params, prompt, temperature, length, top_k, seed, model=model, vocab=vocab)
    return " " + written[len(tokens.detokenize(tokens.tokenize(prompt))):].lstrip(" ") if prompt else written


def predict(config, workdir: str, input_path: str, output_path: str) -> int:
    """Perplexity of the run's model on each text file under `input_path`: a CSV of file, tokens, loss,
    perplexity."""
    state, model, vocab = _restore(config, workdir)
    files = [input_path] if os.path.isfile(input_path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(input_path) for name in names)
    rows = []
    for file in files:
        ids = np.concatenate([vocab.numericalize(tokens.tokenize(doc)) for doc in text.read_documents(file)])
        found = language_model.make_evaluator(model.apply, model.initial_carry, ids, 1, config.bptt, "")(state)
        rows.append((file, len(ids), found["loss"], found["perplexity"]))
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with open(output_path, "w", encoding="utf-8") as f:
        f.write("file,tokens,loss,perplexity\n")
        f.writelines(f"{file},{n},{loss:.4f},{ppl:.2f}\n" for file, n, loss, ppl in rows)
    return len(rows)
