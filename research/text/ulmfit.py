"""The ULMFiT recipe (experiments/fortunes_classifier.py), Howard & Ruder's three stages: (1) a language model
pretrained on general text (`pretrained`: scripts/pretrain_lm.py's artifact, fastai's WT103_FWD, or a language-model
run's workdir), (2) that model fine-tuned on the target task's training texts over their vocabulary
(research/text/lm_finetune.py; `lm_finetune.*`), (3) its encoder fine-tuned as a classifier with gradual
unfreezing and discriminative rates (research/text/classifier.py). Scored against TF-IDF + logistic regression
(research/text/baselines.py), the same classifier trained without any language model (the best of
`scratch_learning_rates` on validation), and with `no_stage1_ablation`, stages 2 and 3 from a fresh language
model (ULMFiT without general pretraining).

The config also names the labelled text (`data.*`: the fortune topics, a folder, a CSV or TFDS imdb_reviews;
`data.labels_per_class`), the padded lengths (`buckets`; () = chosen from the documents' lengths, none cut when
`max_tokens` is 0), the classifier's dropouts, head and BPT3C window (`classifier.*`), the unfreezing phases
(`phase_epochs`, `learning_rate`, `group_factor`) and the TF-IDF baseline's candidate C (`tfidf_cs`). A run
writes classes.json (with the language model's sizes and the padded lengths), vocab.json, a checkpoint folder per
stage-2 run, per phase and per scratch rate, and results.json.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from research.core import experiment, inference, sharding, steps, trainer
from research.core.errors import InputError
from research.core.train_state import TrainState
from research.text import (baselines, classifier, fortunes, labelled_text, lm_finetune, padded_text, pretrained_lm,
                           tokens, wt103)
from research.text.awd_lstm import TextClassifier
from research.text.padded_text import BucketedBatches

CLASSES_FILE = "classes.json"
VOCAB_FILE = "vocab.json"
# AWD-LSTM's dropouts times fastai's drop_mult 0.3, for a pretrained model that brings only its sizes (WT103).
LM_DROPOUTS = dict(embed_drop=0.03, input_drop=0.18, hidden_drop=0.09, weight_drop=0.15, output_drop=0.12)


def load_split(config):
    """(Split of LabelledTexts, unlabelled training texts, class names). The unlabelled texts (stage 2 reads
    them): a folder's train/`data.unlabelled_folder` (aclImdb's unsup), TFDS imdb_reviews' unsupervised split,
    and with `data.labels_per_class` = N > 0 the labelled training documents beyond N per class
    (labelled_text.labels_per_class); at most `lm_finetune.max_unlabelled` of them (0: all), drawn by the seed."""
    d = config.data
    unlabelled = []
    if d.source == "fortunes":
        split, class_names = fortunes.topic_split(d.path, d.num_topics, config.seed, d.test_fraction,
                                                  d.valid_fraction)
    else:
        split, class_names = labelled_text.load(d.source, d.path, config.seed, d.valid_fraction, d.test_fraction,
                                                d.text_column, d.label_column, config.data_dir, d.unlabelled_folder)
        if d.source == "folder":
            unlabelled = labelled_text.read_unlabelled_folder(d.path, d.unlabelled_folder)
        elif d.source == "tfds":
            unlabelled = labelled_text.tfds_imdb_unlabelled(config.data_dir)
    if d.labels_per_class:
        train, rest = labelled_text.labels_per_class(split.train, d.labels_per_class, config.seed)
        split, unlabelled = split._replace(train=train), rest + unlabelled
    limit = config.lm_finetune.max_unlabelled
    if 0 < limit < len(unlabelled):
        keep = np.sort(np.random.default_rng(config.seed).permutation(len(unlabelled))[:limit])
        unlabelled = [unlabelled[i] for i in keep]
    return split, unlabelled, class_names


def encode(split, vocab: tokens.Vocab) -> dict[str, list[np.ndarray]]:
    return {name: [vocab.numericalize(tokens.tokenize(t)) for t in part.texts]
            for name, part in split._asdict().items()}


def pretrained_model(config) -> tuple[wt103.Pretrained, dict]:
    """(stage 1's language model named by `config.pretrained`, its AWDLSTM arguments with dropouts)."""
    if not config.pretrained:
        raise InputError("config.pretrained is empty: name a pretrained language model (scripts/pretrain_lm.py's "
                         "artifact, WT103_FWD, or a language-model run's workdir)")
    pretrained = pretrained_lm.load(config.pretrained)
    return pretrained, {**LM_DROPOUTS, **pretrained.model_config}


def language_model(config, split, unlabelled, pretrained, model_config, mesh, workdir, name="lm_finetune"):
    """(stage 2's language model, its metrics): the pretrained model (None: a fresh one) fine-tuned on the
    target's training texts over their vocabulary; with `lm_finetune.epochs` 0, the pretrained model as it is."""
    if not config.lm_finetune.epochs:
        return classifier.LanguageModel(pretrained.vocab, model_config, pretrained.params["encoder"],
                                        pretrained.params["output_bias"]), {}
    texts = list(split.train.texts) + list(unlabelled)
    vocab = lm_finetune.target_vocab(texts, config.lm_finetune.vocab_size, config.lm_finetune.min_freq)
    tuned = lm_finetune.fine_tune(config, texts, split.valid.texts, vocab, model_config, pretrained, mesh,
                                  os.path.join(workdir, name))
    return tuned.lm, {f"{name}_{k}": v for k, v in tuned.metrics.items()}


def padded_lengths(config, ids: dict[str, list[np.ndarray]]) -> tuple[int, ...]:
    """`config.buckets`, or with () the padded lengths from every document's length (training, validation, test:
    their sizes only), multiples of BPT3C's window, none over `max_tokens` (0: none cut, documents read whole)."""
    if config.buckets:
        return tuple(config.buckets)
    lengths = [len(doc) for part in ids.values() for doc in part]
    return padded_text.length_buckets(lengths, config.classifier.bptt or 16, config.max_tokens)


def make_model(config, vocab_size: int, num_classes: int, model_config: dict) -> TextClassifier:
    """The classifier over the language model's encoder sizes (`model_config`, the LM's AWDLSTM arguments)."""
    lm = {k: model_config[k] for k in ("embed_dim", "hidden", "num_layers")}
    lm["cell"] = model_config.get("cell", "lstm")  # language models saved before the QRNN option are LSTMs
    c = config.classifier.to_dict()
    return TextClassifier(vocab_size, num_classes, **lm, **{**c, "head_drops": tuple(c["head_drops"])})


def init_variables(model: TextClassifier, rng, length: int = 8) -> dict:
    init = jax.jit(functools.partial(model.init, train=False))
    return init(rng, jnp.zeros((2, length), jnp.int32), jnp.ones((2, length), bool))


def create_state(model: TextClassifier, variables: dict, tx) -> TrainState:
    return TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats=variables["batch_stats"],
                             tx=tx)


