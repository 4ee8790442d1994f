"""The language-model recipe that experiments/fortunes_lm.py (words, AWD-LSTM) and experiments/char_rnn.py
(characters, CharRNN) share: data, the fit, evaluation, samples, generation and prediction, written once.

An experiment brings a `Recipe`: its kind of tokens (research/text/lm_tokens.py), its model (called
`model.apply(variables, tokens_BxT, reset_B, mask_BxT, train=..., carry=...)`, with `initial_carry(batch_size)`)
and its training task. The config says the rest: `data.*` (the fortunes or a folder of your own text), `bptt`
(and an optional `bptt_jitter`), `ngram_orders` (the Kneser-Ney baseline's candidate orders, chosen on the
validation text), `samples.*`. A run writes vocab.json, samples.txt, results.json and checkpoints; the best by
validation loss is scored once on the test text and restored for generation and prediction.
"""

import functools
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research.core import experiment, inference, sharding, steps
from research.core.errors import InputError
from research.core.train_state import TrainState
from research.text import documents, fortunes, general_corpus, language_model, near_duplicates, ngram
from research.text.lm_stream import LMStream

VOCAB_FILE = "vocab.json"


def load_documents(config) -> tuple[fortunes.Split, str]:
    """(train/valid/test documents, the separator line between documents of a character stream). With
    `data.exclude_classifier_holdout`, the texts that experiments/fortunes_classifier.py holds out (its valid
    and test topics split with the same seed) are left out of training."""
    data = config.data
    if data.source == "fortunes":
        split = fortunes.lm_split(data.path, config.seed, data.test_fraction, data.valid_fraction)
        if data.get("exclude_classifier_holdout", False):
            held, _ = fortunes.topic_split(data.path, data.classifier_topics, config.seed)
            held_keys = {key for text in held.valid.texts + held.test.texts for key in near_duplicates.keys(text)}
            split = split._replace(train=[t for t in split.train  # near-duplicates of a held-out text too
                                          if not held_keys.intersection(near_duplicates.keys(t))])
        return split, "%\n"
    if data.source == "folder":
        if not data.path:
            raise InputError("config.data.path must name a folder of text files when data.source='folder'")
        split = documents.split_documents(documents.read_documents(data.path), config.seed, data.test_fraction,
                                          data.valid_fraction)
        return fortunes.Split(*split), "\n"
    if data.source == "general":  # ULMFiT's stage 1: research/text/general_corpus.py's, a document per paragraph
        texts = documents.read_documents(general_corpus.corpus_file(data.path or general_corpus.NAME))
        return fortunes.Split(*documents.split_documents(texts, config.seed, data.test_fraction,
                                                         data.valid_fraction)), "\n"
    raise InputError(f"config.data.source must be 'fortunes', 'folder' or 'general', got {data.source!r}")


def encode_splits(config, tokens, workdir: str | None = None) -> tuple[dict[str, np.ndarray], object]:
    """({split: one id stream of its documents}, the training text's vocabulary), the vocabulary saved to
    workdir/vocab.json when workdir is given."""
    split, separator = load_documents(config)
    ids, vocab = tokens.encode_splits(config, split, separator)
    if workdir is not None and jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        vocab.save(os.path.join(workdir, VOCAB_FILE))
    return ids, vocab


def init_variables(model, batch_size: int, window: int, rng) -> dict:
    init = jax.jit(functools.partial(model.init, train=False))
    return init(rng, jnp.zeros((batch_size, window), jnp.int32), jnp.zeros(batch_size, bool),
                jnp.ones((batch_size, window), bool), carry=model.initial_carry(batch_size))


def create_state_fn(model, batch_size: int, window: int) -> Callable:
    """`create_state(tx, rng)`: the model initialised on a batch of `batch_size` windows, its zero carry held in
    the train state (carried from one BPTT window to the next)."""

    def create_state(tx, rng):
        variables = init_variables(model, batch_size, window, rng)
        return TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats={}, tx=tx,
                                 carry=model.initial_carry(batch_size))

    return create_state


def sample_text(params, prompt: str, temperature: float, length: int, top_k: int = 0, seed: int = 0, *, model,
                vocab, tokens) -> str:
    """The prompt and `length` tokens sampled after it, as text; deterministic under `seed`."""
    sampler = language_model.make_sampler(model.apply, model.initial_carry, length)
    ids = sampler(params, jnp.asarray(tokens.prompt_ids(vocab, prompt)), jax.random.key(seed),
                  jnp.float32(temperature), jnp.int32(top_k))
    return tokens.written(vocab, prompt, ids)


def write_samples(config, workdir: str, sample: Callable) -> None:
    """samples.txt: one text per temperature of config.samples, each after a header naming its settings."""
    s = config.samples
    written = [f"=== temperature {t}, top_k {s.top_k}, prompt {s.prompt!r} ===\n"
               + sample(s.prompt, t, s.length, s.top_k, config.seed + i) for i, t in enumerate(s.temperatures)]
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "samples.txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(written) + "\n")


