"""Every experiment file and every preset that can run offline, end to end on a tiny budget (a few steps, a few
hundred examples), as scripts/train.py runs it (in process): it writes results.json and run.json. Presets that
need a network (pets, IMDB) run on TFDS's mock data. Then scripts/predict.py, as a user runs it
(from the saved run's workdir, in a subprocess), on the finished runs, its output scored against the known labels
and against the trivial baseline on the same inputs (the majority class, all background, the unigram model)."""

import ast
import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from conftest import REPO_ROOT

IMAGES = ["data.train_examples=1000", "data.test_examples=300", "batch_size=50", "eval_batch_size=150",
          "num_epochs=2", "learning_rate=1e-2", "model.stem_width=16", "model.stage_sizes=(1,1,1)",
          "model.stage_widths=(16,32,64)", "top_losses=4"]
MOSAICS = ["data_config=small", "epochs=(1,1)", "lr_find.num_steps=5", "eval_batch_size=250",
           "model.stem_width=16", "model.stage_widths=(16,32,64)", "model.stage_sizes=(1,1,1)"]
# About 3000 source images (23 pretraining steps) and 600 per target class, 20 of them labelled.
TRANSFER = ["train_examples=6000", "test_examples=1000", "valid_per_class=40", "labelled_per_class=(20,)",
            "pretrain.epochs=1", "head_phase.steps=12", "finetune.cycle_steps=4", "finetune.cycle_mult=2",
            "finetune.num_cycles=2", "scratch_learning_rates=(1e-2,1e-4)", "model.stem_width=16",
            "model.stage_sizes=(1,1)", "model.stage_widths=(16,32)", "head.hidden=(64,)", "eval_batch_size=250"]
SEGMENTATION = ["data.canvases=small", "data.train_examples=320", "batch_size=32", "eval_batch_size=100",
                "num_epochs=3", "learning_rate=1e-2", "examples_shown=2", "model.stem_width=8",
                "model.stage_widths=(16,32,64)", "model.stage_sizes=(1,1,1)", "model.stage_strides=(2,2,2)",
                "model.final_width=8", "log_every=2"]
COLLAB = ["num_epochs=1", "interpret=False"]
LM = ["num_epochs=1", "batch_size=16", "bptt=30", "eval_batch_size=16", "ngram_orders=(2,)", "samples.length=10",
      "lr_find.num_steps=5"]
TEXT = ["data.source=folder", "data.path={corpus}"]
CHARS = [*TEXT, "num_epochs=1", "batch_size=16", "bptt=64", "eval_batch_size=16", "ngram_orders=(2,)",
         "samples.length=20", "model.hidden_sizes=(64,64)", "learning_rate=1e-2"]
PETS = ["weights=", "data.image_size=32", "batch_size=8", "eval_batch_size=8", "head_phase.epochs=1",
        "finetune.num_cycles=1", "lr_find.num_steps=3"]

