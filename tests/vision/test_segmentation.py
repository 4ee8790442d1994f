"""Segmentation (lesson 7): metrics against hand-computed values, joint augmentation that keeps masks on their
images, the U-Net's shapes and its pretrained encoder, the own-masks loader and its errors, and a real run on
Fashion-MNIST canvases (the loss falls; results, examples and predicted mask PNGs are written)."""

import functools
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import PIL.Image
import pytest
import tensorflow_datasets as tfds
import torch

from experiments import segmentation as experiment
from research.core import optimizers
from research.core.errors import InputError
from research.core.train_state import TrainState
from research.vision import augment_joint, canvases, masks, pretrained, resnet, segmentation, segmenter, unet

from test_pretrained import make_torch_resnet  # a torchvision-layout ResNet with random weights and BN statistics

V = segmentation.IGNORE_INDEX


# --- metrics and losses ------------------------------------------------------------------------------------

def _logits(predicted, num_classes):
    return 10.0 * jax.nn.one_hot(jnp.asarray(predicted), num_classes)


def test_metrics_on_hand_made_masks_with_void_pixels_and_an_empty_class():
    """4 classes (0 background, 3 never present nor predicted); one void pixel predicted as class 1; a padded
    row that must count nowhere. Hand-computed: 5 counted pixels, 3 correct; IoU 1/2, 1/2, 1/3, NaN."""
    true = np.array([[[0, 1, 1], [V, 2, 0]], [[3, 3, 3], [3, 3, 3]]])
    predicted = np.array([[[0, 1, 2], [1, 2, 2]], [[3, 3, 3], [3, 3, 3]]])
    row_mask = np.array([1.0, 0.0])
    sums = segmentation.summed_metrics(_logits(predicted, 4), jnp.asarray(true), jnp.asarray(row_mask))
    done = segmentation.finish(jax.device_get(sums))
    assert float(sums["count"]) == 5 and float(sums["accuracy"]) == 3
    np.testing.assert_array_equal(sums["intersection"], [1, 1, 1, 0])
    np.testing.assert_array_equal(sums["union"], [2, 2, 3, 0])
    assert done["pixel_accuracy"] == pytest.approx(0.6)
    assert [done[f"iou_{k}"] for k in range(3)] == pytest.approx([0.5, 0.5, 1 / 3])
    assert np.isnan(done["iou_3"])
    assert done["mean_iou"] == pytest.approx(4 / 9)
    assert done["foreground_dice"] == pytest.approx(2 * 3 / (4 + 3))  # predicted fg 4, true fg 3, both 3
    expected_ce = np.log1p(3 * np.exp(-10.0)) * 3 + (10 + np.log1p(3 * np.exp(-10.0))) * 2  # 3 right, 2 wrong
    assert done["loss"] == pytest.approx(expected_ce / 5, rel=1e-5)

    # Exact sums: the same pixels split over two batches give the same numbers.
    part = lambda columns: segmentation.summed_metrics(_logits(predicted[:1, :, columns], 4),
                                                       jnp.asarray(true[:1, :, columns]), jnp.ones(1))
    total = jax.tree.map(lambda a, b: a + b, *jax.device_get([part(slice(0, 1)), part(slice(1, 3))]))
    assert segmentation.finish(total) == pytest.approx(done, nan_ok=True)


def test_losses_ignore_void_pixels_and_soft_dice_matches_its_formula():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 3, 4, 3)), jnp.float32)
    labels = rng.integers(0, 3, (2, 3, 4))
    labels[0, 0, :2] = V
    changed = logits.at[0, 0, :2].set(50.0)  # what the model says at void pixels does not matter
    for loss in (segmentation.pixel_cross_entropy, segmentation.soft_dice_loss, segmentation.cross_entropy_and_dice):
        assert float(loss(logits, jnp.asarray(labels))) == pytest.approx(float(loss(changed, jnp.asarray(labels))))
    p = np.asarray(jax.nn.softmax(logits))
    valid = labels != V
    y = np.eye(3)[np.where(valid, labels, 0)] * valid[..., None]
    p = p * valid[..., None]
    dice = (2 * (p * y).sum((0, 1, 2)) + 1) / (p.sum((0, 1, 2)) + y.sum((0, 1, 2)) + 1)
    assert float(segmentation.soft_dice_loss(logits, jnp.asarray(labels))) == pytest.approx(1 - dice.mean(), rel=1e-5)
    perfect = _logits(np.where(valid, labels, 0), 3) * 10
    assert float(segmentation.cross_entropy_and_dice(perfect, jnp.asarray(labels))) < 1e-6


