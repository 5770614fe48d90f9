"""SSDLite on MobileNetV2 (paper §6.2, Tables 5-6): model, loss, post-processing.

SSDLite is SSD with every regular convolution of the prediction layers
replaced by a depthwise 3x3 + 1x1 pair (paper §6.2). Feature maps (PAPER.md
§6): the expansion output of layer 15 (output stride 16), the last layer
(stride 32), and four extra layers of 512, 256, 256 and 128 channels, each a
1x1 conv to half width and a stride-2 depthwise-separable 3x3. The loss is
the reference configuration's: sigmoid classification + smooth-L1 box loss
(1:1), hard-negative mining 3:1, normalised by the number of matches.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnv2_jax import box_ops
from mnv2_jax import initializers
from mnv2_jax import layers
from mnv2_jax import model as model_lib

Array = jax.Array

EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
MIN_DEPTH = 16  # the reference config's min_depth
FIRST_FEATURE = 'layer_15/expansion_output'  # stride 16
SECOND_FEATURE = 'layer_19'  # stride 32


class SSDLite(nn.Module):
  """MobileNetV2 + SSDLite.

  Attributes:
    num_classes: foreground classes; the heads predict num_classes + 1 logits
      per anchor (index 0 = background).
    width_multiplier: α of the backbone; also scales the extra layers (never
      below MIN_DEPTH channels).
    boxes_per_location: anchors per location on each of the six maps.
    backbone: keyword arguments for `model.MobileNetV2` (padding, BN, dtype).
  """
  num_classes: int = 80
  width_multiplier: float = 1.0
  boxes_per_location: Sequence[int] = (3, 6, 6, 6, 6, 6)
  batch_norm_momentum: float = 0.997
  batch_norm_epsilon: float = 1e-3
  padding: str = 'same'
  dtype: str = 'float32'
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, images: Array, train: bool = False
               ) -> tuple[Array, Array, dict[str, Array]]:
    """Returns box encodings [N, A, 4], class logits [N, A, C + 1], endpoints."""
    dtype = model_lib.DTYPES[self.dtype]
    backbone = model_lib.MobileNetV2(
        num_classes=0, width_multiplier=self.width_multiplier,
        batch_norm_momentum=self.batch_norm_momentum,
        batch_norm_epsilon=self.batch_norm_epsilon, padding=self.padding,
        dtype=self.dtype, implementation=self.implementation,
        name='backbone')
    _, endpoints = backbone(images, train=train)
    norm, conv, depthwise = layers.module_factories(
        train=train, momentum=self.batch_norm_momentum,
        epsilon=self.batch_norm_epsilon, padding=self.padding, dtype=dtype,
        implementation=self.implementation)

    features = [endpoints[FIRST_FEATURE], endpoints[SECOND_FEATURE]]
    x = features[-1]
    for i, depth in enumerate(EXTRA_LAYER_DEPTHS):
      depth = max(int(depth * self.width_multiplier), MIN_DEPTH)
      name = f'extra_{i + 1}'
      x = layers.ConvBN(functools.partial(conv, depth // 2), norm, nn.relu6,
                        name=f'{name}_reduce')(x)
      x = layers.ConvBN(functools.partial(depthwise, strides=2), norm,
                        nn.relu6, name=f'{name}_depthwise')(x)
      x = layers.ConvBN(functools.partial(conv, depth), norm, nn.relu6,
                        name=f'{name}_project')(x)
      features.append(x)

    box_encodings, class_logits = [], []
    for i, (feature, boxes) in enumerate(zip(features,
                                             self.boxes_per_location)):
      endpoints[f'feature_map_{i}'] = feature
      for kind, width, outputs in (('box', 4, box_encodings),
                                   ('class', self.num_classes + 1,
                                    class_logits)):
        # SSDLite predictor: depthwise 3x3 + BN + ReLU6, then 1x1 with bias.
        y = layers.ConvBN(depthwise, norm, nn.relu6,
                          name=f'head_{i}_{kind}_depthwise')(feature)
        y = nn.Conv(boxes * width, (1, 1), dtype=jnp.float32,
                    kernel_init=initializers.LECUN_NORMAL,
                    bias_init=initializers.ZEROS,
                    name=f'head_{i}_{kind}_predictor')(y.astype(jnp.float32))
        outputs.append(y.reshape(y.shape[0], -1, width))
    return (jnp.concatenate(box_encodings, 1),
            jnp.concatenate(class_logits, 1), endpoints)


def feature_map_sizes(model: SSDLite, image_size: int) -> list[tuple[int, int]]:
  """Spatial sizes of the six feature maps, from shapes alone."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  endpoints = jax.eval_shape(model.apply, variables, images)[2]
  return [tuple(endpoints[f'feature_map_{i}'].shape[1:3])
          for i in range(len(model.boxes_per_location))]