# "experiment:preset" -> overrides (--config.KEY=VALUE), with {tfds} (the session's TFDS dir), {corpus} (a folder of
# three fortune topics), {topic} (80 fortunes of one), {classes} (a CSV of those topics' texts and names) and {CASE}
# (that case's workdir) filled in. MOCK: trained in process on TFDS's mock data.
CASES = {
    "fashion_mnist:cpu": [*[o for o in IMAGES if not o.startswith("learning_rate")], "lr_find.num_steps=12"],
    "fashion_mnist:long": IMAGES,
    "fashion_mnist_sgdr:cpu": IMAGES,
    "fashion_mnist_wide_head:cpu": IMAGES,
    "fashion_mosaics_multilabel:cpu": MOSAICS,
    "fashion_mosaics_multilabel:small": [],  # the preset's own budget (6 + 1 epochs of 2000 small mosaics)
    "fashion_transfer:cpu": TRANSFER,
    "segmentation:default": SEGMENTATION,
    "movielens:dot": COLLAB,
    "movielens:net": COLLAB,
    "movielens:bayes": ["bayes.num_sweeps=40", "bayes.burn_in=10", "interpret=False"],
    "fortunes_lm:cpu": [*TEXT, *LM, "num_epochs=4", "learning_rate=1e-2", "model.hidden=128", "model.embed_dim=64",
                        "vocab.min_freq=2"],
    "fortunes_lm:long": ["data.source=folder", "data.path={topic}", *LM, "batch_size=8", "eval_batch_size=8",
                         "num_epochs=1"],  # the paper's sizes: 80 fortunes (~2k tokens) for one epoch
    "fortunes_classifier:cpu": ["data.source=csv", "data.path={classes}", "pretrained={fortunes_lm:cpu}",
                                "max_tokens=64",  # lengths from the data, all capped at 64: one compilation
                                "phase_epochs=(1,1,1,2)", "num_epochs=2", "batch_size=16", "lm_finetune.epochs=1",
                                "no_stage1_ablation=False", "scratch_learning_rates=(1e-2,)", "tfidf_cs=(1.0,)",
                                "lr_find.num_steps=5"],
    "fortunes_classifier:imdb": ["pretrained={fortunes_lm:cpu}", "phase_epochs=(1,1,1,1)", "num_epochs=1",
                                 "batch_size=8", "buckets=(64,)", "max_tokens=64", "scratch_learning_rates=(1e-2,)",
                                 "tfidf_cs=(1.0,)", "lr_find.num_steps=3", "lm_finetune.epochs=1",
                                 "lm_finetune.batch_size=4", "lm_finetune.bptt=16"],  # with the no-stage-1 ablation
    # segmentation:pets is not here: TFDS's mock oxford_iiit_pet gives trimaps of other sizes than their images,
    # which the loader refuses; tests/vision/test_segmentation.py runs the preset's data and model on made records.
    "char_rnn:cpu": CHARS,
    "char_rnn:gru": CHARS,
    "char_rnn:long": [*CHARS, "model.hidden_sizes=(128,128)"],
    "pets:default": [*PETS, "stage_sizes=(1,1,1,1)"],  # the cloud preset's ResNet-34 with one block per stage
    "pets:dogs_vs_cats": [*PETS, "stage_sizes=(1,1,1,1)"],
    "sales_tabular:txhousing": ["ensemble=2", "min_steps=20", "max_steps=40", "evaluations=2", "baselines=False",
                                "interpret=False", "model.hidden=(32,32)", "model.dropouts=(0.0,0.0)"],
    # sales_tabular:rossmann needs Kaggle's CSVs: tests/tabular/test_tabular.py runs its joins and features on a
    # hand-made miniature of them.
}
MOCK = {"pets:default", "pets:dogs_vs_cats", "fortunes_classifier:imdb"}
# Under pytest-xdist (`-n 2 --dist loadgroup`, what CI runs) a group's runs and every test that reads them go to one
# worker, so each run is trained once; the two workers take groups of about equal time.
GROUPS = {
    "runs_images": ("fashion_mnist:cpu", "fashion_mnist:long", "fashion_mnist_sgdr:cpu",
                    "fashion_mnist_wide_head:cpu", "fashion_transfer:cpu"),
    "runs_mosaics_segmentation": ("fashion_mosaics_multilabel:cpu", "fashion_mosaics_multilabel:small",
                                  "segmentation:default"),
    "runs_pets": ("pets:default", "pets:dogs_vs_cats"),
    "runs_words": ("fortunes_lm:cpu", "fortunes_lm:long", "fortunes_classifier:cpu", "fortunes_classifier:imdb"),
    "runs_chars_collab_tabular": ("char_rnn:cpu", "char_rnn:gru", "char_rnn:long", "movielens:dot", "movielens:net",
                                  "movielens:bayes", "sales_tabular:txhousing"),
}


def runs_group(*cases: str):
    """The xdist_group mark of the group that trains `cases` (all in one group)."""
    (name,) = {group for group, members in GROUPS.items() for case in cases if case in members}
    return pytest.mark.xdist_group(name)


TOPICS = ("food", "startrek", "perl")


@pytest.fixture(scope="session")
def text_data(tmp_path_factory) -> dict[str, str]:
    """{corpus}: a folder with a file per topic (a paragraph per fortune) and an empty file; {topic}: a folder with the second topic's
    first 80 fortunes; {classes}: a CSV of text and topic."""
    from research.text import fortunes
    root = tmp_path_factory.mktemp("text")
    (root / "corpus").mkdir()
    (root / "topic").mkdir()
    rows = []
    for topic in TOPICS:
        texts = fortunes.read_fortunes(fortunes.topic_files()[topic])
        (root / "corpus" / f"{topic}.txt").write_text("\n".join(texts))
        if topic == TOPICS[1]:
            (root / "topic" / f"{topic}.txt").write_text("\n".join(texts[:80]))
        rows += [{"text": t, "label": topic} for t in texts]
    (root / "corpus" / "empty.txt").write_text("")  # skipped with a warning; predict.py names it
    with open(root / "classes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return {"corpus": str(root / "corpus"), "topic": str(root / "topic"), "classes": str(root / "classes.csv")}


def _overrides(case: str, fill: dict, runs) -> list[str]:
    filled = []
    for item in CASES[case]:
        for other in CASES:
            if "{" + other + "}" in item:
                item = item.replace("{" + other + "}", str(runs(other)))
        filled.append("--config." + item.format(**fill))
    return filled


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory, tfds_dir, text_data):
    """`runs(case) -> workdir` of the case's finished run, trained once per session on first use."""
    from research.vision import canvases, fashion_mosaics
    fashion_mosaics.load("test", tfds_dir, "small")  # the derived datasets, built once into the session's dir
    canvases.load("test", tfds_dir, "small")
    done, root = {}, tmp_path_factory.mktemp("experiments")
    fill = {"tfds": tfds_dir, **text_data}

    def runs(case: str):
        if case not in done:
            done[case] = None  # a case that failed fails again, with its own error, wherever it is used
            overrides = _overrides(case, fill, runs)
            done[case] = _train(case, overrides, tfds_dir, str(root / case.replace(":", "_")))
        assert done[case] is not None, f"{case} failed to train (see the first test that used it)"
        return done[case]

    return runs


