"""Segmentation with Mobile DeepLabv3 (paper §6.3, Table 7): pixel
cross-entropy ignoring label 255, mIoU from the confusion matrix of the whole
evaluation split, and Table 7's multi-scale + flip evaluation (MF)."""

from __future__ import annotations

from typing import Callable
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnv2_jax.data.batch_format import IGNORE_LABEL
from mnv2_jax.models import deeplab
from mnv2_jax.models.building import build_model
from mnv2_jax.tasks import inference
from mnv2_jax.tasks import interface

Array = jax.Array


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


def confusion_matrix(
  predictions: Array, labels: Array, num_classes: int
) -> Array:
  """[num_classes, num_classes] int32 counts, rows = truth, columns =
  prediction, over the pixels whose label is not 255 (jit-compatible)."""
  valid = labels != IGNORE_LABEL
  index = jnp.where(
    valid, labels * num_classes + predictions, num_classes * num_classes
  )
  counts = jnp.bincount(index.reshape(-1), length=num_classes**2 + 1)
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


def multi_scale_probabilities(
  apply_fn: Callable[[Array], Array],
  images: Array,
  scales: Sequence[float],
  flip: bool,
) -> Array:
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
    size = (
      deeplab.scaled_size(height, scale),
      deeplab.scaled_size(width, scale),
    )
    scaled = (
      images
      if size == (height, width)
      else deeplab.resize_bilinear(images, size)
    )
    for flipped in (False, True) if flip else (False,):
      inputs = scaled[:, :, ::-1] if flipped else scaled
      logits = apply_fn(inputs).astype(jnp.float32)
      if flipped:
        logits = logits[:, :, ::-1]
      if logits.shape[1:3] != (height, width):
        logits = deeplab.resize_bilinear(logits, (height, width))
      total = total + jax.nn.softmax(logits, axis=-1)
      passes += 1
  return total / passes


class Segmentation:
  """MobileNetV2 + the reduced DeepLabv3 head (paper §6.3)."""

  name = 'segmentation'
  headline_metric = 'mIoU'

  def __init__(self, config, dataset_info=None):
    self.config = config
    self.num_classes = num_classes = config.num_classes
    self.model = build_model(config)
    self.category_names = list(
      getattr(dataset_info, 'category_names', None)
      or [str(i) for i in range(num_classes)]
    )

  def loss(self, outputs, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    logits = outputs[0]
    loss, _ = segmentation_loss(logits, batch['label'])
    labelled = batch['label'] != IGNORE_LABEL
    correct = (jnp.argmax(logits, -1) == batch['label']) & labelled
    return loss, {
      'pixel_accuracy': jnp.sum(correct) / jnp.maximum(jnp.sum(labelled), 1)
    }

  def logits(self, variables, images, microbatch: int = 0) -> jax.Array:
    """Single-scale logits, or with `segmentation.multi_scale_eval` the log
    of the probabilities averaged over scales and flips (Table 7's MF)."""
    apply = lambda x: self.model.apply(variables, x, train=False)[0]
    segmentation = self.config.segmentation
    if not segmentation.multi_scale_eval:
      return inference.apply_in_microbatches(apply, images, microbatch)
    # Each scale's logits at the output stride, resized once to full size.
    at_output_stride = lambda x: self.model.apply(variables, x, train=False)[1][
      'logits_at_output_stride'
    ]
    probabilities = inference.apply_in_microbatches(
      lambda x: multi_scale_probabilities(
        at_output_stride,
        x,
        tuple(segmentation.eval_scales),
        segmentation.eval_flip,
      ),
      images,
      microbatch,
    )
    return jnp.log(jnp.maximum(probabilities, 1e-12))

  def eval_step(self, variables, batch, microbatch: int = 0):
    """Confusion matrix and loss sums over the real examples' labelled
    pixels."""
    logits = self.logits(variables, batch['image'], microbatch)
    labels = jnp.where(
      batch['mask'][:, None, None], batch['label'], IGNORE_LABEL
    )
    loss, pixels = segmentation_loss(logits, labels)
    return {
      'confusion': confusion_matrix(
        jnp.argmax(logits, -1), labels, self.num_classes
      ),
      'loss': loss * pixels,
      'pixels': pixels,
    }

  def accumulator(self) -> 'SegmentationAccumulator':
    return SegmentationAccumulator(self.category_names)


class SegmentationAccumulator(interface.EvaluationSums):
  """Sums the confusion matrices of all batches: mIoU is exact over the
  split (not a mean of per-batch IoUs)."""

  def __init__(self, category_names):
    super().__init__()
    self.category_names = category_names

  def result(self) -> dict[str, float]:
    sums = self.totals()
    confusion = np.asarray(sums['confusion'], np.int64)
    mean_iou, per_class = iou_from_confusion(confusion)
    results = {
      'mIoU': mean_iou,
      'pixel_accuracy': float(np.trace(confusion))
      / max(int(confusion.sum()), 1),
      'loss': float(sums['loss']) / max(float(sums['pixels']), 1.0),
    }
    for name, iou in zip(self.category_names, per_class):
      results[f'IoU/{name}'] = float(iou)
    return results