# --- joint augmentation ------------------------------------------------------------------------------------

def _transform(**augment):
    return jax.jit(augment_joint.transform(0.0, 1.0 / 255, augment_joint.config(**augment)))  # pixels stay 0..255


def test_flips_and_symmetries_move_image_and_mask_together_exactly():
    """A mask drawn from the image itself (class = pixel // 20 on a blocky image) is still the image's, pixel for
    pixel, after flips and the symmetries of the square."""
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 6, (8, 4, 4)), np.ones((1, 8, 8), np.int64)).astype(np.uint8)
    images = (labels * 20)[..., None].astype(np.uint8)
    for augment in (dict(flip=True), dict(dihedral=True)):
        out = _transform(**augment)(jax.random.key(3), {"image": images, "pixel_labels": labels})
        image, mask = np.asarray(out["image"])[..., 0], np.asarray(out["pixel_labels"])
        np.testing.assert_array_equal(mask, np.round(image / 20).astype(np.uint8))
        assert (mask != labels).mean() > 0.2  # the transform did move things


def test_crops_zooms_and_rotations_keep_the_mask_where_the_image_was_sampled():
    """The image's two channels are each pixel's row and column (x4), and the mask is the 8x8 block the pixel
    lies in, drawn from those channels. After any composition of warps the (bilinearly resampled) image still
    says where each output pixel came from, and the (nearest-neighbour) mask must be that place's block. Pixels
    sampled within 0.01 px of a rounding boundary are left out (rounding there is a tie)."""
    rows, cols = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    images = np.broadcast_to(np.stack([rows * 4, cols * 4], -1), (8, 64, 64, 2)).astype(np.uint8)
    block = lambda r, c: (r // 8) * 8 + c // 8
    labels = np.broadcast_to(block(rows, cols), (8, 64, 64)).astype(np.uint8)
    out = _transform(dihedral=True, crop_scale=0.6, max_zoom=1.3, max_degrees=25.0)(
        jax.random.key(1), {"image": images, "pixel_labels": labels})
    source = np.asarray(out["image"], np.float64) / 4  # where each output pixel was sampled (rows, cols)
    mask = np.asarray(out["pixel_labels"])
    nearest = np.round(source).astype(np.int64)
    clear = np.all(np.abs(np.abs(source - np.floor(source)) - 0.5) > 0.01, axis=-1)
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(mask[clear], block(nearest[..., 0], nearest[..., 1])[clear])
    assert (mask != labels).mean() > 0.5  # the warps did move things


def test_random_crops_cut_the_same_window_from_image_and_mask():
    """Crops (then flips) of a blocky image whose mask is drawn from its pixels: each crop is the mask's own
    window, its side the fraction of the shorter side, the windows differ across the batch, and a fraction above
    1 is refused."""
    rng = np.random.default_rng(1)
    labels = np.kron(rng.integers(0, 6, (16, 8, 6)), np.ones((1, 4, 4), np.int64)).astype(np.uint8)  # 32 x 24
    images = (labels * 20)[..., None].astype(np.uint8)
    out = _transform(crop_fraction=20 / 24, flip=True)(jax.random.key(5), {"image": images, "pixel_labels": labels})
    image, mask = np.asarray(out["image"])[..., 0], np.asarray(out["pixel_labels"])
    assert image.shape == (16, 20, 20) and mask.shape == (16, 20, 20)
    np.testing.assert_array_equal(mask, np.round(image / 20).astype(np.uint8))
    windows = set()
    for n in range(16):  # each crop is a window of its own mask (flipped or not)
        found = [(top, left) for top in range(13) for left in range(5) for flipped in (False, True)
                 if np.array_equal(labels[n, top:top + 20, left:left + 20][:, ::-1 if flipped else 1], mask[n])]
        assert found, n
        windows.add(found[0])
    assert len(windows) > 4
    with pytest.raises(InputError, match="crop_fraction=1.5 must be in"):
        _transform(crop_fraction=1.5)(jax.random.key(0), {"image": images, "pixel_labels": labels})


def test_flip_tta_averages_the_mirror_images_prediction_mapped_back():
    """predict_flip_tta is the log of the mean of the image's softmax and its mirror image's softmax mirrored back,
    so it is mirror-equivariant; the evaluator scores those probabilities."""
    model = unet.UNet(unet.encoder_of(resnet.small_resnet(1, **TINY_SMALL)), num_classes=4)
    images = jax.random.normal(jax.random.key(0), (2, 20, 24, 1))
    variables = unet.init_variables(model, jax.random.key(1), images.shape)
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats=variables["batch_stats"],
                              tx=optax.sgd(0.1))
    logits = lambda x: model.apply(variables, x, train=False)
    tta = segmentation.predict_flip_tta(state, {"image": images})
    expected = (jax.nn.softmax(logits(images)) + jax.nn.softmax(logits(images[:, :, ::-1]))[:, :, ::-1]) / 2
    np.testing.assert_allclose(np.exp(tta), expected, rtol=1e-5, atol=1e-6)
    mirrored = segmentation.predict_flip_tta(state, {"image": images[:, :, ::-1]})
    np.testing.assert_allclose(mirrored, tta[:, :, ::-1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.exp(tta), jax.nn.softmax(logits(images)), atol=1e-3)  # the mirror did count
    labels = jnp.argmax(expected, -1)
    summed = segmentation.make_eval_step(flip_tta=True)(state, {"image": images, "pixel_labels": labels})
    assert float(segmentation.finish(jax.device_get(summed))["pixel_accuracy"]) == 1.0


def test_lighting_changes_the_image_only():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 16, 1)).astype(np.uint8)
    labels = rng.integers(0, 3, (4, 16, 16)).astype(np.uint8)
    out = _transform(brightness=0.3, contrast=0.3)(jax.random.key(0), {"image": images, "pixel_labels": labels})
    np.testing.assert_array_equal(out["pixel_labels"], labels)
    assert not np.allclose(out["image"], images)


