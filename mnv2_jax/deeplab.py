"""Mobile DeepLabv3 on MobileNetV2 (paper §6.3, Table 7): model, loss, mIoU,
multi-scale + flip evaluation.

MNetV2* (PAPER.md §7): the backbone runs at output stride 16 or 8 (later
strides become atrous rates, `model.block_configs`) and ends at the
320-channel output of the last bottleneck, without the 1x1 conv to 1280. The
head has a 1x1 conv branch and an image-level pooling branch (256 channels
each); with ASPP, three 3x3 atrous branches as well (rates 6, 12, 18 at output
stride 16, doubled at 8). The branches are concatenated, projected by a 1x1
conv to 256 and classified by a 1x1 conv with bias; the logits are upsampled
bilinearly to the input size (align_corners, as DeepLab's 513 = 32·16 + 1
crops assume).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnv2_jax import initializers
from mnv2_jax import layers
from mnv2_jax import model as model_lib

Array = jax.Array

HEAD_DEPTH = 256
ASPP_RATES_AT_STRIDE_16 = (6, 12, 18)
# Paper §6.3 / PAPER.md §7: MF = these input scales plus a left-right flip.
EVAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
IGNORE_LABEL = 255


def aspp_rates(output_stride: int) -> tuple[int, ...]:
  """6/12/18 at output stride 16, doubled at 8 (the same field of view)."""
  return tuple(rate * 16 // output_stride for rate in ASPP_RATES_AT_STRIDE_16)


def resize_bilinear(x: Array, size: Sequence[int]) -> Array:
  """Bilinear resize of [N, H, W, C] with aligned corners (TF's
  `resize_bilinear(align_corners=True)`, what DeepLab uses): output pixel i
  samples input position i·(H - 1)/(size - 1), so corners map to corners."""
  def along(x, axis, out):
    n = x.shape[axis]
    if n == out:
      return x
    if n == 1 or out == 1:  # a broadcast, or the first row (its corner)
      return x.take(np.zeros(out, np.int32), axis=axis)
    position = np.arange(out) * (n - 1) / (out - 1)
    low = np.minimum(np.floor(position).astype(np.int32), n - 2)
    weight = (position - low).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = out
    weight = jnp.asarray(weight.reshape(shape), x.dtype)
    return (x.take(low, axis=axis) * (1 - weight)
            + x.take(low + 1, axis=axis) * weight)
  return along(along(x, 1, size[0]), 2, size[1])


class MobileDeepLabV3(nn.Module):
  """MobileNetV2 (MNetV2*) + the reduced DeepLabv3 head.

  Attributes:
    num_classes: classes including background (21 for VOC).
    width_multiplier, output_stride: of the backbone (output stride 16 or 8).
    aspp: adds the three 3x3 atrous branches.
    dropout_rate: before the classifier (DeepLab: keep probability 0.9).
  """
  num_classes: int = 21
  width_multiplier: float = 1.0
  output_stride: int = 16
  aspp: bool = False
  dropout_rate: float = 0.1
  batch_norm_momentum: float = 0.997
  batch_norm_epsilon: float = 1e-3
  padding: str = 'same'
  dtype: str = 'float32'
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, images: Array, train: bool = False
               ) -> tuple[Array, dict[str, Array]]:
    """Returns logits [N, H, W, num_classes] at the input size, endpoints."""
    if self.output_stride not in (8, 16):
      raise ValueError('DeepLab runs the backbone at output stride 8 or 16 '
                       f'(model.output_stride), got {self.output_stride}.')
    dtype = model_lib.DTYPES[self.dtype]
    backbone = model_lib.MobileNetV2(
        num_classes=0, width_multiplier=self.width_multiplier,
        output_stride=self.output_stride, last_conv=False,
        batch_norm_momentum=self.batch_norm_momentum,
        batch_norm_epsilon=self.batch_norm_epsilon, padding=self.padding,
        dtype=self.dtype, implementation=self.implementation,
        name='backbone')
    features, endpoints = backbone(images, train=train)
    norm, conv, _ = layers.module_factories(
        train=train, momentum=self.batch_norm_momentum,
        epsilon=self.batch_norm_epsilon, padding=self.padding, dtype=dtype,
        implementation=self.implementation)

    def branch(name: str, **conv_kwargs) -> Callable[[Array], Array]:
      return layers.ConvBN(functools.partial(conv, HEAD_DEPTH, **conv_kwargs),
                           norm, nn.relu, name=name)

    # Image-level features: global average pool, 1x1 conv, then back to the
    # feature map's size (bilinear from 1x1 is a broadcast).
    pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2),
                      keepdims=True).astype(features.dtype)
    pooled = branch('image_pooling')(pooled)
    branches = [jnp.broadcast_to(pooled, features.shape[:3] + pooled.shape[3:]),
                branch('aspp_0')(features)]
    if self.aspp:
      for i, rate in enumerate(aspp_rates(self.output_stride)):
        branches.append(branch(f'aspp_{i + 1}', kernel_size=3,
                               dilation=rate)(features))
    x = branch('concat_projection')(jnp.concatenate(branches, axis=-1))
    endpoints['concat_projection'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=jnp.float32,
                     kernel_init=initializers.LECUN_NORMAL,
                     bias_init=initializers.ZEROS, name='logits')(x.astype(jnp.float32))
    endpoints['logits_at_output_stride'] = logits
    return resize_bilinear(logits, images.shape[1:3]), endpoints


def from_config(config, num_classes: int) -> MobileDeepLabV3:
  model = config.model
  return MobileDeepLabV3(
      num_classes=num_classes, width_multiplier=model.width_multiplier,
      output_stride=model.output_stride, aspp=config.segmentation.aspp,
      dropout_rate=model.dropout_rate,
      batch_norm_momentum=model.batch_norm_momentum,
      batch_norm_epsilon=model.batch_norm_epsilon, padding=model.padding,
      dtype=model.dtype,
      implementation=model.implementation)


# ------------------------------------------------------------ loss, metric


def segmentation_loss(logits: Array, labels: Array) -> tuple[Array, Array]:
  """Softmax cross-entropy averaged over the labelled pixels (label 255 is
  ignored, as VOC's object borders and the crop padding). Returns (loss,
  number of labelled pixels)."""
  valid = labels != IGNORE_LABEL
  safe = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  nll = -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
  count = jnp.sum(valid)
  return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(count, 1), count


def confusion_matrix(predictions: Array, labels: Array, num_classes: int
                     ) -> Array:
  """[num_classes, num_classes] int32 counts, rows = truth, columns =
  prediction, over the pixels whose label is not 255 (jit-compatible)."""
  valid = labels != IGNORE_LABEL
  index = jnp.where(valid, labels * num_classes + predictions,
                    num_classes * num_classes)
  counts = jnp.bincount(index.reshape(-1), length=num_classes ** 2 + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def iou_from_confusion(confusion: np.ndarray) -> tuple[float, np.ndarray]:
  """(mIoU, per-class IoU) of an accumulated confusion matrix.

  IoU_c = TP / (TP + FP + FN); classes absent from both truth and prediction
  (union 0) are NaN and left out of the mean, as DeepLab's streaming mIoU
  does for classes never seen.
  """
  confusion = np.asarray(confusion, np.float64)
  true_positive = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - true_positive
  with np.errstate(invalid='ignore', divide='ignore'):
    per_class = np.where(union > 0, true_positive / union, np.nan)
  present = ~np.isnan(per_class)
  mean = float(per_class[present].mean()) if present.any() else 0.0
  return mean, per_class


# ------------------------------------------------- multi-scale evaluation


def scaled_size(size: int, scale: float) -> int:
  """DeepLab's `scale_dimension`: (size - 1)·scale + 1, so a 513 crop at
  scale 0.5 is 257 (output stride 16 keeps the corners aligned)."""
  return int((size - 1) * scale + 1)


def multi_scale_probabilities(apply_fn: Callable[[Array], Array],
                              images: Array, scales: Sequence[float],
                              flip: bool) -> Array:
  """Class probabilities [N, H, W, C] averaged over input scales and, with
  `flip`, left-right flips (paper §6.3's MF).

  Each scale resizes the input (bilinear, aligned corners), runs
  `apply_fn` (images -> logits, at the output stride or any size), resizes
  the logits once to H x W and takes the softmax; the probabilities of all passes are
  averaged, as DeepLab's multi-scale inference does. With scales (1.0,) and
  no flip this is the softmax of the single-scale logits.
  """
  height, width = images.shape[1:3]
  total = 0.0
  passes = 0
  for scale in scales:
    size = (scaled_size(height, scale), scaled_size(width, scale))
    scaled = images if size == (height, width) else resize_bilinear(images,
                                                                    size)
    for flipped in ((False, True) if flip else (False,)):
      inputs = scaled[:, :, ::-1] if flipped else scaled
      logits = apply_fn(inputs).astype(jnp.float32)
      if flipped:
        logits = logits[:, :, ::-1]
      if logits.shape[1:3] != (height, width):
        logits = resize_bilinear(logits, (height, width))
      total = total + jax.nn.softmax(logits, axis=-1)
      passes += 1
  return total / passes
