"""The ULMFiT recipe (experiments/fortunes_classifier.py): a trained language model's encoder fine-tuned as a text
classifier with gradual unfreezing and discriminative rates (research/text/classifier.py), scored against
TF-IDF + logistic regression (research/text/baselines.py) and the same classifier trained without the
language model (the best of `config.scratch_learning_rates` on validation).

The config names the language-model run (`lm_workdir`: its vocab.json, run.json and checkpoints), the labelled
text (`data.*`: the fortune topics, a folder, a CSV or TFDS imdb_reviews), the padded lengths (`buckets`), the
classifier's dropouts and head (`classifier.*`), the unfreezing phases (`phase_epochs`, `learning_rate`,
`group_factor`) and the TF-IDF baseline's candidate C (`tfidf_cs`). A run writes classes.json, vocab.json, one
checkpoint folder per phase and per scratch rate, and results.json.
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
from research.text import baselines, classifier, fortunes, labelled_text, tokens
from research.text.awd_lstm import TextClassifier
from research.text.padded_text import BucketedBatches

CLASSES_FILE = "classes.json"
VOCAB_FILE = "vocab.json"


def load_data(config, vocab: tokens.Vocab):
    """(Split of LabelledTexts, {split: token ids per document}, class names). With `data.labels_per_class` = N
    > 0, the training split keeps N labelled documents per class (labelled_text.labels_per_class)."""
    d = config.data
    if d.source == "fortunes":
        split, class_names = fortunes.topic_split(d.path, d.num_topics, config.seed, d.test_fraction,
                                                  d.valid_fraction)
    else:
        split, class_names = labelled_text.load(d.source, d.path, config.seed, d.valid_fraction, d.test_fraction,
                                                d.text_column, d.label_column, config.data_dir)
    if d.get("labels_per_class", 0):
        train, _ = labelled_text.labels_per_class(split.train, d.labels_per_class, config.seed)
        split = split._replace(train=train)
    ids = {name: [vocab.numericalize(tokens.tokenize(t)) for t in part.texts]
           for name, part in split._asdict().items()}
    return split, ids, class_names


def make_model(config, vocab_size: int, num_classes: int, model_config: dict) -> TextClassifier:
    """The classifier over the language model's encoder sizes (`model_config`, the LM run's config.model)."""
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
    """The classifier without pretraining (for scripts/lr_find.py and the benchmarks)."""
    lm = classifier.load_language_model(config.lm_workdir)
    split, ids, class_names = load_data(config, lm.vocab)
    model = make_model(config, len(lm.vocab), len(class_names), lm.model_config)
    batches = BucketedBatches(ids["train"], split.train.labels, config.batch_size, config.buckets, mesh, config.seed)
    return experiment.Setup(lambda tx, rng: create_state(model, init_variables(model, rng), tx),
                            lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
                            steps.make_train_step(classifier.task()), batches, steps.make_eval_step(classifier.task()))


def train_and_evaluate(config, workdir: str) -> dict:
    """TF-IDF, then ULMFiT's phases from the language model's encoder, then the scratch runs; results.json."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        lm = classifier.load_language_model(config.lm_workdir)
        split, ids, class_names = load_data(config, lm.vocab)
        classifier.save_classes(workdir, class_names, config.max_tokens, config.buckets)
        if jax.process_index() == 0:
            lm.vocab.save(os.path.join(workdir, VOCAB_FILE))
    metrics = {}
    with timer("tfidf"):
        metrics.update(baselines.tfidf(split, config.tfidf_cs))
    model = make_model(config, len(lm.vocab), len(class_names), lm.model_config)
    batches = BucketedBatches(ids["train"], split.train.labels, config.batch_size, config.buckets, mesh, config.seed)
    predict_step = jax.jit(steps.make_predict(classifier.task()))
    evaluate = lambda state, name, prefix: classifier.evaluate_documents(
        predict_step, state, ids[name], getattr(split, name).labels, config.eval_batch_size, config.buckets,
        prefix)[0]

    def fit(variables, tx, num_steps, subdir, frozen=()):
        train_step = steps.make_train_step(classifier.task(), frozen)  # no backward pass below `frozen`
        return trainer.train(state=create_state(model, variables, tx), train_step=train_step, batches=batches,
                             num_steps=num_steps, mesh=mesh, seed=config.seed, workdir=os.path.join(workdir, subdir),
                             evaluate=lambda s: evaluate(s, "valid", "valid_"), checkpoint_every=num_steps,
                             log_every=config.log_every, keep_checkpoints=1)

    spe = batches.steps_per_epoch
    with timer("ulmfit"):
        variables = init_variables(model, jax.random.key(config.seed))
        variables = {"params": {**variables["params"], "encoder": lm.encoder_params},
                     "batch_stats": variables["batch_stats"]}
        groups = model.layer_groups()
        phases = classifier.ulmfit_phases(len(groups), tuple(config.phase_epochs), config.learning_rate)
        make_tx = functools.partial(experiment.one_cycle_optimizer, config)
        for i, phase in enumerate(phases):
            tx = classifier.phase_optimizer(make_tx, groups, phase, phase.epochs * spe, config.group_factor)
            state = fit(variables, tx, phase.epochs * spe, f"ulmfit_phase{i + 1}",
                        classifier.frozen_groups(groups, phase))
            variables = {"params": state.params, "batch_stats": state.batch_stats}
        metrics.update({f"ulmfit_{k}": v for k, v in evaluate(state, "valid", "valid_").items()})
        metrics.update({f"ulmfit_{k}": v for k, v in evaluate(state, "test", "test_").items()})
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
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, class_names=class_names,
                                    train_documents=len(split.train.texts), test_documents=len(split.test.texts))


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
        class_names = json.load(f)["class_names"]
    _, lm_config = inference.read_run_info(config.lm_workdir)
    model = make_model(config, len(vocab), len(class_names), lm_config["model"])
    last_phase = os.path.join(workdir, f"ulmfit_phase{len(config.phase_epochs)}")
    state = inference.restore_for_inference(last_phase, model.apply, init_variables(model, jax.random.key(0)))
    names, texts = read_inputs(input_path)
    docs = [vocab.numericalize(tokens.tokenize(t)) for t in texts]
    _, logits = classifier.evaluate_documents(jax.jit(steps.make_predict(classifier.task())), state, docs,
                                              np.zeros(len(docs), np.int32), config.eval_batch_size, config.buckets,
                                              "")
    probabilities = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    return [{"input": n, "predicted": class_names[int(p.argmax())], "probability": round(float(p.max()), 4)}
            for n, p in zip(names, probabilities)]