def _train(case: str, overrides: list[str], tfds_dir: str, workdir: str):
    """scripts/train.py's work in process (the suite's compile-once check sees it, and the ~5 s start of a
    process is saved per case): the experiment's config with the overrides (locked: a misspelt key fails), its
    train_and_evaluate, run.json. MOCK cases run on TFDS's mock examples (the real datasets need a download)."""
    import importlib

    import tensorflow_datasets as tfds

    from research.core import inference
    name, preset = case.split(":")
    module = importlib.import_module(f"experiments.{name}")
    config = module.get_config(preset)
    config.data_dir = tfds_dir
    for item in overrides:
        key, value = item[len("--config."):].split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value if isinstance(node[leaf], str) else ast.literal_eval(value)
    config.lock()
    if case in MOCK:
        with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
            module.train_and_evaluate(config, workdir)
    else:
        module.train_and_evaluate(config, workdir)
    inference.write_run_info(workdir, f"experiments/{name}.py", config)
    return pathlib.Path(workdir)


@pytest.mark.parametrize("case", [pytest.param(case, marks=runs_group(case)) for case in CASES])
def test_every_experiment_and_preset_runs_end_to_end(finished_runs, case):
    workdir = finished_runs(case)
    with open(workdir / "results.json") as f:
        results = json.load(f)
    assert results["metrics"] and all(np.isfinite(v) for v in results["metrics"].values()
                                      if isinstance(v, float)), results["metrics"]
    assert (workdir / "run.json").exists()


def _predict(workdir, input_path, output) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "scripts/predict.py", f"--workdir={workdir}", f"--input={input_path}",
                          f"--output={output}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_images(folder, images, names):
    folder.mkdir()
    for image, name in zip(images, names):
        PIL.Image.fromarray(image[..., 0]).save(folder / f"{name}.png")


@runs_group("fashion_mnist:cpu", "fashion_mnist_sgdr:cpu", "fashion_mnist_wide_head:cpu", "fashion_transfer:cpu")
@pytest.mark.parametrize("case", ["fashion_mnist:cpu", "fashion_mnist_sgdr:cpu", "fashion_mnist_wide_head:cpu",
                                  "fashion_transfer:cpu"])
def test_predict_classifies_new_images_better_than_the_majority_class(finished_runs, case, fashion_test_split,
                                                                     tmp_path):
    """The last 200 test images of the run's classes (the runs scored the first 300 or 500): accuracy from
    predict.py's CSV, against always predicting the sample's most frequent class."""
    from research.vision import fashion_mnist
    images, labels = fashion_test_split
    classes = range(5, 10) if case.startswith("fashion_transfer") else range(10)  # transfer: the target classes
    rows = np.flatnonzero(np.isin(labels, classes))[-200:]
    _write_images(tmp_path / "new", images[rows], [f"{i}_{labels[i]}" for i in rows])
    _predict(finished_runs(case), tmp_path / "new", tmp_path / "p.csv")
    predicted = _rows(tmp_path / "p.csv")
    truth = lambda row: fashion_mnist.CLASS_NAMES[int(os.path.basename(row["file"])[:-4].split("_")[1])]
    accuracy = np.mean([row["predicted"] == truth(row) for row in predicted])
    majority = np.bincount(labels[rows]).max() / len(rows)
    assert len(predicted) == 200 and accuracy > majority + 0.3, (accuracy, majority)
    assert {row["predicted"] for row in predicted} <= {fashion_mnist.CLASS_NAMES[k] for k in classes}