def setup(config, mesh) -> experiment.Setup:
    """The classifier without pretraining, over the vocabulary stage 2 would use (for scripts/lr_find.py and the
    benchmarks)."""
    split, unlabelled, class_names = load_split(config)
    pretrained, model_config = pretrained_model(config)
    vocab = (lm_finetune.target_vocab(list(split.train.texts) + unlabelled, config.lm_finetune.vocab_size,
                                      config.lm_finetune.min_freq) if config.lm_finetune.epochs else pretrained.vocab)
    ids = encode(split, vocab)
    model = make_model(config, len(vocab), len(class_names), model_config)
    batches = BucketedBatches(ids["train"], split.train.labels, config.batch_size, padded_lengths(config, ids), mesh,
                              config.seed)
    return experiment.Setup(lambda tx, rng: create_state(model, init_variables(model, rng), tx),
                            lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
                            steps.make_train_step(classifier.task()), batches, steps.make_eval_step(classifier.task()))


def train_and_evaluate(config, workdir: str) -> dict:
    """TF-IDF; stage 2 (the pretrained LM fine-tuned on the target texts); stage 3 (the classifier by gradual
    unfreezing); the same classifier without pretraining; with `no_stage1_ablation`, stages 2 and 3 from a
    fresh language model. results.json."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        split, unlabelled, class_names = load_split(config)
        pretrained, model_config = pretrained_model(config)
    metrics = {}
    with timer("tfidf"):
        metrics.update(baselines.tfidf(split, config.tfidf_cs))
    with timer("stage2"):
        lm, found = language_model(config, split, unlabelled, pretrained, model_config, mesh, workdir)
        metrics.update(found)
    if jax.process_index() == 0:
        lm.vocab.save(os.path.join(workdir, VOCAB_FILE))
    ids = encode(split, lm.vocab)
    buckets = padded_lengths(config, ids)
    classifier.save_classes(workdir, class_names, config.max_tokens, buckets, model_config)
    model = make_model(config, len(lm.vocab), len(class_names), model_config)
    batches = BucketedBatches(ids["train"], split.train.labels, config.batch_size, buckets, mesh, config.seed)
    predict_step = jax.jit(steps.make_predict(classifier.task()))
    evaluate = lambda state, name, prefix: classifier.evaluate_documents(
        predict_step, state, ids[name], getattr(split, name).labels, config.eval_batch_size, buckets, prefix)[0]

    def fit(variables, tx, num_steps, subdir, frozen=()):
        train_step = steps.make_train_step(classifier.task(), frozen)  # no backward pass below `frozen`
        return trainer.train(state=create_state(model, variables, tx), train_step=train_step, batches=batches,
                             num_steps=num_steps, mesh=mesh, seed=config.seed, workdir=os.path.join(workdir, subdir),
                             evaluate=lambda s: evaluate(s, "valid", "valid_"), checkpoint_every=num_steps,
                             log_every=config.log_every, keep_checkpoints=1)

    spe = batches.steps_per_epoch

    def stage3(encoder_params, prefix):
        """The classifier on `encoder_params` by gradual unfreezing; its valid and test metrics."""
        variables = init_variables(model, jax.random.key(config.seed))
        variables = {"params": {**variables["params"], "encoder": encoder_params},
                     "batch_stats": variables["batch_stats"]}
        groups = model.layer_groups()
        phases = classifier.ulmfit_phases(len(groups), tuple(config.phase_epochs), config.learning_rate)
        make_tx = functools.partial(experiment.one_cycle_optimizer, config)
        for i, phase in enumerate(phases):
            tx = classifier.phase_optimizer(make_tx, groups, phase, phase.epochs * spe, config.group_factor)
            state = fit(variables, tx, phase.epochs * spe, f"{prefix}phase{i + 1}",
                        classifier.frozen_groups(groups, phase))
            variables = {"params": state.params, "batch_stats": state.batch_stats}
        return {f"{prefix}{k}": v for part, p in (("valid", "valid_"), ("test", "test_"))
                for k, v in evaluate(state, part, p).items()}

    with timer("stage3"):
        metrics.update(stage3(lm.encoder_params, "ulmfit_"))
    if config.no_stage1_ablation:
        with timer("no_stage1"):
            fresh, found = language_model(config, split, unlabelled, None, model_config, mesh, workdir,
                                          "nostage1_lm_finetune")
            metrics.update(found)
            metrics.update(stage3(fresh.encoder_params, "nostage1_"))
    with timer("scratch"):
        total = sum(config.phase_epochs) * spe
        best = None
        for lr in config.scratch_learning_rates:
            state = fit(init_variables(model, jax.random.key(config.seed)),
                        experiment.one_cycle_optimizer(config, lr, total), total, f"scratch_lr{lr:g}")
            found = evaluate(state, "valid", "valid_")
            if best is None or found["valid_accuracy"] > best[0]["valid_accuracy"]:
                best = (found, state, lr)
        found, state, lr = best
        metrics.update({f"scratch_{k}": v for k, v in found.items()}, scratch_learning_rate=lr)
        metrics.update({f"scratch_{k}": v for k, v in evaluate(state, "test", "test_").items()})
    timings = timer.total()
    return experiment.write_results(workdir, metrics, config, timings, mesh, class_names=class_names,
                                    train_documents=len(split.train.texts), unlabelled_documents=len(unlabelled),
                                    test_documents=len(split.test.texts), buckets=list(buckets),
                                    stages_2_and_3_seconds=timings.get("stage2", 0.0) + timings.get("stage3", 0.0))


def read_inputs(input_path: str) -> tuple[list[str], list[str]]:
    """(names, texts): a folder's files (one text each, by name), or one file's non-empty lines."""
    if os.path.isdir(input_path):
        names = sorted(os.listdir(input_path))
        return names, [labelled_text.read_text(os.path.join(input_path, n)) for n in names]
    if not os.path.isfile(input_path):
        raise InputError(f"text file or directory not found: {input_path}")
    texts = [line for line in labelled_text.read_text(input_path).splitlines() if line.strip()]
    return [f"line {i + 1}" for i in range(len(texts))], texts


def predict(config, workdir: str, input_path: str) -> list[dict]:
    """Rows of input (file or line), predicted topic and its probability, from the last ULMFiT phase."""
    vocab = tokens.Vocab.load(os.path.join(workdir, VOCAB_FILE))
    with open(os.path.join(workdir, CLASSES_FILE)) as f:
        saved = json.load(f)
    class_names, model_config, buckets = saved["class_names"], saved["language_model"], saved["buckets"]
    model = make_model(config, len(vocab), len(class_names), model_config)
    last_phase = os.path.join(workdir, f"ulmfit_phase{len(config.phase_epochs)}")
    state = inference.restore_for_inference(last_phase, model.apply, init_variables(model, jax.random.key(0)))
    names, texts = read_inputs(input_path)
    docs = [vocab.numericalize(tokens.tokenize(t)) for t in texts]
    _, logits = classifier.evaluate_documents(jax.jit(steps.make_predict(classifier.task())), state, docs,
                                              np.zeros(len(docs), np.int32), config.eval_batch_size, buckets, "")
    probabilities = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    return [{"input": n, "predicted": class_names[int(p.argmax())], "probability": round(float(p.max()), 4)}
            for n, p in zip(names, probabilities)]