# --- the U-Net ---------------------------------------------------------------------------------------------

TINY_IMAGENET_STEM = dict(stage_sizes=(1, 1, 1), block_cls=resnet.BasicBlock, num_classes=1, stage_widths=(8, 16, 32),
                          stem_width=8)
TINY_SMALL = dict(stage_sizes=(1, 1, 1), stage_widths=(8, 16, 32), stem_width=8, stem_stride=2)


@pytest.mark.parametrize("body", [resnet.ResNet(**TINY_IMAGENET_STEM), resnet.small_resnet(1, **TINY_SMALL),
                                  resnet.small_resnet(1, **{**TINY_SMALL, "stem_stride": 1})])
@pytest.mark.parametrize("upsample", ["shuffle", "transpose"])
def test_output_has_the_input_shape_for_odd_sizes(body, upsample):
    model = unet.UNet(unet.encoder_of(body), num_classes=5, upsample=upsample)
    for shape in [(2, 33, 47, 3), (1, 17, 20, 3)]:
        x = jnp.zeros(shape)
        variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
        out = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
        assert out.shape == (*shape[:3], 5), (shape, out.shape)


def test_pixel_shuffle_with_icnr_starts_as_nearest_neighbour_upsampling():
    up = unet.Upsample(features=4, factor=2)
    x = jax.random.normal(jax.random.key(0), (2, 5, 7, 6))
    y, _ = up.init_with_output(jax.random.key(1), x, train=True)
    assert y.shape == (2, 10, 14, 4)
    for dy, dx in [(0, 1), (1, 0), (1, 1)]:
        np.testing.assert_allclose(y[:, dy::2, dx::2], y[:, ::2, ::2], atol=1e-6)