@runs_group("pets:default", "pets:dogs_vs_cats")
def test_predict_on_a_pets_run_made_on_mock_data(finished_runs, fashion_test_split, tmp_path):
    """pets (ImageNet classifier recipe) trained on TFDS's mock examples, whose labels are random: predict.py
    gives every image one of the 37 breeds with its probability (no accuracy to check on random labels)."""
    images, _ = fashion_test_split
    _write_images(tmp_path / "new", images[:6], [f"{i}" for i in range(6)])
    for case in ("pets:default", "pets:dogs_vs_cats"):
        _predict(finished_runs(case), tmp_path / "new", tmp_path / "p.csv")
        predicted = _rows(tmp_path / "p.csv")
        classes = json.load(open(finished_runs(case) / "results.json")).get("class_names")
        assert len(predicted) == 6 and all(0 < float(r["probability"]) <= 1 for r in predicted), case
        if classes:
            assert {r["predicted"] for r in predicted} <= set(classes), case


@runs_group("fashion_mosaics_multilabel:small")
def test_predict_finds_the_labels_of_new_mosaics_better_than_predicting_every_class(finished_runs, tfds_dir,
                                                                                   tmp_path):
    from research.vision import fashion_mnist, fashion_mosaics, multilabel
    images, labels = fashion_mosaics.load("validation", tfds_dir, "small")
    images, labels = images[:100], labels[:100]
    _write_images(tmp_path / "new", images, [f"{i:03d}" for i in range(100)])
    _predict(finished_runs("fashion_mosaics_multilabel:small"), tmp_path / "new", tmp_path / "p.csv")
    predicted = sorted(_rows(tmp_path / "p.csv"), key=lambda r: r["file"])
    names = list(fashion_mnist.CLASS_NAMES)
    multi_hot = np.zeros_like(labels)
    for i, row in enumerate(predicted):
        for name in names:  # "Ankle boot" holds a space: match whole class names
            if f" {name} " in f" {row['predicted']} ":
                multi_hot[i, names.index(name)] = 1
    f2 = multilabel.mean_fbeta(multi_hot, labels, 0.5, beta=2.0)
    every_class = multilabel.mean_fbeta(np.ones_like(labels), labels, 0.5, beta=2.0)
    assert f2 > every_class + 0.1, (f2, every_class)


@runs_group("segmentation:default")
def test_predict_writes_masks_better_than_all_background(finished_runs, tfds_dir, tmp_path):
    """Pixel accuracy of predict.py's mask PNGs on 50 test canvases against their true masks, beside the
    majority-class predictor (every pixel background); and foreground IoU above zero (all background scores 0)."""
    from research.vision import canvases
    images, masks = canvases.load("test", tfds_dir, "small")
    images, masks = images[:50], masks[:50]
    _write_images(tmp_path / "new", images, [f"{i:03d}" for i in range(50)])
    _predict(finished_runs("segmentation:default"), tmp_path / "new", tmp_path / "out")
    rows = sorted(_rows(tmp_path / "out" / "predictions.csv"), key=lambda r: r["file"])
    predicted = np.stack([np.asarray(PIL.Image.open(r["mask"])) for r in rows])
    assert predicted.shape == masks.shape
    accuracy, background = np.mean(predicted == masks), np.mean(masks == 0)
    foreground_iou = np.sum((predicted > 0) & (masks > 0)) / np.sum((predicted > 0) | (masks > 0))
    assert accuracy > background + 0.02 and foreground_iou > 0.5, (accuracy, background, foreground_iou)


@runs_group("fortunes_lm:cpu")
def test_a_language_model_run_published_as_a_named_artifact_loads_by_name_and_checks_its_digests(
        finished_runs, tmp_path, monkeypatch):
    """Stage 1's product (scripts/pretrain_lm.py ends with pretrained_lm.publish): the run's best checkpoint
    stored under the cache by name, loaded back by that name equal to the run's own, a damaged file refused."""
    from research.core.errors import InputError
    from research.text import classifier, pretrained_lm
    monkeypatch.setenv("FASTJAX_CACHE", str(tmp_path))
    workdir = str(finished_runs("fortunes_lm:cpu"))
    manifest = pretrained_lm.publish(workdir, "tiny-lm-v1")
    assert pretrained_lm.available() == ["tiny-lm-v1"] and manifest["vocab_size"] > 100
    loaded, run = pretrained_lm.load("tiny-lm-v1"), classifier.load_language_model(workdir)
    assert loaded.vocab.itos == run.vocab.itos and loaded.model_config == run.model_config
    flat = pretrained_lm.flatten({"encoder": run.encoder_params, "output_bias": run.output_bias})
    assert pretrained_lm.flatten(loaded.params).keys() == flat.keys()
    for key, value in pretrained_lm.flatten(loaded.params).items():
        np.testing.assert_array_equal(value, flat[key])
    pretrained_lm.publish(workdir, "tiny-lm-v1")  # publishing again replaces it whole
    assert sorted(os.listdir(tmp_path / "pretrained")) == ["tiny-lm-v1"]
    with open(tmp_path / "pretrained" / "tiny-lm-v1" / "vocab.json", "a") as f:
        f.write(" ")
    with pytest.raises(InputError, match="SHA-256"):
        pretrained_lm.load("tiny-lm-v1")
    with pytest.raises(InputError, match="have: tiny-lm-v1"):
        pretrained_lm.load("no-such-lm")