class Recipe(NamedTuple):
    """A language-model experiment's choices; its methods are the experiment's entry points."""
    tokens: object  # lm_tokens.Words() or lm_tokens.Characters()
    make_model: Callable  # (config, vocab_size) -> model
    task: Callable  # (config) -> steps.Task

    def setup(self, config, mesh) -> experiment.Setup:
        return self.setup_on(config, mesh, encode_splits(config, self.tokens))

    def setup_on(self, config, mesh, data: tuple[dict, object]) -> experiment.Setup:
        """The trainable pieces on already encoded (ids, vocab)."""
        ids, vocab = data
        jitter = config.get("bptt_jitter", 0)
        batches = LMStream(ids["train"], config.batch_size, config.bptt, mesh, config.seed, jitter)
        return experiment.Setup(
            create_state=create_state_fn(self.make_model(config, len(vocab)), config.batch_size, batches.window),
            make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
            train_step=steps.make_train_step(self.task(config)), batches=batches,
            eval_step=steps.make_eval_step(self.task(config)))

    def train_and_evaluate(self, config, workdir: str, stop_at: int | None = None) -> dict:
        """The n-gram baseline, the fit, held-out metrics from the best checkpoint, samples and results.json.
        `stop_at` stops the fit after that step (an interruption: rerun to resume) and returns {}."""
        timer = experiment.Timer()
        mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
        with timer("data"):
            ids, vocab = encode_splits(config, self.tokens, workdir)
        model = self.make_model(config, len(vocab))
        run = self.setup_on(config, mesh, (ids, vocab))
        with timer("ngram"):
            order, ngram_valid = ngram.best_order(ids["train"], ids["valid"], len(vocab), config.ngram_orders)
            ngram_test = ngram.KneserNey(ids["train"], len(vocab), order).loss(ids["test"])
        evaluator = lambda split, prefix: language_model.make_evaluator(
            model.apply, model.initial_carry, ids[split], config.eval_batch_size, config.bptt, prefix)
        with timer("lr_find"):
            learning_rate = experiment.learning_rate(config, workdir, run)
        evaluate_valid = evaluator("valid", "valid_")
        with timer("train"):
            state = experiment.fit(config, workdir, run, learning_rate, mesh, evaluate_valid, stop_at=stop_at)
        if stop_at is not None and stop_at < config.num_epochs * run.batches.steps_per_epoch:
            return {}
        state = inference.restore_trained(workdir, state, config.checkpoint.best_metric, config.checkpoint.best_mode)
        with timer("test"):
            metrics = {**evaluate_valid(state), **evaluator("test", "test_")(state)}
        metrics.update(ngram_order=order, ngram_valid_loss=ngram_valid[order], ngram_test_loss=ngram_test,
                       ngram_test_perplexity=float(np.exp(ngram_test)))
        with timer("samples"):
            write_samples(config, workdir, functools.partial(sample_text, state.params, model=model, vocab=vocab,
                                                             tokens=self.tokens))
        return experiment.write_results(workdir, metrics, config, timer.total(), mesh, learning_rate=learning_rate,
                                        steps=config.num_epochs * run.batches.steps_per_epoch, vocab_size=len(vocab),
                                        train_tokens=int(len(ids["train"])), ngram_valid_losses=ngram_valid)

    def restore(self, config, workdir: str) -> tuple[TrainState, object, object]:
        """(the run's best checkpoint as an inference state, its model, its vocabulary)."""
        vocab = self.tokens.load_vocab(os.path.join(workdir, VOCAB_FILE))
        model = self.make_model(config, len(vocab))
        variables = init_variables(model, 1, config.bptt, jax.random.key(config.seed))
        state = inference.restore_for_inference(workdir, model.apply, variables, config.checkpoint.best_metric,
                                                config.checkpoint.best_mode)
        return state, model, vocab

    def generate(self, config, workdir: str, prompt: str, temperature: float, length: int, top_k: int = 0,
                 seed: int = 0) -> str:
        """What the run's best checkpoint writes after `prompt` (scripts/generate.py prints the prompt before it)."""
        state, model, vocab = self.restore(config, workdir)
        written = sample_text(state.params, prompt, temperature, length, top_k, seed, model=model, vocab=vocab,
                              tokens=self.tokens)
        return self.tokens.continuation(prompt, written)

    def predict(self, config, workdir: str, input_path: str) -> list[dict]:
        """One row per text file under `input_path` (a folder or a file): its length and the run's loss on it. Files
        that cannot be scored (unreadable, too short) are named in a PartialPredictions after the others' rows."""
        if not os.path.exists(input_path):
            raise InputError(f"text file or directory not found: {input_path}")
        state, model, vocab = self.restore(config, workdir)
        files = [input_path] if os.path.isfile(input_path) else sorted(
            os.path.join(root, name) for root, _, names in os.walk(input_path) for name in names)
        rows, failed = [], []
        for file in files:
            try:
                ids = self.tokens.encode_documents(vocab, documents.read_documents(file))
                if len(ids) < 2:
                    raise InputError(f"{file} holds fewer than 2 tokens")
            except InputError as e:
                failed.append(str(e))
                continue
            found = language_model.make_evaluator(model.apply, model.initial_carry, ids, 1, config.bptt, "")(state)
            rows.append({"file": file, **self.tokens.scores(len(ids), found)})
        if failed:
            raise inference.PartialPredictions("; ".join(failed), rows)
        return rows