class FeatureMap(nn.Module):
    """A 'head' that returns the classifier's last feature map itself."""
    num_classes: int

    def __call__(self, x, train):
        return x


def test_pretrained_encoder_features_equal_the_classifiers(tmp_path):
    """torchvision-layout ResNet-18 weights (random, with non-trivial BatchNorm statistics) saved by torch and
    loaded both into the classifier and into the U-Net's encoder: the same feature map on the same image."""
    path = str(tmp_path / "resnet18.pth")
    torch.save(make_torch_resnet((2, 2, 2, 2), seed=0).state_dict(), path)
    image = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 64, 3)), jnp.float32)
    classifier = resnet.resnet18(num_classes=10, head=FeatureMap)
    shapes = jax.eval_shape(functools.partial(classifier.init, train=False), jax.random.key(0), image)
    classifier_variables = pretrained.load_torchvision_resnet(path, shapes)
    expected = jax.jit(functools.partial(classifier.apply, train=False))(classifier_variables, image)

    model = unet.UNet(unet.encoder_of(resnet.resnet18(num_classes=10)), num_classes=3)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), image)
    variables = unet.load_torchvision_encoder(shapes, path)  # the decoder's leaves stay shapes: not used here
    encoder = {c: variables[c]["encoder"] for c in variables}
    features = jax.jit(functools.partial(model.encoder.apply, train=False))(encoder, image)
    assert [f.shape[1] for f in features] == [32, 16, 8, 4, 2]
    assert float(jnp.abs(expected).max()) > 0.1
    np.testing.assert_allclose(features[-1], expected, atol=1e-5)
    # A classifier's own (flax) variables load the same way, and the decoder keeps its initialisation.
    again = unet.load_encoder(shapes, classifier_variables)
    jax.tree.map(np.testing.assert_array_equal, again["params"]["encoder"], variables["params"]["encoder"])
    with pytest.raises(InputError, match="missing .*layer1_2"):
        bigger = unet.UNet(unet.encoder_of(resnet.resnet34(num_classes=1)), num_classes=3)
        unet.load_torchvision_encoder(jax.eval_shape(functools.partial(bigger.init, train=False), jax.random.key(0),
                                                     image), path)


def test_layer_groups_cover_every_parameter_and_a_frozen_encoder_gets_no_gradient():
    model = unet.UNet(unet.encoder_of(resnet.small_resnet(1, **TINY_SMALL)), num_classes=3)
    variables = unet.init_variables(model, jax.random.key(0), (1, 32, 32, 1))
    groups = model.layer_groups()
    for path, _ in jax.tree_util.tree_leaves_with_path(variables["params"]):
        name = optimizers.param_path(path)
        assert sum(bool(re.search(g, name)) for g in groups) == 1, name
    frozen = model.clone(frozen_groups=2)
    x = jnp.ones((2, 32, 32, 1))
    grads = jax.jit(jax.grad(lambda p: jnp.sum(frozen.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                                                            mutable=["batch_stats"])[0] ** 2)))(variables["params"])
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["encoder"]))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["decoder"]))


# --- your own masks ----------------------------------------------------------------------------------------

def _write_pairs(root, count, colours=None, size=(20, 14), split=""):
    rng = np.random.default_rng(len(str(root)) + count)
    for d in ("images", "masks"):
        os.makedirs(os.path.join(root, split, d), exist_ok=True)
    for i in range(count):
        labels = rng.integers(0, 3, size[::-1]).astype(np.uint8)
        PIL.Image.fromarray(rng.integers(0, 256, (*size[::-1], 3)).astype(np.uint8)).save(
            os.path.join(root, split, "images", f"img{i}.jpg"))
        mask = PIL.Image.fromarray(np.asarray(colours, np.uint8)[labels] if colours else labels)
        mask.save(os.path.join(root, split, "masks", f"img{i}.png"))