@runs_group("fortunes_classifier:imdb")
def test_the_imdb_preset_runs_the_three_stages_and_the_no_stage1_ablation(finished_runs):
    """The :imdb flow on TFDS's mock reviews: stage 2 from the pretrained model (its tokens transferred) and from a
    fresh one (nothing transferred) on the labelled and the unsupervised reviews, both classifiers, TF-IDF and the
    scratch baseline all scored."""
    results = json.load(open(finished_runs("fortunes_classifier:imdb") / "results.json"))
    metrics = results["metrics"]
    assert results["unlabelled_documents"] > 0  # imdb_reviews' unsupervised split serves stage 2
    for key in ("tfidf_test_accuracy", "ulmfit_test_accuracy", "nostage1_test_accuracy", "scratch_test_accuracy",
                "lm_finetune_after_valid_loss", "nostage1_lm_finetune_after_valid_loss"):
        assert np.isfinite(metrics[key]), (key, metrics)
    assert metrics["lm_finetune_known_tokens"] > 0 and "nostage1_lm_finetune_known_tokens" not in metrics


@runs_group("movielens:dot", "movielens:bayes")
def test_predict_recommends_films_users_rated_highly_not_at_random(finished_runs, movielens_frame, tmp_path):
    """Top-10 films for 30 users from predict.py: their mean rating over everyone beats the mean film's (a model
    that learnt nothing recommends films at random)."""
    frame = movielens_frame
    users = list(frame["user"].drop_duplicates()[:30])
    import pandas as pd
    pd.DataFrame({"user": users}).to_csv(tmp_path / "users.csv", index=False)
    for case in ("movielens:dot", "movielens:bayes"):
        _predict(finished_runs(case), tmp_path / "users.csv", tmp_path / "top.csv")
        top = pd.DataFrame(_rows(tmp_path / "top.csv"))
        assert len(top) == 300, case
        film_means = frame.groupby("item")["rating"].mean()
        film_means = film_means[frame.groupby("item").size() >= 20]  # films rated often enough to judge
        recommended = film_means.reindex(top["item"].astype(type(film_means.index[0]))).dropna()
        assert len(recommended) > 30 and recommended.mean() > film_means.mean() + 0.3, (case, recommended.mean(),
                                                                                          film_means.mean())


@pytest.fixture(scope="module")
def movielens_frame():
    from research.collab import ratings
    return ratings.read_movielens_100k().frame


