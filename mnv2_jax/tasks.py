"""What differs between classification and detection, behind one interface.

`train.Trainer` and the training loop are shared; a task supplies the model,
the loss of the model's training outputs, the evaluation step (jit-compiled,
pure) and the host-side accumulation of its outputs into metrics:

  * classification (paper §6.1): cross-entropy; top-1/top-5 over the split;
  * detection (SSDLite, paper §6.2): the SSD loss; COCO metrics from
    pycocotools over the split's detections;
  * segmentation (Mobile DeepLabv3, paper §6.3): pixel cross-entropy
    ignoring label 255; mIoU from the confusion matrix of the whole split.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnv2_jax import box_ops
from mnv2_jax import coco_eval
from mnv2_jax import deeplab
from mnv2_jax import model as model_lib
from mnv2_jax import ssd

TASKS = ('classification', 'detection', 'segmentation')


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float) -> jax.Array:
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


class Classification:
  """MobileNetV2 classifier (paper §6.1)."""
  name = 'classification'
  headline_metric = 'top1'

  def __init__(self, config, num_classes: int):
    self.config = config
    self.model = model_lib.from_config(config.model, num_classes)
    self.num_classes = num_classes

  def loss(self, outputs, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    logits = outputs[0]
    loss = jnp.mean(cross_entropy(logits, batch['label'], self.num_classes,
                                  self.config.label_smoothing))
    return loss, {'accuracy': jnp.mean(jnp.argmax(logits, -1)
                                       == batch['label'])}

  def eval_step(self, variables, batch, microbatch: int = 0):
    """Sums of loss and top-1/top-5 hits over the real (unpadded) examples."""
    logits = model_lib.apply_in_microbatches(
        lambda images: self.model.apply(variables, images, train=False)[0],
        batch['image'], microbatch)
    mask = batch['mask'].astype(jnp.float32)
    loss = cross_entropy(logits, batch['label'], self.num_classes, 0.0)
    top5 = jax.lax.top_k(logits, min(5, self.num_classes))[1]
    hit5 = jnp.any(top5 == batch['label'][:, None], axis=-1)
    hit1 = top5[:, 0] == batch['label']
    return {'loss': jnp.sum(loss * mask), 'top1': jnp.sum(hit1 * mask),
            'top5': jnp.sum(hit5 * mask), 'count': jnp.sum(mask)}

  def accumulator(self) -> 'ClassificationAccumulator':
    return ClassificationAccumulator()


class ClassificationAccumulator:

  def __init__(self):
    self.sums = None

  def add(self, outputs, host_batch) -> None:
    del host_batch
    self.sums = outputs if self.sums is None else jax.tree.map(
        jnp.add, self.sums, outputs)

  def result(self) -> dict[str, float]:
    sums = jax.device_get(self.sums)
    count = float(sums['count'])
    return {'top1': float(sums['top1']) / count,
            'top5': float(sums['top5']) / count,
            'loss': float(sums['loss']) / count, 'num_examples': int(count)}


class Detection:
  """MobileNetV2 + SSDLite (paper §6.2)."""
  name = 'detection'
  headline_metric = 'AP50'

  def __init__(self, config, num_classes: int, category_ids=None,
               category_names=None):
    self.config = config
    self.num_classes = num_classes
    self.model = ssd.SSDLite(
        num_classes=num_classes,
        width_multiplier=config.model.width_multiplier,
        batch_norm_momentum=config.model.batch_norm_momentum,
        batch_norm_epsilon=config.model.batch_norm_epsilon,
        padding=config.model.padding, dtype=config.model.dtype,
        implementation=config.model.implementation)
    detection = config.detection
    self.anchor_config = box_ops.AnchorConfig(
        min_scale=detection.min_scale, max_scale=detection.max_scale)
    self.anchors = jnp.asarray(ssd.anchors_for(self.model, config.image_size,
                                               self.anchor_config))
    self.category_ids = category_ids
    self.category_names = category_names or [str(i) for i in
                                             range(num_classes)]

  def loss(self, outputs, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    box_encodings, class_logits, _ = outputs
    loss, parts = ssd.ssd_loss(
        box_encodings, class_logits, self.anchors, batch,
        negatives_per_positive=self.config.detection.negatives_per_positive)
    return loss, parts

  def eval_step(self, variables, batch, microbatch: int = 0):
    """Detections of every image (normalised boxes, 0-based classes)."""
    box_encodings, class_logits = model_lib.apply_in_microbatches(
        lambda images: self.model.apply(variables, images, train=False)[:2],
        batch['image'], microbatch)
    detection = self.config.detection
    return ssd.postprocess(
        box_encodings, class_logits, self.anchors,
        score_threshold=detection.score_threshold,
        iou_threshold=detection.nms_iou_threshold,
        max_detections=detection.max_detections)

  def accumulator(self) -> 'DetectionAccumulator':
    return DetectionAccumulator(self)


class DetectionAccumulator:
  """Collects ground truth and detections of the real examples; COCO
  metrics at the end."""

  def __init__(self, task: Detection):
    self.task = task
    self.truth: list[dict[str, Any]] = []
    self.detections: list[dict] = []

  def add(self, outputs, host_batch) -> None:
    outputs = jax.device_get(outputs)
    for i in np.nonzero(host_batch['mask'])[0]:
      valid = host_batch['valid'][i]
      height, width = host_batch['height'][i], host_batch['width'][i]
      image_id = int(host_batch['image_id'][i])
      self.truth.append({
          'id': image_id, 'height': height, 'width': width,
          'boxes': host_batch['boxes'][i][valid],
          'labels': host_batch['labels'][i][valid],
          'crowd': host_batch['crowd'][i][valid]})
      self.detections += coco_eval.detections_json(
          image_id, height, width, outputs['boxes'][i], outputs['scores'][i],
          outputs['classes'][i], outputs['valid'][i], self.task.category_ids)

  def result(self) -> dict[str, float]:
    truth = coco_eval.ground_truth_json(self.truth, self.task.category_names,
                                        self.task.category_ids)
    metrics = coco_eval.evaluate(truth, self.detections)
    metrics['num_examples'] = len(self.truth)
    return metrics


class Segmentation:
  """MobileNetV2 + the reduced DeepLabv3 head (paper §6.3)."""
  name = 'segmentation'
  headline_metric = 'mIoU'

  def __init__(self, config, num_classes: int, category_names=None,
               category_ids=None):
    del category_ids
    self.config = config
    self.num_classes = num_classes
    self.model = deeplab.from_config(config, num_classes)
    self.category_names = list(category_names or
                               [str(i) for i in range(num_classes)])

  def loss(self, outputs, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    logits = outputs[0]
    loss, _ = deeplab.segmentation_loss(logits, batch['label'])
    labelled = batch['label'] != deeplab.IGNORE_LABEL
    correct = (jnp.argmax(logits, -1) == batch['label']) & labelled
    return loss, {'pixel_accuracy': jnp.sum(correct)
                                    / jnp.maximum(jnp.sum(labelled), 1)}

  def logits(self, variables, images, microbatch: int = 0) -> jax.Array:
    """Single-scale logits, or with `segmentation.multi_scale_eval` the log
    of the probabilities averaged over scales and flips (Table 7's MF)."""
    apply = lambda x: self.model.apply(variables, x, train=False)[0]
    segmentation = self.config.segmentation
    if not segmentation.multi_scale_eval:
      return model_lib.apply_in_microbatches(apply, images, microbatch)
    # Each scale's logits at the output stride, resized once to full size.
    at_output_stride = lambda x: self.model.apply(
        variables, x, train=False)[1]['logits_at_output_stride']
    probabilities = model_lib.apply_in_microbatches(
        lambda x: deeplab.multi_scale_probabilities(
            at_output_stride, x, tuple(segmentation.eval_scales),
            segmentation.eval_flip),
        images, microbatch)
    return jnp.log(jnp.maximum(probabilities, 1e-12))

  def eval_step(self, variables, batch, microbatch: int = 0):
    """Confusion matrix and loss sums over the real examples' labelled
    pixels."""
    logits = self.logits(variables, batch['image'], microbatch)
    labels = jnp.where(batch['mask'][:, None, None], batch['label'],
                       deeplab.IGNORE_LABEL)
    loss, pixels = deeplab.segmentation_loss(logits, labels)
    return {'confusion': deeplab.confusion_matrix(
                jnp.argmax(logits, -1), labels, self.num_classes),
            'loss': loss * pixels, 'pixels': pixels}

  def accumulator(self) -> 'SegmentationAccumulator':
    return SegmentationAccumulator(self.category_names)


class SegmentationAccumulator:
  """Sums the confusion matrices of all batches: mIoU is exact over the
  split (not a mean of per-batch IoUs)."""

  def __init__(self, category_names):
    self.category_names = category_names
    self.sums = None

  def add(self, outputs, host_batch) -> None:
    del host_batch
    self.sums = outputs if self.sums is None else jax.tree.map(
        jnp.add, self.sums, outputs)

  def result(self) -> dict[str, float]:
    sums = jax.device_get(self.sums)
    confusion = np.asarray(sums['confusion'], np.int64)
    mean_iou, per_class = deeplab.iou_from_confusion(confusion)
    results = {'mIoU': mean_iou,
               'pixel_accuracy': float(np.trace(confusion))
                                 / max(int(confusion.sum()), 1),
               'loss': float(sums['loss']) / max(float(sums['pixels']), 1.0)}
    for name, iou in zip(self.category_names, per_class):
      results[f'IoU/{name}'] = float(iou)
    return results


def build(config, num_classes: int, **kwargs):
  if config.task == 'detection':
    return Detection(config, num_classes, **kwargs)
  if config.task == 'segmentation':
    return Segmentation(config, num_classes, **kwargs)
  return Classification(config, num_classes)
