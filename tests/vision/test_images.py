"""The user's own images: real Fashion-MNIST written out as image files (folders per class, CSVs), decoded,
resized and trained on through scripts/train.py with config overrides only; bad input fails in one line."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from conftest import REPO_ROOT
from research.core.errors import InputError
from research.vision import fashion_mnist, images

TRAIN_PER_CLASS, VALID_PER_CLASS = 100, 30
FOLDER_NAMES = [name.replace("/", "_") for name in fashion_mnist.CLASS_NAMES]  # "T-shirt/top" is no folder name
TINY = ["--config.learning_rate=1e-2", "--config.batch_size=50", "--config.eval_batch_size=150",
        "--config.num_epochs=2", "--config.tta=False", "--config.model.stem_width=16",
        "--config.model.stage_sizes=(1,1,1)", "--config.model.stage_widths=(16,32,64)",
        "--config.checkpoint.every_epochs=2"]


def _save(image_HxWx1: np.ndarray, path_stem: str, kind: int) -> str:
    """Writes one real image in one of four ways: gray PNG, RGB PNG, gray PNG at 40x40, gray JPEG."""
    image = PIL.Image.fromarray(image_HxWx1[..., 0])
    path = path_stem + (".jpg" if kind == 3 else ".png")
    if kind == 1:
        image = image.convert("RGB")
    elif kind == 2:
        image = image.resize((40, 40), PIL.Image.Resampling.BILINEAR)
    image.save(path, quality=95) if kind == 3 else image.save(path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, fashion_test_split):
    """root/{train,valid}/<class>/*: 100 + 30 real test images per class, a quarter each as gray PNG, RGB PNG,
    40x40 PNG and JPEG. Returns (root, {path: original 28x28x1 image})."""
    all_images, labels = fashion_test_split
    root = tmp_path_factory.mktemp("folder")
    originals = {}
    for k, name in enumerate(FOLDER_NAMES):
        rows = np.flatnonzero(labels == k)
        for split, split_rows in (("train", rows[:TRAIN_PER_CLASS]),
                                  ("valid", rows[TRAIN_PER_CLASS:TRAIN_PER_CLASS + VALID_PER_CLASS])):
            os.makedirs(root / split / name)
            for j, i in enumerate(split_rows):
                originals[_save(all_images[i], str(root / split / name / f"{i:05d}"), j % 4)] = all_images[i]
    return str(root), originals


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, image_folder):
    """scripts/train.py on the image folder with config overrides only (tiny model, 2 epochs)."""
    workdir = tmp_path_factory.mktemp("run")
    run = _train(workdir, "--config.data.source=folder", f"--config.data.path={image_folder[0]}", *TINY)
    return workdir, run


def _train(workdir, *overrides, wait=True):
    command = [sys.executable, os.path.join(REPO_ROOT, "scripts", "train.py"), "--config",
               os.path.join(REPO_ROOT, "experiments", "fashion_mnist.py"), "--workdir", str(workdir), *overrides]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _hashes(directory) -> dict[str, str]:
    return {os.path.relpath(os.path.join(d, f), directory): hashlib.sha256(open(os.path.join(d, f), "rb").read())
            .hexdigest() for d, _, files in os.walk(directory) for f in files}


def test_image_folder_trains_through_the_cli_and_writes_interpretation(trained_run):
    workdir, run = trained_run
    assert run.returncode == 0, run.stderr[-3000:]
    with open(workdir / "results.json") as f:
        results = json.load(f)
    assert results["steps"] == 40  # 1000 training images / batch 50 x 2 epochs: the folder was read whole
    # 300 images in valid/; chance is 0.1 (measured: 0.69). No test/ folder: nothing to score once.
    assert results["metrics"]["valid_accuracy"] > 0.55, results
    assert not any(k.startswith("test_") for k in results["metrics"])
    for name in ("confusion_matrix.png", "most_confused.png", "top_losses.png", "cam.png"):
        with PIL.Image.open(workdir / name) as png:
            assert png.size[0] > 500 and png.size[1] > 300, name
            assert np.asarray(png.convert("L")).std() > 10, name  # not blank


def test_predict_writes_a_csv_for_new_images_and_names_the_bad_file(trained_run, tmp_path, fashion_test_split):
    """scripts/predict.py with the trained run on real images it never saw (5 per class, named by class, in
    sub-folders) and one corrupt file: the 50 predictions are written, then one error line names the bad file."""
    workdir, run = trained_run
    assert run.returncode == 0, run.stderr[-3000:]
    all_images, labels = fashion_test_split
    new = tmp_path / "new"
    for k in range(10):
        os.makedirs(new / f"batch{k % 2}", exist_ok=True)
        for i in np.flatnonzero(labels == k)[-5:]:
            _save(all_images[i], str(new / f"batch{k % 2}" / f"{k}_{i:05d}"), i % 4)
    (new / "batch0" / "broken.png").write_bytes(b"not a png at all")
    output = tmp_path / "out" / "predictions.csv"
    predicted = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "predict.py"),
                                f"--workdir={workdir}", f"--input={new}", f"--output={output}"],
                               capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 1, predicted.stderr[-3000:]
    last_line = predicted.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: 1 of 51 files could not be read") and "broken.png" in last_line, last_line
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 50 and set(rows[0]) >= {"file", "predicted", "probability", "top1", "top3_probability"}
    correct = [row["predicted"] == FOLDER_NAMES[int(os.path.basename(row["file"]).split("_")[0])] for row in rows]
    majority = 5 / 50  # the most frequent class of these 50 (5 per class): what a model of class frequencies scores
    assert np.mean(correct) > majority + 0.3, np.mean(correct)  # validation accuracy was ~0.69
    # The probabilities mean something: higher on the right answers than on the wrong ones (a model that learnt
    # nothing, or only the class frequencies, gives both the same).
    probability = np.array([float(row["probability"]) for row in rows])
    correct = np.array(correct)
    assert probability[correct].mean() > probability[~correct].mean() + 0.1, probability


def test_folder_images_are_decoded_converted_and_resized(image_folder):
    root, originals = image_folder
    loaded = images.load_image_folder(root, "train", 28)
    assert loaded.images.shape == (1000, 28, 28, 3) and loaded.images.dtype == np.uint8  # some files are RGB
    assert loaded.class_names == tuple(sorted(FOLDER_NAMES))
    assert np.bincount(loaded.labels).tolist() == [TRAIN_PER_CLASS] * 10
    for image, label, path in zip(loaded.images, loaded.labels, loaded.sources):
        assert os.path.basename(os.path.dirname(path)) == loaded.class_names[label]
        assert (image == image[..., :1]).all()  # gray files repeated to RGB, RGB files of gray pixels stay gray
        error = np.abs(image[..., :1].astype(int) - originals[path]).mean()
        if path.endswith(".jpg"):
            assert error < 4, path
        elif _size(path) == (40, 40):  # resized 28 -> 40 on writing, back to 28 (bilinear) on loading
            with PIL.Image.open(path) as written:
                resized = np.asarray(written.resize((28, 28), PIL.Image.Resampling.BILINEAR))
            np.testing.assert_array_equal(image[..., 0], resized)
            assert np.corrcoef(image[..., 0].ravel(), originals[path].ravel())[0, 1] > 0.8, path
        else:
            assert error == 0, path  # PNG at 28x28, gray or RGB: exact
    valid = images.load_image_folder(root, "valid", 32, loaded.class_names, channels=1)
    assert valid.images.shape == (300, 32, 32, 1) and valid.class_names == loaded.class_names


def _size(path: str) -> tuple[int, int]:
    with PIL.Image.open(path) as image:
        return image.size


def test_resize_keeps_aspect_by_cutting_the_centre():
    left_black_right_white = np.zeros((20, 40), np.uint8)
    left_black_right_white[:, 20:] = 255
    square = images.fit(PIL.Image.fromarray(left_black_right_white), 10)[..., 0]
    assert (square[:, :4] == 0).all() and (square[:, 6:] == 255).all()  # the centre 20 columns, scaled by 1/2


def test_multi_label_csv_gives_multi_hot_labels(tmp_path, fashion_test_split):
    """Planet-style rows: 56x56 mosaics of 2x2 cells holding 1-3 real items, tags separated by spaces."""
    all_images, labels = fashion_test_split
    tag_names = [name.replace(" ", "_") for name in FOLDER_NAMES]  # tags are separated by spaces
    rng = np.random.default_rng(0)
    rows, expected = [], np.zeros((40, 10), np.float32)
    for n in range(40):
        mosaic = np.zeros((56, 56), np.uint8)
        for cell in rng.choice(4, rng.integers(1, 4), replace=False):
            i = rng.integers(len(labels))
            mosaic[28 * (cell // 2):28 * (cell // 2) + 28, 28 * (cell % 2):28 * (cell % 2) + 28] = all_images[i, ..., 0]
            expected[n, labels[i]] = 1.0
        PIL.Image.fromarray(mosaic).save(tmp_path / f"m{n}.png")
        tags = " ".join(tag_names[k] for k in np.flatnonzero(expected[n]))
        rows.append(f"m{n},{tags}\n")
    (tmp_path / "train.csv").write_text("image_name,tags\n" + "".join(rows))
    loaded = images.load_image_csv(str(tmp_path / "train.csv"), str(tmp_path), 56, file_column="image_name",
                                   label_column="tags", label_delimiter=" ", suffix=".png")
    present = sorted({tag_names[k] for k in np.flatnonzero(expected.any(0))})
    assert loaded.class_names == tuple(present)
    order = [tag_names.index(name) for name in present]
    np.testing.assert_array_equal(loaded.labels, expected[:, order])
    assert loaded.labels.dtype == np.float32 and loaded.images.shape == (40, 56, 56, 1)
    with PIL.Image.open(tmp_path / "m0.png") as first:
        np.testing.assert_array_equal(loaded.images[0, ..., 0], np.asarray(first))


def test_tfds_images_through_data_source(tfds_dir, fashion_test_split):
    """A TFDS dataset by name (here the project's own Fashion-MNIST builder, registered on import) and split
    slice, read from ArrayRecord without TensorFlow; at the native size the pixels are unchanged."""
    loaded = images.load_tfds_images("fashion_mnist_idx", "test[:200]", 28, tfds_dir, download=False)
    np.testing.assert_array_equal(loaded.images, fashion_test_split[0][:200])
    np.testing.assert_array_equal(loaded.labels, fashion_test_split[1][:200])
    assert loaded.class_names == fashion_mnist.CLASS_NAMES
    with pytest.raises(InputError, match="TFDS has no dataset 'no_such_dataset'"):
        images.load_tfds_images("no_such_dataset", "train", 28, tfds_dir, download=False)


@pytest.mark.parametrize("name, num_classes", [("oxford_iiit_pet", 37), ("cats_vs_dogs", 2)])
def test_catalog_datasets_feature_keys(name, num_classes):
    """The pets and dogs-vs-cats catalog builders' features, read the same way: with no network here, TFDS's
    own mock examples stand in for the downloaded images (the real ones load on a cloud machine)."""
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        loaded = images.load_tfds_images(name, "train", 32)
    assert loaded.images.shape == (3, 32, 32, 3) and len(loaded.class_names) == num_classes
    assert loaded.labels.max() < num_classes


def test_channel_statistics_match_numpy(fashion_test_split):
    x = fashion_test_split[0][:3000]
    mean, std = images.channel_mean_std(x, chunk=700)
    np.testing.assert_allclose(mean, [x.mean() / 255], rtol=1e-5)
    np.testing.assert_allclose(std, [(x / 255).std()], rtol=1e-4)


def _write_tiny_tree(root, fashion_test_split, corrupt: str | None = None):
    """root/{train,valid}/{Bag,Coat}/ with 3 real images each, and CSVs train.csv / valid.csv of them."""
    all_images, labels = fashion_test_split
    for split in ("train", "valid"):
        for k, name in ((8, "Bag"), (4, "Coat")):
            os.makedirs(root / split / name)
            for i in np.flatnonzero(labels == k)[:3]:
                PIL.Image.fromarray(all_images[i, ..., 0]).save(root / split / name / f"{i}.png")
    lines = [f"train/{name}/{f},{name}\n" for name in ("Bag", "Coat") for f in sorted(os.listdir(root / "train" / name))]
    (root / "train.csv").write_text("file,label\n" + "".join(lines))
    (root / "valid.csv").write_text("file,label\n" + lines[0] + lines[3].replace(",Coat", ",Sneaker"))
    if corrupt:  # in the folders, not in the CSVs
        (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")


def test_bad_inputs_fail_in_one_line_without_touching_checkpoints(tmp_path, trained_run, fashion_test_split):
    """Each bad input stops scripts/train.py with exit 1 and one `error:` line naming the problem, before
    anything in the workdir (here an earlier run's checkpoints and results) changes."""
    trained_workdir, run = trained_run
    assert run.returncode == 0, run.stderr[-3000:]
    data = tmp_path / "data"
    _write_tiny_tree(data, fashion_test_split, corrupt="train/Coat/broken.png")
    csv = ["--config.data.source=csv", f"--config.data.path={data}"]
    cases = {  # name: (overrides, what the error line must contain)
        "missing directory": (["--config.data.source=folder", f"--config.data.path={tmp_path / 'nowhere'}"],
                              f"data directory not found: {tmp_path / 'nowhere'}"),
        "corrupt image": (["--config.data.source=folder", f"--config.data.path={data}"],
                          f"cannot read image {data / 'train' / 'Coat' / 'broken.png'}: UnidentifiedImageError"),
        "missing column": (csv + ["--config.data.csv_file=train.csv", "--config.data.csv_label_column=tags"],
                           "train.csv has no column 'tags' (its columns: file, label)"),
        "label out of range": (csv + ["--config.data.csv_file=train.csv", "--config.data.csv_valid_file=valid.csv"],
                               "valid.csv line 3: label 'Sneaker' is not one of the 2 classes (Bag, Coat)"),
    }
    workdirs, before, runs = {}, {}, {}
    for name in cases:
        workdirs[name] = tmp_path / name.replace(" ", "_")
        shutil.copytree(trained_workdir, workdirs[name])
        before[name] = _hashes(workdirs[name])
        assert any(path.startswith("checkpoints") for path in before[name])
    for name, (overrides, _) in cases.items():  # concurrently: each run is mostly interpreter start-up
        runs[name] = _train(workdirs[name], *overrides, wait=False)
    for name, (_, message) in cases.items():
        _, stderr = runs[name].communicate(timeout=300)
        assert runs[name].returncode == 1, (name, stderr[-2000:])
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (name, stderr[-2000:])  # no traceback, no noise
        assert lines[0].startswith("error: ") and message in lines[0], (name, lines[0])
        assert _hashes(workdirs[name]) == before[name], name


def test_bad_inputs_name_the_file_column_or_label(tmp_path, fashion_test_split):
    _write_tiny_tree(tmp_path, fashion_test_split)
    truncated = tmp_path / "train" / "Bag" / "truncated.png"
    png = (tmp_path / "train" / "Bag").glob("*.png").__next__().read_bytes()
    truncated.write_bytes(png[:len(png) // 2])
    with pytest.raises(InputError, match=r"cannot read image .*truncated\.png: OSError"):
        images.load_image_folder(str(tmp_path), "train", 28)
    truncated.unlink()
    os.makedirs(tmp_path / "valid" / "Zebra")
    with pytest.raises(InputError, match=r"class folder .*Zebra is not one of the 2 training classes \(Bag, Coat\)"):
        images.load_image_folder(str(tmp_path), "valid", 28, ("Bag", "Coat"))
    with pytest.raises(InputError, match=r"no 'test' folder in the data directory"):
        images.load_image_folder(str(tmp_path), "test", 28)
    # Integer labels: classes in numeric order; a validation label beyond the training classes is named.
    files = [f"train/{name}/{f}" for name in ("Bag", "Coat") for f in sorted(os.listdir(tmp_path / "train" / name))]
    (tmp_path / "ints.csv").write_text("file,label\n" + "".join(f"{f},{i % 2 * 10 + i % 2}\n"
                                                                for i, f in enumerate(files)))
    ints = images.load_image_csv(str(tmp_path / "ints.csv"), str(tmp_path), 28)
    assert ints.class_names == ("0", "11") and ints.labels.tolist() == [0, 1, 0, 1, 0, 1]
    (tmp_path / "ints_valid.csv").write_text(f"file,label\n{files[0]},0\n{files[1]},12\n")
    with pytest.raises(InputError, match=r"ints_valid\.csv line 3: label '12' is not one of the 2 classes \(0, 11\)"):
        images.load_image_csv(str(tmp_path / "ints_valid.csv"), str(tmp_path), 28, class_names=ints.class_names)
    (tmp_path / "missing.csv").write_text(f"file,label\n{files[0]},0\nnot_there.png,0\n")
    with pytest.raises(InputError, match=r"cannot read image .*not_there\.png: FileNotFoundError"):
        images.load_image_csv(str(tmp_path / "missing.csv"), str(tmp_path), 28)