def _unigram_loss(train_ids, test_ids, vocab_size) -> float:
    """Nats per token of add-one token frequencies from the training ids, on the test ids."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    return float(-np.mean(np.log(counts / counts.sum())[test_ids]))


@runs_group("char_rnn:cpu")
def test_the_char_rnn_beats_character_frequencies_and_generates_and_predicts_like_its_text(finished_runs,
                                                                                         text_data, tmp_path):
    """The char-RNN run (a folder of real fortune files, one document per paragraph): held-out loss below the
    character-frequency model's; scripts/generate.py writes the same text under the same seed, text a bigram
    model of the training text scores better than text drawn from the character frequencies; scripts/predict.py
    scores a file below the frequencies too, and names the empty file it could not score."""
    import ml_collections

    from experiments import char_rnn
    from research.core import inference
    from research.text import lm_recipe, ngram
    workdir = str(finished_runs("char_rnn:cpu"))
    config = ml_collections.ConfigDict(inference.read_run_info(workdir)[1])
    ids, vocab = lm_recipe.encode_splits(config, char_rnn.RECIPE.tokens)
    counts = np.bincount(ids["train"], minlength=len(vocab)) + 1.0  # add-one character frequencies
    unigram = lambda test_ids: float(-np.mean(np.log(counts / counts.sum())[test_ids]))
    metrics = json.load(open(os.path.join(workdir, "results.json")))["metrics"]
    assert metrics["test_loss"] < unigram(ids["test"]) - 0.2, (metrics["test_loss"], unigram(ids["test"]))
    assert metrics["ngram_test_loss"] < unigram(ids["test"])
    samples = open(os.path.join(workdir, "samples.txt")).read()
    assert "temperature 0.5" in samples and "temperature 1.0" in samples
    generate = lambda seed: subprocess.run(
        [sys.executable, "scripts/generate.py", "--workdir", workdir, "--prompt", "The ", "--temperature", "0.8",
         "--length", "200", "--top_k", "5", "--seed", str(seed)], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=300)
    first, second = generate(0), generate(0)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout == second.stdout and first.stdout.startswith("The ") and len(first.stdout) >= 204
    bigram = ngram.KneserNey(ids["train"], len(vocab), 2)
    sample_loss = bigram.loss(vocab.encode(first.stdout[4:204]))
    rng = np.random.default_rng(0)
    frequency_loss = np.mean([bigram.loss(rng.choice(len(vocab), 200, p=counts / counts.sum())) for _ in range(5)])
    assert sample_loss < frequency_loss - 0.3, (sample_loss, frequency_loss)
    corpus = pathlib.Path(text_data["corpus"])
    _predict(workdir, corpus / f"{TOPICS[2]}.txt", tmp_path / "loss.csv")
    rows = open(tmp_path / "loss.csv").read().splitlines()
    assert rows[0] == "file,characters,loss_nats_per_char" and len(rows) == 2
    topic = vocab.encode((corpus / f"{TOPICS[2]}.txt").read_text())
    assert float(rows[1].split(",")[-1]) < unigram(topic) - 0.2, (rows[1], unigram(topic))
    folder = subprocess.run([sys.executable, "scripts/predict.py", f"--workdir={workdir}", f"--input={corpus}",
                             f"--output={tmp_path / 'all.csv'}"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert folder.returncode == 1 and "empty.txt" in folder.stderr  # the unreadable file named, the others kept
    assert len(open(tmp_path / "all.csv").read().splitlines()) == 1 + len(TOPICS)


@runs_group("fortunes_lm:cpu")
def test_the_word_lm_beats_the_unigram_model_and_predict_scores_held_out_text(finished_runs, tmp_path):
    """The word LM (the classifier's encoder): held-out loss below the unigram (word frequency) model's on the
    same test ids, and predict.py's loss on a held-out text likewise (tests/text/test_text.py holds the char-RNN
    to the same floor)."""
    import ml_collections

    from experiments import fortunes_lm
    from research.core import inference
    from research.text import lm_recipe
    workdir = finished_runs("fortunes_lm:cpu")
    config = ml_collections.ConfigDict(inference.read_run_info(str(workdir))[1])
    ids, vocab = lm_recipe.encode_splits(config, fortunes_lm.RECIPE.tokens)
    unigram = _unigram_loss(ids["train"], ids["test"], len(vocab))
    metrics = json.load(open(workdir / "results.json"))["metrics"]
    assert metrics["test_loss"] < unigram - 0.1, (metrics["test_loss"], unigram)
    split, _ = lm_recipe.load_documents(config)
    (tmp_path / "held_out.txt").write_text("\n".join(split.test))
    _predict(workdir, tmp_path / "held_out.txt", tmp_path / "p.csv")
    (row,) = _rows(tmp_path / "p.csv")
    test_ids = fortunes_lm.RECIPE.tokens.encode_documents(vocab, split.test)
    assert float(row["loss"]) < _unigram_loss(ids["train"], test_ids, len(vocab)) - 0.1, row


@runs_group("fortunes_classifier:cpu")
def test_the_ulmfit_classifier_beats_the_class_frequencies_and_predict_labels_held_out_texts(finished_runs,
                                                                                           text_data, tmp_path):
    """experiments/fortunes_classifier.py on three fortune topics: ULMFiT's test accuracy above always predicting
    the most frequent class (the floor a model of class frequencies reaches), and predict.py's topics for the
    held-out test texts, one file each, likewise."""
    import ml_collections

    from research.core import inference
    from research.text import labelled_text
    workdir = finished_runs("fortunes_classifier:cpu")
    config = ml_collections.ConfigDict(inference.read_run_info(str(workdir))[1])
    split, class_names = labelled_text.load("csv", text_data["classes"], config.seed, config.data.valid_fraction,
                                            config.data.test_fraction)
    majority = np.bincount(split.test.labels).max() / len(split.test.labels)
    metrics = json.load(open(workdir / "results.json"))["metrics"]
    assert metrics["ulmfit_test_accuracy"] > majority + 0.15, (metrics, majority)
    # Stage 2 moved the pretrained model onto the topics' vocabulary (here the pretraining text holds the same
    # topics; tests/text/test_stage2.py shows fine-tuning lowering the perplexity on a topic it had not read).
    assert metrics["lm_finetune_known_tokens"] > 0.5 * metrics["lm_finetune_vocab_size"], metrics
    assert metrics["lm_finetune_after_valid_perplexity"] < 1.05 * metrics["lm_finetune_before_valid_perplexity"]
    (tmp_path / "new").mkdir()
    for i, text in enumerate(split.test.texts):
        (tmp_path / "new" / f"{i:04d}_{class_names[split.test.labels[i]]}.txt").write_text(text)
    _predict(workdir, tmp_path / "new", tmp_path / "p.csv")
    rows = _rows(tmp_path / "p.csv")
    assert len(rows) == len(split.test.texts)
    accuracy = np.mean([row["predicted"] == row["input"][5:-4] for row in rows])
    assert accuracy > majority + 0.15, (accuracy, majority)


@runs_group("movielens:dot", "movielens:bayes")
def test_movielens_presets_beat_the_mean_and_the_bias_baseline(finished_runs, movielens_frame):
    """On the random 80/20 split: one epoch of the dot model beats predicting the training mean; the bias
    baseline (ALS) beats the mean too; a short Gibbs chain (Bayesian MF) beats the bias baseline."""
    import ml_collections

    from research.collab import ratings
    from research.core import inference
    config = ml_collections.ConfigDict(inference.read_run_info(str(finished_runs("movielens:dot")))[1])
    data = ratings.load(config)
    mean_rmse = float(np.sqrt(np.mean((data.valid["target"] - data.train["target"].mean()) ** 2)))  # ~1.13
    dot = json.load(open(finished_runs("movielens:dot") / "results.json"))
    baseline = dot["baselines"]["bias_als"]
    assert dot["metrics"]["valid_rmse"] < mean_rmse - 0.1, (dot["metrics"], mean_rmse)  # measured ~0.95
    assert baseline["valid_rmse"] < mean_rmse - 0.1 and baseline["lambda_user"] > 0, baseline
    assert any("train_squared_error" in line for line in open(finished_runs("movielens:dot") / "metrics.jsonl"))
    bayes = json.load(open(finished_runs("movielens:bayes") / "results.json"))
    assert bayes["metrics"]["valid_rmse"] < bayes["baselines"]["bias_als"]["valid_rmse"] - 0.01, bayes["metrics"]


@runs_group("fashion_mosaics_multilabel:small")
def test_the_small_mosaics_preset_learns_beyond_predicting_every_class(finished_runs, tfds_dir):
    """Predicting every class scores F2 = 5n / (5n + 10 - n) for n true labels (~0.6 here); training beats it.
    Stage 2 (56 px, 40 steps) starts from stage 1's weights (28 px, 240 steps)."""
    from research.vision import fashion_mosaics, multilabel
    results = json.load(open(finished_runs("fashion_mosaics_multilabel:small") / "results.json"))
    _, test_labels = fashion_mosaics.load("test", tfds_dir, "small")
    every_class = multilabel.mean_fbeta(np.ones_like(test_labels), test_labels, 0.5, beta=2.0)
    metrics = results["metrics"]
    assert [s["size"] for s in results["stages"]] == [28, 56]
    assert metrics["test_f2"] > max(0.75, every_class + 0.1) and metrics["test_f1"] > 0.6, (metrics, every_class)
    assert len(results["thresholds"]) == 10 and all(0 < t < 1 for t in results["thresholds"])