def test_own_masks_loader_reads_indices_or_colours_and_splits(tmp_path):
    root = str(tmp_path / "indices")
    _write_pairs(root, 10)
    _write_pairs(root, 3, split="test")
    with open(os.path.join(root, "codes.txt"), "w") as f:
        f.write("road\ncar\nsky\n")
    data = masks.load_mask_folder(root, 16, valid_fraction=0.2)
    assert data.class_names == ("road", "car", "sky") and data.colours is None
    assert data.train.images.shape == (8, 16, 16, 3) and data.valid.masks.shape == (2, 16, 16)
    assert data.test.images.shape == (3, 16, 16, 3)
    assert set(np.unique(data.train.masks)) <= {0, 1, 2}
    # Nearest-neighbour: each resized mask pixel is one of the original mask's pixels.
    original = np.asarray(PIL.Image.open(os.path.join(root, "masks", "img0.png")))
    row = data.train.sources.index(os.path.join(root, "images", "img0.jpg"))
    ys, xs = (np.arange(16) + 0.5) * 14 / 16, (np.arange(16) + 0.5) * 20 / 16
    np.testing.assert_array_equal(data.train.masks[row], original[ys.astype(int)][:, xs.astype(int)])

    colours = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    coloured = str(tmp_path / "colours")
    _write_pairs(coloured, 4, colours)
    _write_pairs(coloured, 2, colours, split="valid")
    with open(os.path.join(coloured, "codes.txt"), "w") as f:
        f.write("void_free 0 0 0\nred 255 0 0\ngreen 0 255 0\n")
    data = masks.load_mask_folder(coloured, 8)
    assert data.colours == tuple(colours) and len(data.valid.images) == 2 and len(data.train.images) == 4
    assert set(np.unique(data.train.masks)) == {0, 1, 2}


def test_own_masks_errors_name_the_file(tmp_path):
    root = str(tmp_path / "bad")
    _write_pairs(root, 3)
    with open(os.path.join(root, "codes.txt"), "w") as f:
        f.write("a\nb\nc\n")
    bad_size = os.path.join(root, "masks", "img1.png")
    PIL.Image.fromarray(np.zeros((10, 10), np.uint8)).save(bad_size)
    with pytest.raises(InputError, match=f"mask {bad_size} is 10x10 but its image .*img1.jpg is 20x14"):
        masks.load_mask_folder(root, 16)
    PIL.Image.fromarray(np.full((14, 20), 7, np.uint8)).save(bad_size)
    with pytest.raises(InputError, match=f"mask {bad_size}: index 7 is outside the 3 classes"):
        masks.load_mask_folder(root, 16)
    PIL.Image.fromarray(np.full((14, 20), V, np.uint8)).save(bad_size)  # void is allowed
    assert masks.load_mask_folder(root, 16, valid_fraction=0.34).class_names == ("a", "b", "c")
    os.remove(bad_size)
    with pytest.raises(InputError, match="image .*img1.jpg has no mask"):
        masks.load_mask_folder(root, 16)
    coloured = str(tmp_path / "colours")
    _write_pairs(coloured, 2, [(0, 0, 0), (9, 9, 9), (255, 255, 255)])
    with open(os.path.join(coloured, "codes.txt"), "w") as f:
        f.write("bg 0 0 0\nfg 255 255 255\nother 1 2 3\n")
    with pytest.raises(InputError, match=r"mask .*img\d.png: colour \(9, 9, 9\) is not one of the 3 colours"):
        masks.load_mask_folder(coloured, 8)
    with open(os.path.join(coloured, "codes.txt"), "w") as f:
        f.write("bg 0 0\n")
    with pytest.raises(InputError, match="codes.txt line 1"):
        masks.load_mask_folder(coloured, 8)


