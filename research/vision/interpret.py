"""Interpreting a trained classifier: most-confused class pairs and class activation maps (CAM).

CAM (Zhou et al. 2016; fast.ai 2018 lesson 7): a ResNet ends with global average pooling and one dense
layer, so its logits are logits_K = mean_hw(features_hxwxD) @ kernel_DxK + bias_K. Applying the dense kernel
at every position before the mean, cam_hxwxK = features_hxwxD @ kernel_DxK, shows where in the image each
class's evidence lies; the mean of the map plus the bias is exactly the logit.

Grad-CAM (Selvaraju et al. 2017) does the same for any head (fastai's, with hidden layers): each feature channel
is weighted by the gradient of the class's logit with respect to it, summed over positions. For a pooled
linear head that gradient is the kernel's column over h*w, so Grad-CAM (taken without its ReLU, as here) is
exactly CAM; `class_maps` uses CAM where there is an `fc` layer and Grad-CAM otherwise.
"""

import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.core.train_state import TrainState
from research.vision import plots
from research.vision.image_arrays import normalise


def most_confused(counts_KxK: np.ndarray, class_names, min_count: int = 1) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) for every off-diagonal cell of a confusion matrix with at least
    `min_count` examples, most frequent first (fastai's `most_confused`)."""
    off_diagonal = [(int(counts_KxK[a, p]), a, p) for a in range(len(counts_KxK)) for p in range(len(counts_KxK))
                    if a != p and counts_KxK[a, p] >= min_count]
    off_diagonal.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [(class_names[a], class_names[p], count) for count, a, p in off_diagonal]


def last_stage_name(params) -> str:
    """The name of a ResNet's last residual block (`layer{stage}_{block}` with the largest stage, then
    block): its output is what the global average pool reads."""
    blocks = [(int(m.group(1)), int(m.group(2)), name) for name in params
              if (m := re.fullmatch(r"layer(\d+)_(\d+)", name))]
    if not blocks:
        raise ValueError(f"no ResNet blocks (layerS_B) among the parameters: {sorted(params)}")
    return max(blocks)[2]


def class_activation_maps(state: TrainState, images_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cams_BxhxwxK, logits_BxK) in eval mode: the `fc` kernel applied to the last block's output at every
    position (h x w is the feature map's resolution, e.g. 4x4 for a 28 px image through three halvings)."""
    if "fc" not in state.params:
        raise ValueError("class activation maps need a ResNet ending in global average pooling and the linear "
                         f"`fc` layer; this model's top-level modules are {sorted(state.params)}")
    features_BxhxwxD, logits_BxK = _last_stage_features(state, images_BxHxWxC)
    cams_BxhxwxK = features_BxhxwxD.astype(jnp.float32) @ state.params["fc"]["kernel"].astype(jnp.float32)
    return cams_BxhxwxK, logits_BxK


def grad_cam(state: TrainState, images_BxHxWxC: jax.Array, classes_B: jax.Array) -> jax.Array:
    """Grad-CAM of one class per image, without the ReLU (B x h x w, the last block's resolution): the last
    block's features, each channel weighted by the gradient of that class's logit with respect to it summed
    over positions. Any head; with torchvision's pooled `fc` it equals the CAM of `class_activation_maps`."""
    name = last_stage_name(state.params)
    features_BxhxwxD, _ = _last_stage_features(state, images_BxHxWxC)

    def chosen_logits(offset_BxhxwxD):
        def add_offset(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            return out + offset_BxhxwxD if context.module.name == name and context.method_name == "__call__" else out

        with nn.intercept_methods(add_offset):
            logits_BxK = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                                        images_BxHxWxC, train=False)
        # in eval mode each image's logits depend on its own features only: one gradient for the whole batch
        return jnp.take_along_axis(logits_BxK, classes_B[:, None], axis=-1).sum()

    gradients_BxhxwxD = jax.grad(chosen_logits)(jnp.zeros_like(features_BxhxwxD))
    weights_BxD = gradients_BxhxwxD.astype(jnp.float32).sum((1, 2))
    return jnp.einsum("bhwd,bd->bhw", features_BxhxwxD.astype(jnp.float32), weights_BxD)


def _last_stage_features(state: TrainState, images_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(the last residual block's output B x h x w x D, logits B x K) in eval mode."""
    name = last_stage_name(state.params)
    logits_BxK, captured = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, images_BxHxWxC, train=False,
        capture_intermediates=lambda module, method: module.name == name and method == "__call__",
        mutable=["intermediates"])
    return captured["intermediates"][name]["__call__"][0], logits_BxK


def class_maps(state: TrainState, images_BxHxWxC: jax.Array, classes_B: jax.Array,
               stride: int | None = None) -> jax.Array:
    """The CAM of one class per image (Grad-CAM where the head is not one linear `fc` layer), interpolated
    (bilinear) to the image's size: float32 BxHxW.

    Cell k of the map sits over input pixel stride * k (every strided convolution and pool of the ResNet
    is centred: output i reads input stride * i), so the map is placed there, not stretched over the image.
    `stride` (the network's total stride) defaults to the smallest power of two that gives the map's size."""
    if "fc" in state.params:
        cams_BxhxwxK, _ = class_activation_maps(state, images_BxHxWxC)
        cams_Bxhxw = jnp.take_along_axis(cams_BxhxwxK, classes_B[:, None, None, None], axis=-1)[..., 0]
    else:
        cams_Bxhxw = grad_cam(state, images_BxHxWxC, classes_B)
    (height, width), (h, w) = images_BxHxWxC.shape[1:3], cams_Bxhxw.shape[1:3]
    stride = stride or total_stride(height, h)
    return jnp.einsum("yi,bij,xj->byx", _interpolation(height, h, stride), cams_Bxhxw,
                      _interpolation(width, w, stride))


def total_stride(size: int, cells: int) -> int:
    """The smallest power of two S with ceil(size / S) == cells (a ResNet halves the size, rounding up)."""
    stride = 1
    while -(-size // stride) > cells:
        stride *= 2
    if -(-size // stride) != cells:
        raise ValueError(f"a {cells}-cell map is no power-of-two downsampling of {size} pixels: pass stride")
    return stride


def _interpolation(size: int, cells: int, stride: int) -> np.ndarray:
    """size x cells weights of linear interpolation between cells centred on pixels 0, stride, 2 stride, ...
    (beyond the last centre, the last cell's value)."""
    position_S = np.clip(np.arange(size) / stride, 0, cells - 1)
    return np.maximum(0.0, 1.0 - np.abs(position_S[:, None] - np.arange(cells)[None, :])).astype(np.float32)


def write_classification_report(workdir: str, state: TrainState, images_NxHxWxC: np.ndarray, labels_N: np.ndarray,
                                probabilities_NxK: np.ndarray, class_names, mean, std, top_losses: int = 16) -> None:
    """confusion_matrix.png, most_confused.png, top_losses.png and cam.png (class activation maps of the
    predicted class on the first image of each class, at most 12) for a labelled image set.

    Every process calls it (the class maps are computed on the whole mesh); process 0 alone writes. A model
    without ResNet blocks has no feature map to explain: cam.png is skipped, with the reason printed."""
    predictions_N = np.argmax(probabilities_NxK, -1)
    shown = [int(np.flatnonzero(labels_N == k)[0]) for k in range(len(class_names)) if np.any(labels_N == k)][:12]
    try:
        maps = np.asarray(jax.jit(class_maps)(state, normalise(images_NxHxWxC[shown], mean, std),
                                              jnp.asarray(predictions_N[shown])))
    except ValueError as e:
        maps = None
        print(f"cam.png skipped: {e}")
    if jax.process_index() != 0:
        return
    counts = plots.confusion_matrix(labels_N, predictions_N, len(class_names))
    plots.plot_confusion_matrix(os.path.join(workdir, "confusion_matrix.png"), counts, class_names)
    plots.plot_most_confused(os.path.join(workdir, "most_confused.png"), most_confused(counts, class_names))
    plots.plot_top_losses(os.path.join(workdir, "top_losses.png"), images_NxHxWxC, probabilities_NxK, labels_N,
                          class_names, top_losses)
    titles = [f"{class_names[labels_N[i]]} \u2192 {class_names[predictions_N[i]]} {probabilities_NxK[i].max():.2f}"
              for i in shown]
    if maps is not None:
        plots.plot_cams(os.path.join(workdir, "cam.png"), images_NxHxWxC[shown], maps, titles)