@runs_group("fashion_mnist:cpu")
def test_a_lesson1_run_writes_results_logs_plots_and_checkpoints(finished_runs):
    """fashion_mnist:cpu (the range test, then 2 epochs on 900 images): every output the README lists."""
    from research.core.checkpoint import Checkpointer
    workdir = finished_runs("fashion_mnist:cpu")
    results = json.load(open(workdir / "results.json"))
    assert results["metrics"]["test_accuracy"] > 0.5 and results["metrics"]["valid_accuracy"] > 0.5  # chance: 0.1
    assert 0 < results["learning_rate"] < 10 and set(results) >= {"metrics", "config", "timings", "devices",
                                                                   "versions"}
    for name in ("lr_find.png", "lr_find.json", "confusion_matrix.png", "most_confused.png", "top_losses.png",
                 "cam.png", "metrics.jsonl"):
        assert (workdir / name).stat().st_size > 0, name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert any("train_loss" in line for line in lines) and any("valid_accuracy" in line for line in lines)
    assert Checkpointer(str(workdir / "checkpoints")).latest_step() == results["steps"] == 36


@runs_group("fashion_transfer:cpu")
def test_the_transfer_run_pretrains_fine_tunes_and_chooses_its_baselines_rate(finished_runs):
    """fashion_transfer:cpu: every phase ran (pretraining on classes 0-4, a new head on the frozen body, SGDR
    fine-tuning, the from-scratch grid) with its checkpoints in its own sub-workdir, where a rerun resumes, and
    every phase learnt (chance is 0.2 on five classes)."""
    workdir = finished_runs("fashion_transfer:cpu")
    results = json.load(open(workdir / "results.json"))
    n20, metrics = results["n20"], results["metrics"]
    assert metrics["n20_gap_points"] == pytest.approx(n20["gap_points"])
    assert n20["labelled_images"] == 100 and 400 < results["test_images"] < 600 and results["valid_images"] == 200
    assert metrics["pretrain_source_test_accuracy"] > 0.6  # 23 steps on classes 0-4
    assert n20["head_valid_accuracy"] > 0.4  # a new head on the frozen body, classes 5-9
    assert n20["finetuned_test_accuracy"] > 0.5
    assert n20["gap_points"] == pytest.approx(100 * (n20["finetuned_test_accuracy"] - n20["scratch_test_accuracy"]))
    # The baseline's rate is the one with the better validation accuracy (1e-4 hardly moves in 24 steps).
    by_rate = n20["scratch_valid_accuracy_by_learning_rate"]
    assert n20["scratch_best_learning_rate"] == 1e-2 and by_rate["0.01"] > by_rate["0.0001"], by_rate
    # SGDR: a checkpoint at the end of each cycle (cycles of 4 and 8 steps end at steps 4 and 12).
    assert sorted(os.listdir(workdir / "n20" / "finetune" / "checkpoints")) == ["12", "4"]
    for phase, step in (("pretrain", 23), ("n20/head", 12), ("n20/scratch_lr0.01", 24)):
        assert str(step) in os.listdir(workdir / phase / "checkpoints"), phase