# --- the experiment, on real canvases ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def canvases_dir(tmp_path_factory):
    """The small canvases (600 / 100 / 100) built once into a temporary TFDS directory."""
    data_dir = str(tmp_path_factory.mktemp("canvases"))
    canvases.FashionCanvases(config="small", data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def test_canvases_are_deterministic_and_masks_follow_the_pixels(canvases_dir):
    images, labels = canvases.load("validation", canvases_dir, "small")
    assert images.shape == (100, 64, 64, 1) and labels.shape == (100, 64, 64)
    again = canvases.make_canvases(*_fashion_validation(), 100, canvases.SEEDS["validation"])
    np.testing.assert_array_equal(again[0], images[..., 0])
    np.testing.assert_array_equal(again[1], labels)
    assert np.all(images[..., 0][labels == 0] == 0)  # background is black, every item pixel is labelled
    assert set(np.unique(labels)) == set(range(11))


def test_canvases_leave_every_item_mostly_visible():
    """Overlap is bounded: each placed item keeps MIN_VISIBLE of its pixels, and some canvases do overlap."""
    rng = np.random.default_rng(0)
    images, labels = _fashion_validation()
    overlapping = 0
    for _ in range(200):
        canvas, mask, owner, sizes = canvases.draw_canvas(rng, images, labels)
        shown = np.bincount(owner.ravel() + 1, minlength=len(sizes) + 1)[1:]
        assert 1 <= len(sizes) <= canvases.MAX_ITEMS
        assert np.all(shown >= canvases.MIN_VISIBLE * np.asarray(sizes))
        np.testing.assert_array_equal(mask > 0, owner >= 0)
        overlapping += bool(np.any(shown < np.asarray(sizes)))
    assert overlapping >= 20


def _fashion_validation():
    from research.vision import fashion_mnist
    train_images, train_labels = fashion_mnist.raw_arrays("/nonexistent")["train"]
    start = fashion_mnist.DERIVED_VALIDATION_START
    return train_images[start:], train_labels[start:]


def test_pets_preset_reads_tfds_trimaps(monkeypatch):
    """The cloud preset's data and model on TFDS's mocked oxford_iiit_pet (records made here: trimaps of 1 pet,
    2 background, 3 border) with random weights: no network, no pretrained weights."""
    rng = np.random.default_rng(0)

    def records(self, split, **kwargs):
        made = []
        for i in range(10):
            height, width = 30 + i, 40
            trimap = np.full((height, width, 1), 2, np.uint8)
            trimap[5:20, 8:30] = 3
            trimap[7:18, 10:28] = 1
            made.append({"image": rng.integers(0, 256, (height, width, 3)).astype(np.uint8),
                         "segmentation_mask": trimap, "label": 0, "species": 0, "file_name": f"{i}.jpg"})
        return made

    config = experiment.get_config("pets")
    config.update(weights="")
    config.data.image_size = 32
    with tfds.testing.mock_data(as_data_source_fn=records, policy=tfds.testing.MockPolicy.USE_CODE):
        data = segmenter.load_data(config)
    assert data.class_names == ("background", "pet")
    assert data.train.images.shape == (9, 32, 32, 3) and len(data.valid.images) == 1 and len(data.test.images) == 10
    assert set(np.unique(data.train.masks)) == {0, 1, V}  # the border is void
    np.testing.assert_allclose(data.mean, [0.485, 0.456, 0.406])
    model = segmenter.make_model(config, 2, frozen_groups=2)
    assert model.layer_groups()[0].startswith("^encoder/(conv1|bn1|layer1")
    x = jnp.zeros((1, 32, 32, 3))
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    assert variables["params"]["encoder"]["layer4_2"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
    assert jax.eval_shape(functools.partial(model.apply, train=False), variables, x).shape == (1, 32, 32, 2)
