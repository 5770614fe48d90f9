"""Boxes for SSDLite (paper §6.2): anchors, IoU, box coding, matching, NMS.

Boxes are [ymin, xmin, ymax, xmax] in coordinates normalised to [0, 1] by the
image size, as in the TF Object Detection API whose SSDLite configuration the
paper reports (docs/paper.md). Everything is jit-compatible with static shapes:
ground truth is padded to a fixed count and marked by a validity mask.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# ------------------------------------------------------------------ anchors


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
  """The reference SSD anchor generator (TF OD API `ssd_anchor_generator`).

  Scales are spread linearly from `min_scale` to `max_scale` over the layers;
  every layer has one box per aspect ratio at its scale plus one of ratio 1 at
  the geometric mean of its scale and the next ('interpolated'); the lowest
  layer is reduced to (0.1, 1), (s0, 2), (s0, 1/2).
  """

  num_layers: int = 6
  min_scale: float = 0.2
  max_scale: float = 0.95
  aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
  interpolated_scale_aspect_ratio: float = 1.0
  reduce_boxes_in_lowest_layer: bool = True


def layer_box_specs(
  config: AnchorConfig = AnchorConfig(),
) -> list[list[tuple[float, float]]]:
  """(scale, aspect ratio) of every box per location, for each layer."""
  n = config.num_layers
  scales = [
    config.min_scale + (config.max_scale - config.min_scale) * i / (n - 1)
    for i in range(n)
  ] + [1.0]
  specs = []
  for layer in range(n):
    if layer == 0 and config.reduce_boxes_in_lowest_layer:
      specs.append([(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)])
      continue
    boxes = [(scales[layer], ratio) for ratio in config.aspect_ratios]
    if config.interpolated_scale_aspect_ratio > 0:
      boxes.append(
        (
          math.sqrt(scales[layer] * scales[layer + 1]),
          config.interpolated_scale_aspect_ratio,
        )
      )
    specs.append(boxes)
  return specs


def num_boxes_per_location(config: AnchorConfig = AnchorConfig()) -> list[int]:
  return [len(boxes) for boxes in layer_box_specs(config)]


def generate_anchors(
  feature_map_sizes: Sequence[tuple[int, int]],
  config: AnchorConfig = AnchorConfig(),
) -> np.ndarray:
  """Anchors [A, 4] (ymin, xmin, ymax, xmax), ordered layer, row, column, box
  (the order the prediction heads' outputs are flattened in).

  On a H x W feature map the centres are ((i + 0.5) / H, (j + 0.5) / W); a box
  of scale s and aspect ratio r (width / height) is s·sqrt(r) wide and
  s / sqrt(r) high (square input; the reference's base anchor size 1).
  """
  all_anchors = []
  for (height, width), boxes in zip(feature_map_sizes, layer_box_specs(config)):
    cy, cx = np.meshgrid(
      (np.arange(height) + 0.5) / height,
      (np.arange(width) + 0.5) / width,
      indexing='ij',
    )
    scales = np.array([s for s, _ in boxes])
    ratios = np.array([r for _, r in boxes])
    box_h = scales / np.sqrt(ratios)
    box_w = scales * np.sqrt(ratios)
    centers = np.stack([cy, cx], -1)[:, :, None, :]  # [H, W, 1, 2]
    half = np.stack([box_h, box_w], -1)[None, None] / 2  # [1, 1, B, 2]
    anchors = np.concatenate([centers - half, centers + half], -1)
    all_anchors.append(anchors.reshape(-1, 4))
  return np.concatenate(all_anchors).astype(np.float32)


# -------------------------------------------------------------- box coding

# Faster R-CNN box coder scales of the reference config: y, x, h, w.
BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)


def _center_size(boxes: Array) -> tuple[Array, Array, Array, Array]:
  ymin, xmin, ymax, xmax = jnp.moveaxis(boxes, -1, 0)
  return (ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin


def encode_boxes(
  boxes: Array, anchors: Array, scales: Sequence[float] = BOX_CODER_SCALES
) -> Array:
  """[ty, tx, th, tw] of `boxes` relative to `anchors` (same shape [..., 4])."""
  eps = 1e-8
  ycenter, xcenter, height, width = _center_size(boxes)
  ycenter_a, xcenter_a, height_a, width_a = _center_size(anchors)
  height_a, width_a = height_a + eps, width_a + eps
  height, width = height + eps, width + eps
  return jnp.stack(
    [
      (ycenter - ycenter_a) / height_a * scales[0],
      (xcenter - xcenter_a) / width_a * scales[1],
      jnp.log(height / height_a) * scales[2],
      jnp.log(width / width_a) * scales[3],
    ],
    axis=-1,
  )


def decode_boxes(
  codes: Array, anchors: Array, scales: Sequence[float] = BOX_CODER_SCALES
) -> Array:
  """Inverse of `encode_boxes`."""
  ycenter_a, xcenter_a, height_a, width_a = _center_size(anchors)
  ty, tx, th, tw = jnp.moveaxis(codes, -1, 0)
  height = jnp.exp(th / scales[2]) * height_a
  width = jnp.exp(tw / scales[3]) * width_a
  ycenter = ty / scales[0] * height_a + ycenter_a
  xcenter = tx / scales[1] * width_a + xcenter_a
  return jnp.stack(
    [
      ycenter - height / 2,
      xcenter - width / 2,
      ycenter + height / 2,
      xcenter + width / 2,
    ],
    axis=-1,
  )


def iou(boxes_a: Array, boxes_b: Array) -> Array:
  """Pairwise IoU [N, M] of [N, 4] and [M, 4]; 0 where a union is empty."""
  ymin = jnp.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
  xmin = jnp.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
  ymax = jnp.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
  xmax = jnp.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
  intersection = jnp.maximum(ymax - ymin, 0) * jnp.maximum(xmax - xmin, 0)

  def area(b):
    return jnp.maximum(b[:, 2] - b[:, 0], 0) * jnp.maximum(b[:, 3] - b[:, 1], 0)

  union = area(boxes_a)[:, None] + area(boxes_b)[None, :] - intersection
  return jnp.where(union > 0, intersection / jnp.maximum(union, 1e-12), 0.0)


# ----------------------------------------------------------------- matching


def match_anchors(
  anchors: Array,
  gt_boxes: Array,
  gt_valid: Array,
  gt_crowd: Array,
  threshold: float = 0.5,
) -> tuple[Array, Array, Array]:
  """Argmax matching with every ground-truth box force-matched (reference
  `ArgMaxMatcher(0.5, 0.5, force_match_for_each_row=True)`).

  Args:
    anchors: [A, 4].
    gt_boxes: [G, 4], padded.
    gt_valid: [G] bool, False for padding.
    gt_crowd: [G] bool, COCO 'iscrowd' boxes: never matched; anchors whose
      best overlap is a crowd box at IoU >= threshold are ignored (no loss),
      as COCO's evaluation ignores detections on crowd regions.
    threshold: IoU for a positive match.

  Returns:
    match: [A] int32 index of the matched box (undefined where not positive).
    positive: [A] bool.
    ignore: [A] bool (crowd regions); negatives are ~positive & ~ignore.
  """
  overlaps = iou(gt_boxes, anchors)  # [G, A]
  usable = gt_valid & ~gt_crowd
  overlaps_usable = jnp.where(usable[:, None], overlaps, -1.0)
  match = jnp.argmax(overlaps_usable, axis=0)
  best = jnp.max(overlaps_usable, axis=0)
  positive = best >= threshold
  # Force-match: each usable box takes its best anchor (later boxes win ties,
  # as the reference's scatter does).
  best_anchor = jnp.argmax(overlaps_usable, axis=1)  # [G]
  num_anchors = anchors.shape[0]
  gt_index = jnp.arange(gt_boxes.shape[0])
  forced_owner = (
    jnp.full((num_anchors,), -1, jnp.int32)
    .at[jnp.where(usable, best_anchor, num_anchors)]
    .max(gt_index.astype(jnp.int32), mode='drop')
  )
  forced = forced_owner >= 0
  match = jnp.where(forced, forced_owner, match).astype(jnp.int32)
  positive = positive | forced
  crowd_overlap = jnp.max(
    jnp.where((gt_valid & gt_crowd)[:, None], overlaps, 0.0), axis=0
  )
  ignore = ~positive & (crowd_overlap >= threshold)
  return match, positive, ignore


# ---------------------------------------------------------------------- NMS


def non_max_suppression(
  boxes: Array, scores: Array, iou_threshold: float, max_outputs: int
) -> tuple[Array, Array]:
  """Greedy NMS of one class with static shapes.

  Args:
    boxes: [K, 4]; scores: [K] (-inf or below any threshold for unused rows).

  Returns:
    indices [max_outputs] into boxes (sorted by score) and a valid mask.
  """
  order = jnp.argsort(-scores)
  boxes, scores = boxes[order], scores[order]
  overlaps = iou(boxes, boxes)
  count = boxes.shape[0]

  def body(i, keep):
    # Box i survives if no kept, higher-scoring box overlaps it too much.
    suppressed = jnp.any(
      keep & (overlaps[i] > iou_threshold) & (jnp.arange(count) < i)
    )
    return keep.at[i].set(~suppressed & jnp.isfinite(scores[i]))

  keep = jax.lax.fori_loop(0, count, body, jnp.zeros((count,), bool))
  # Kept boxes first, in score order.
  rank = jnp.where(keep, jnp.arange(count), count + jnp.arange(count))
  selected = jnp.argsort(rank)[:max_outputs]
  return order[selected], keep[selected]


def batched_multiclass_nms(
  boxes: Array,
  scores: Array,
  *,
  score_threshold: float,
  iou_threshold: float,
  max_per_class: int,
  max_detections: int,
) -> dict[str, Array]:
  """Per-class NMS then the `max_detections` best over all classes.

  Args:
    boxes: [A, 4] decoded boxes; scores: [A, C] per-class probabilities
      (background excluded).

  Returns:
    {'boxes': [D, 4], 'scores': [D], 'classes': [D] int32 (0-based foreground
    class), 'valid': [D] bool}.
  """
  num_classes = scores.shape[1]
  candidates = min(max_per_class, boxes.shape[0])

  def per_class(class_scores):
    top_scores, top_index = jax.lax.top_k(class_scores, candidates)
    top_scores = jnp.where(top_scores >= score_threshold, top_scores, -jnp.inf)
    kept, valid = non_max_suppression(
      boxes[top_index], top_scores, iou_threshold, candidates
    )
    return top_index[kept], jnp.where(valid, top_scores[kept], -jnp.inf)

  index, class_scores = jax.vmap(per_class, in_axes=1)(scores)  # [C, K]
  classes = jnp.broadcast_to(jnp.arange(num_classes)[:, None], index.shape)
  flat_scores = class_scores.reshape(-1)
  best_scores, best = jax.lax.top_k(
    flat_scores, min(max_detections, flat_scores.shape[0])
  )
  return {
    'boxes': boxes[index.reshape(-1)[best]],
    'scores': jnp.where(jnp.isfinite(best_scores), best_scores, 0.0),
    'classes': classes.reshape(-1)[best].astype(jnp.int32),
    'valid': jnp.isfinite(best_scores),
  }