@runs_group("segmentation:default")
def test_segmentation_learns_beyond_all_background_and_predicts_masks_at_each_images_size(finished_runs, tfds_dir,
                                                                                        tmp_path):
    """segmentation:default, a tiny U-Net for 3 epochs of 320 small canvases: the loss falls, and the test scores
    beat the majority-class predictor (every pixel background: its pixel accuracy is the background's share, its
    foreground dice 0). predict (as scripts/predict.py calls it, the config read back from run.json) writes a mask
    PNG per readable image at that image's size and names the unreadable one."""
    import ml_collections

    from experiments import segmentation
    from research.core import inference
    from research.vision import canvases
    workdir = finished_runs("segmentation:default")
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    losses = [row["train_loss"] for row in rows if "train_loss" in row]
    valid_losses = [row["valid_loss"] for row in rows if "valid_loss" in row]
    assert len(losses) == 15 and np.mean(losses[-2:]) < 0.85 * losses[0], losses
    assert len(valid_losses) == 3 and valid_losses[-1] < valid_losses[0], valid_losses
    results = json.load(open(workdir / "results.json"))
    metrics = results["metrics"]
    for prefix in ("valid_", "test_"):
        for name in ("pixel_accuracy", "mean_iou", "foreground_dice", "iou_0", "iou_10"):
            assert 0 <= metrics[prefix + name] <= 1, prefix + name
    assert set(results["iou_per_class"]["test"]) == set(canvases.CLASS_NAMES)
    assert os.path.getsize(workdir / "examples.png") > 1000
    _, test_masks = canvases.load("test", tfds_dir, "small")
    background = float(np.mean(test_masks == 0))
    assert metrics["test_pixel_accuracy"] > background + 0.02, (metrics["test_pixel_accuracy"], background)
    assert metrics["test_foreground_dice"] > 0.5 and metrics["test_mean_iou"] > 1 / 11, metrics

    images, _ = canvases.load("test", tfds_dir, "small")
    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(3):
        PIL.Image.fromarray(images[i, ..., 0]).save(folder / f"canvas{i}.png")
    PIL.Image.fromarray(images[3, ..., 0]).resize((80, 70)).save(folder / "bigger.png")
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "masks"
    assert segmentation.CAPABILITIES.predict_writes_folder
    config = ml_collections.ConfigDict(inference.read_run_info(str(workdir))[1])
    with pytest.raises(inference.PartialPredictions, match="1 of 5 files could not be read .*broken.png") as raised:
        segmentation.predict(config, str(workdir), str(folder), str(out))
    written = sorted(os.listdir(out))
    assert written == ["bigger.png", "canvas0.png", "canvas1.png", "canvas2.png"]
    rows = raised.value.rows  # the readable images' masks, described
    assert [os.path.basename(row["mask"]) for row in rows] == written
    assert [(row["width"], row["height"]) for row in rows] == [(80, 70)] + [(64, 64)] * 3
    assert all(os.path.basename(row["file"]) == os.path.basename(row["mask"]) for row in rows)
    mask = np.asarray(PIL.Image.open(out / "canvas0.png"))
    assert mask.shape == (64, 64) and mask.max() <= 10
