"""Detection with SSDLite (paper §6.2): the SSD loss of the reference
configuration (sigmoid classification + smooth-L1 box loss 1:1, hard-negative
mining 3:1, normalised by the number of matches), post-processing (per-class
NMS) and COCO metrics from pycocotools over the evaluation split."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnv2_jax.models import box_ops
from mnv2_jax.models import ssdlite
from mnv2_jax.models.building import build_model
from mnv2_jax.tasks import coco_eval
from mnv2_jax.tasks import inference

Array = jax.Array


def ssd_targets(
  anchors: Array,
  gt_boxes: Array,
  gt_labels: Array,
  gt_valid: Array,
  gt_crowd: Array,
):
  """Per-anchor targets of one image: class (0 = background), box codes,
  positive and ignore masks."""
  match, positive, ignore = box_ops.match_anchors(
    anchors, gt_boxes, gt_valid, gt_crowd
  )
  classes = jnp.where(positive, gt_labels[match] + 1, 0)
  codes = box_ops.encode_boxes(gt_boxes[match], anchors)
  return classes, codes, positive, ignore


def ssd_loss(
  box_encodings: Array,
  class_logits: Array,
  anchors: Array,
  batch: dict[str, Array],
  *,
  negatives_per_positive: int = 3,
  min_negatives_per_image: int = 3,
) -> tuple[Array, dict[str, Array]]:
  """The reference SSD loss over a batch.

  Sigmoid cross-entropy on all C + 1 logits (one-hot targets, background =
  index 0); smooth L1 (delta 1) on the box codes of positive anchors; of the
  negatives only the `negatives_per_positive` x (at least
  `min_negatives_per_image`) with the highest classification loss count
  (hard-negative mining); both losses are summed and divided by the number of
  positives in the batch.

  Args:
    box_encodings: [N, A, 4]; class_logits: [N, A, C + 1].
    anchors: [A, 4].
    batch: 'boxes' [N, G, 4], 'labels' [N, G] (0-based), 'valid' [N, G],
      'crowd' [N, G].
  """
  classes, codes, positive, ignore = jax.vmap(
    ssd_targets, in_axes=(None, 0, 0, 0, 0)
  )(anchors, batch['boxes'], batch['labels'], batch['valid'], batch['crowd'])
  num_logits = class_logits.shape[-1]
  targets = jax.nn.one_hot(classes, num_logits)
  class_loss = jnp.sum(
    optax.sigmoid_binary_cross_entropy(
      class_logits.astype(jnp.float32), targets
    ),
    axis=-1,
  )  # [N, A]
  box_loss = jnp.sum(
    optax.huber_loss(box_encodings.astype(jnp.float32), codes, delta=1.0),
    axis=-1,
  )
  negative = ~positive & ~ignore
  num_positive = jnp.sum(positive, axis=1)  # [N]
  num_negative = jnp.minimum(
    jnp.maximum(negatives_per_positive * num_positive, min_negatives_per_image),
    jnp.sum(negative, axis=1),
  )
  negative_loss = jnp.where(negative, class_loss, -jnp.inf)
  rank = jnp.argsort(jnp.argsort(-negative_loss, axis=1), axis=1)
  hard_negative = negative & (rank < num_negative[:, None])
  normalizer = jnp.maximum(jnp.sum(num_positive), 1).astype(jnp.float32)
  classification = (
    jnp.sum(jnp.where(positive | hard_negative, class_loss, 0.0)) / normalizer
  )
  localization = jnp.sum(jnp.where(positive, box_loss, 0.0)) / normalizer
  return classification + localization, {
    'classification_loss': classification,
    'localization_loss': localization,
    'num_positive_per_image': jnp.mean(num_positive.astype(jnp.float32)),
  }


# ---------------------------------------------------------- post-processing


def postprocess(
  box_encodings: Array,
  class_logits: Array,
  anchors: Array,
  *,
  score_threshold: float = 0.01,
  iou_threshold: float = 0.6,
  max_per_class: int = 100,
  max_detections: int = 100,
) -> dict[str, Array]:
  """Detections per image (batched): sigmoid scores, per-class NMS at IoU
  0.6, the best `max_detections`; boxes normalised [ymin, xmin, ymax, xmax]
  clipped to the image (`to_image_coordinates` scales them to pixels)."""

  def one_image(codes, logits):
    boxes = jnp.clip(box_ops.decode_boxes(codes, anchors), 0.0, 1.0)
    scores = jax.nn.sigmoid(logits[:, 1:].astype(jnp.float32))
    return box_ops.batched_multiclass_nms(
      boxes,
      scores,
      score_threshold=score_threshold,
      iou_threshold=iou_threshold,
      max_per_class=max_per_class,
      max_detections=max_detections,
    )

  return jax.vmap(one_image)(box_encodings, class_logits)


def to_image_coordinates(boxes: Array, height: Array, width: Array) -> Array:
  """Normalised [ymin, xmin, ymax, xmax] -> pixels of an image of that size."""
  scale = jnp.stack([height, width, height, width], -1).astype(boxes.dtype)
  return boxes * scale[..., None, :] if boxes.ndim == 3 else boxes * scale


class Detection:
  """MobileNetV2 + SSDLite (paper §6.2)."""

  name = 'detection'
  headline_metric = 'AP50'

  def __init__(self, config, dataset_info=None):
    self.config = config
    self.num_classes = num_classes = config.num_classes
    self.model = build_model(config)
    detection = config.detection
    self.anchor_config = box_ops.AnchorConfig(
      min_scale=detection.min_scale, max_scale=detection.max_scale
    )
    self.anchors = jnp.asarray(
      ssdlite.anchors_for(self.model, config.image_size, self.anchor_config)
    )
    # The dataset's category id and name of each contiguous label (COCO).
    self.category_ids = getattr(dataset_info, 'category_ids', None)
    self.category_names = getattr(dataset_info, 'category_names', None) or [
      str(i) for i in range(num_classes)
    ]

  def loss(self, outputs, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    box_encodings, class_logits, _ = outputs
    loss, parts = ssd_loss(
      box_encodings,
      class_logits,
      self.anchors,
      batch,
      negatives_per_positive=self.config.detection.negatives_per_positive,
    )
    return loss, parts

  def eval_step(self, variables, batch, microbatch: int = 0):
    """Detections of every image (normalised boxes, 0-based classes)."""
    box_encodings, class_logits = inference.apply_in_microbatches(
      lambda images: self.model.apply(variables, images, train=False)[:2],
      batch['image'],
      microbatch,
    )
    detection = self.config.detection
    return postprocess(
      box_encodings,
      class_logits,
      self.anchors,
      score_threshold=detection.score_threshold,
      iou_threshold=detection.nms_iou_threshold,
      max_detections=detection.max_detections,
    )

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
      self.truth.append(
        {
          'id': image_id,
          'height': height,
          'width': width,
          'boxes': host_batch['boxes'][i][valid],
          'labels': host_batch['labels'][i][valid],
          'crowd': host_batch['crowd'][i][valid],
        }
      )
      self.detections += coco_eval.detections_json(
        image_id,
        height,
        width,
        outputs['boxes'][i],
        outputs['scores'][i],
        outputs['classes'][i],
        outputs['valid'][i],
        self.task.category_ids,
      )

  def result(self) -> dict[str, float]:
    truth = coco_eval.ground_truth_json(
      self.truth, self.task.category_names, self.task.category_ids
    )
    metrics = coco_eval.evaluate(truth, self.detections)
    metrics['num_examples'] = len(self.truth)
    return metrics