def anchors_for(model: SSDLite, image_size: int,
                config: box_ops.AnchorConfig = box_ops.AnchorConfig()
                ) -> np.ndarray:
  if list(model.boxes_per_location) != box_ops.num_boxes_per_location(config):
    raise ValueError(
        f'boxes_per_location {model.boxes_per_location} does not match the '
        f'anchor generator ({box_ops.num_boxes_per_location(config)}).')
  return box_ops.generate_anchors(feature_map_sizes(model, image_size), config)


# --------------------------------------------------------------------- loss


def ssd_targets(anchors: Array, gt_boxes: Array, gt_labels: Array,
                gt_valid: Array, gt_crowd: Array):
  """Per-anchor targets of one image: class (0 = background), box codes,
  positive and ignore masks."""
  match, positive, ignore = box_ops.match_anchors(anchors, gt_boxes, gt_valid,
                                                  gt_crowd)
  classes = jnp.where(positive, gt_labels[match] + 1, 0)
  codes = box_ops.encode_boxes(gt_boxes[match], anchors)
  return classes, codes, positive, ignore


def ssd_loss(box_encodings: Array, class_logits: Array, anchors: Array,
             batch: dict[str, Array], *, negatives_per_positive: int = 3,
             min_negatives_per_image: int = 3) -> tuple[Array, dict[str, Array]]:
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
      ssd_targets, in_axes=(None, 0, 0, 0, 0))(
          anchors, batch['boxes'], batch['labels'], batch['valid'],
          batch['crowd'])
  num_logits = class_logits.shape[-1]
  targets = jax.nn.one_hot(classes, num_logits)
  class_loss = jnp.sum(optax.sigmoid_binary_cross_entropy(
      class_logits.astype(jnp.float32), targets), axis=-1)  # [N, A]
  box_loss = jnp.sum(optax.huber_loss(box_encodings.astype(jnp.float32),
                                      codes, delta=1.0), axis=-1)
  negative = ~positive & ~ignore
  num_positive = jnp.sum(positive, axis=1)  # [N]
  num_negative = jnp.minimum(
      jnp.maximum(negatives_per_positive * num_positive,
                  min_negatives_per_image), jnp.sum(negative, axis=1))
  negative_loss = jnp.where(negative, class_loss, -jnp.inf)
  rank = jnp.argsort(jnp.argsort(-negative_loss, axis=1), axis=1)
  hard_negative = negative & (rank < num_negative[:, None])
  normalizer = jnp.maximum(jnp.sum(num_positive), 1).astype(jnp.float32)
  classification = jnp.sum(
      jnp.where(positive | hard_negative, class_loss, 0.0)) / normalizer
  localization = jnp.sum(jnp.where(positive, box_loss, 0.0)) / normalizer
  return classification + localization, {
      'classification_loss': classification,
      'localization_loss': localization,
      'num_positive_per_image': jnp.mean(num_positive.astype(jnp.float32))}


# ---------------------------------------------------------- post-processing


def postprocess(box_encodings: Array, class_logits: Array, anchors: Array, *,
                score_threshold: float = 0.01, iou_threshold: float = 0.6,
                max_per_class: int = 100, max_detections: int = 100
                ) -> dict[str, Array]:
  """Detections per image (batched): sigmoid scores, per-class NMS at IoU
  0.6, the best `max_detections`; boxes normalised [ymin, xmin, ymax, xmax]
  clipped to the image (`to_image_coordinates` scales them to pixels)."""
  def one_image(codes, logits):
    boxes = jnp.clip(box_ops.decode_boxes(codes, anchors), 0.0, 1.0)
    scores = jax.nn.sigmoid(logits[:, 1:].astype(jnp.float32))
    return box_ops.batched_multiclass_nms(
        boxes, scores, score_threshold=score_threshold,
        iou_threshold=iou_threshold, max_per_class=max_per_class,
        max_detections=max_detections)
  return jax.vmap(one_image)(box_encodings, class_logits)


def to_image_coordinates(boxes: Array, height: Array, width: Array) -> Array:
  """Normalised [ymin, xmin, ymax, xmax] -> pixels of an image of that size."""
  scale = jnp.stack([height, width, height, width], -1).astype(boxes.dtype)
  return boxes * scale[..., None, :] if boxes.ndim == 3 else boxes * scale
