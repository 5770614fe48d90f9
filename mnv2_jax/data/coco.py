"""TFDS `coco/2017` for SSDLite (paper §6.2; the TF Object Detection API's
reference pipeline, docs/paper.md).

Training: SSD random crop (a window covering at least a random fraction
{0, 0.1, 0.3, 0.5, 0.7, 0.9} of some object, area 0.1-1, aspect 0.5-2; the
whole image with probability 0.15), boxes whose centre leaves the window
dropped and the rest clipped; random left-right flip; bilinear resize to
`image_size`; inputs in [-1, 1]. Crowd boxes are removed from the training
ground truth (as the reference does) and boxes of zero area after clipping
are dropped. Ground truth is padded to `config.detection.max_boxes`.

Bad input does not stop a run: an image that does not decode is skipped
(tfds_reading.skip_undecodable; the next image takes its place), a box
reaching outside the image is clipped to it and a box of zero area removed
(`repair_boxes`); each is counted in the train metrics (batch_format.REPAIR_COUNTS).

Evaluation: the whole image resized, every box kept with its `is_crowd` flag
and the image's id and size, so that pycocotools scores it against the
annotations as COCO does. TFDS labels are contiguous (0-79); `CATEGORY_IDS`
maps them back to COCO's category ids (1-90 with gaps).

Batches follow data/scene_batches.py's keys: 'image', 'boxes', 'labels', 'valid',
'crowd' (+ 'image_id', 'height', 'width', 'mask' for evaluation).
"""

from __future__ import annotations

from typing import Iterator
from typing import Optional

import numpy as np
import tensorflow as tf

from mnv2_jax.data import batch_format
from mnv2_jax.data import registry
from mnv2_jax.data import tfds_reading

# COCO's category id of each contiguous TFDS label (the 80 used categories).
CATEGORY_IDS = (
  1,
  2,
  3,
  4,
  5,
  6,
  7,
  8,
  9,
  10,
  11,
  13,
  14,
  15,
  16,
  17,
  18,
  19,
  20,
  21,
  22,
  23,
  24,
  25,
  27,
  28,
  31,
  32,
  33,
  34,
  35,
  36,
  37,
  38,
  39,
  40,
  41,
  42,
  43,
  44,
  46,
  47,
  48,
  49,
  50,
  51,
  52,
  53,
  54,
  55,
  56,
  57,
  58,
  59,
  60,
  61,
  62,
  63,
  64,
  65,
  67,
  70,
  72,
  73,
  74,
  75,
  76,
  77,
  78,
  79,
  80,
  81,
  82,
  84,
  85,
  86,
  87,
  88,
  89,
  90,
)
MIN_OBJECT_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
CROP_AREA_RANGE = (0.1, 1.0)
CROP_ASPECT_RATIO_RANGE = (0.5, 2.0)
KEEP_WHOLE_IMAGE_PROBABILITY = 0.15
_AUGMENT_TAG = 7


def dataset_info(
  dataset_config, options: registry.InputOptions
) -> batch_format.DatasetInfo:
  del options  # the classes are the dataset's
  builder = tfds_reading.builder(dataset_config)
  names = tuple(builder.info.features['objects']['label'].names)
  return batch_format.DatasetInfo(
    len(names),
    tfds_reading.num_examples(dataset_config, dataset_config.train_split),
    tfds_reading.num_examples(dataset_config, dataset_config.eval_split),
    dataset_config.eval_split,
    category_ids=CATEGORY_IDS[: len(names)],
    category_names=names,
  )


def check_data_available(dataset_config) -> None:
  """Raises a clear error if the prepared coco/2017 cannot be read."""
  tfds_reading.check_prepared(
    dataset_config,
    tfds_reading.builder(dataset_config),
    'On a machine with network access prepare it with\n'
    '  tfds build coco/2017 --data_dir <data_dir>\n',
  )


def _pad(tensor: tf.Tensor, count: int) -> tf.Tensor:
  tensor = tensor[:count]
  padding = [[0, count - tf.shape(tensor)[0]]] + [[0, 0]] * (
    len(tensor.shape) - 1
  )
  return tf.pad(tensor, padding)


def _ground_truth(boxes, labels, crowd, max_boxes: int) -> dict:
  count = tf.minimum(tf.shape(labels)[0], max_boxes)
  return {
    'boxes': tf.ensure_shape(_pad(boxes, max_boxes), [max_boxes, 4]),
    'labels': tf.ensure_shape(_pad(labels, max_boxes), [max_boxes]),
    'valid': tf.range(max_boxes) < count,
    'crowd': tf.ensure_shape(_pad(crowd, max_boxes), [max_boxes]),
  }


def _random_crop(image, boxes, labels, seed):
  """SSD's random crop; returns the window's image and its boxes/labels."""
  seeds = tf.random.experimental.stateless_split(
    seed, num=3, alg=tfds_reading.RNG_ALG
  )
  choice = tf.random.stateless_uniform(
    [], seeds[0], 0, len(MIN_OBJECT_COVERED), dtype=tf.int32
  )
  covered = tf.gather(MIN_OBJECT_COVERED, choice)
  begin, size, window = tf.image.stateless_sample_distorted_bounding_box(
    tf.shape(image),
    bounding_boxes=boxes[None],
    seed=seeds[1],
    min_object_covered=covered,
    aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
    area_range=CROP_AREA_RANGE,
    max_attempts=100,
    use_image_if_no_bounding_boxes=True,
  )
  keep_whole = tf.random.stateless_uniform([], seeds[2]) < (
    KEEP_WHOLE_IMAGE_PROBABILITY
  )
  window = tf.where(keep_whole, tf.constant([0.0, 0.0, 1.0, 1.0]), window[0, 0])
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  top_left = tf.cast(tf.round(window[:2] * shape), tf.int32)
  crop_size = tf.maximum(
    tf.cast(tf.round((window[2:] - window[:2]) * shape), tf.int32), 1
  )
  del begin, size
  image = tf.image.crop_to_bounding_box(
    image, top_left[0], top_left[1], crop_size[0], crop_size[1]
  )
  # Boxes in the window's coordinates; keep those whose centre is inside.
  extent = tf.concat([window[2:] - window[:2]] * 2, 0)
  moved = (boxes - tf.concat([window[:2]] * 2, 0)) / extent
  center = (moved[:, :2] + moved[:, 2:]) / 2
  inside = tf.reduce_all((center > 0) & (center < 1), axis=1)
  moved = tf.clip_by_value(tf.boolean_mask(moved, inside), 0.0, 1.0)
  return image, moved, tf.boolean_mask(labels, inside)


def preprocess_for_train(example, seed, image_size: int, max_boxes: int):
  image = tf.io.decode_image(
    example['image'], channels=3, expand_animations=False
  )
  objects = example['objects']
  keep = ~objects['is_crowd']
  boxes, labels, repairs = repair_boxes(
    tf.boolean_mask(objects['bbox'], keep),
    tf.cast(tf.boolean_mask(objects['label'], keep), tf.int32),
  )
  crop_seed, flip_seed = tf.unstack(
    tf.random.experimental.stateless_split(
      seed, num=2, alg=tfds_reading.RNG_ALG
    )
  )
  image, boxes, labels = _random_crop(image, boxes, labels, crop_seed)
  flip = tf.random.stateless_uniform([], flip_seed) < 0.5
  image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
  boxes = tf.cond(
    flip,
    lambda: tf.stack(
      [boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], 1
    ),
    lambda: boxes,
  )
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  boxes, labels = (
    tf.boolean_mask(boxes, area > 0),
    tf.boolean_mask(labels, area > 0),
  )
  image = batch_format.scale_pixels(
    tf.image.resize(image, [image_size, image_size], method='bilinear')
  )
  image.set_shape([image_size, image_size, 3])
  crowd = tf.zeros_like(labels, tf.bool)
  return {
    'image': image,
    **_ground_truth(boxes, labels, crowd, max_boxes),
    **repairs,
  }


def repair_boxes(boxes: tf.Tensor, labels: tf.Tensor):
  """Bad annotation boxes as the reference pipeline treats them: a box
  reaching outside the image is clipped to it (TF OD API's clip to the
  window); a box of zero area (before or after clipping) is removed. Returns
  the boxes, their labels, and the counts for batch_format.REPAIR_COUNTS."""
  clipped = tf.clip_by_value(boxes, 0.0, 1.0)
  outside = tf.reduce_any(tf.not_equal(clipped, boxes), axis=1)
  area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
  kept = area > 0
  return (
    tf.boolean_mask(clipped, kept),
    tf.boolean_mask(labels, kept),
    {
      'clipped_boxes': tf.reduce_sum(tf.cast(outside & kept, tf.int32)),
      'dropped_boxes': tf.reduce_sum(tf.cast(~kept, tf.int32)),
    },
  )


def preprocess_for_eval(example, image_size: int, max_boxes: int):
  image = tf.io.decode_image(
    example['image'], channels=3, expand_animations=False
  )
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  image = batch_format.scale_pixels(
    tf.image.resize(image, [image_size, image_size], method='bilinear')
  )
  image.set_shape([image_size, image_size, 3])
  objects = example['objects']
  return {
    'image': image,
    **_ground_truth(
      objects['bbox'],
      tf.cast(objects['label'], tf.int32),
      objects['is_crowd'],
      max_boxes,
    ),
    'image_id': tf.cast(example['image/id'], tf.int32),
    'height': height,
    'width': width,
    'mask': tf.constant(True),
  }


def train_batches(
  dataset_config,
  options: registry.InputOptions,
  *,
  start_step: int,
  per_host_batch_size: int,
) -> Iterator[dict[str, np.ndarray]]:
  """This host's training batches forever; a pure function of (seed, step)."""
  image_size, max_boxes = options.image_size, options.max_boxes
  return tfds_reading.train_batches(
    dataset_config,
    tfds_reading.builder(dataset_config),
    seed=options.seed,
    start_step=start_step,
    per_host_batch_size=per_host_batch_size,
    augment_tag=_AUGMENT_TAG,
    preprocess=lambda example, seed: preprocess_for_train(
      example, seed, image_size, max_boxes
    ),
  )


def eval_batches(
  dataset_config,
  options: registry.InputOptions,
  *,
  per_host_batch_size: int,
  split: Optional[str] = None,
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this host's shard of `split` (default the configured
  evaluation split), padded (`mask`)."""
  image_size, max_boxes = options.image_size, options.max_boxes
  padding = {
    'image': tf.zeros([image_size, image_size, 3]),
    'boxes': tf.zeros([max_boxes, 4]),
    'labels': tf.zeros([max_boxes], tf.int32),
    'valid': tf.zeros([max_boxes], tf.bool),
    'crowd': tf.zeros([max_boxes], tf.bool),
    'image_id': tf.constant(0),
    'height': tf.constant(1),
    'width': tf.constant(1),
    'mask': tf.constant(False),
  }
  return tfds_reading.eval_batches(
    dataset_config,
    tfds_reading.builder(dataset_config),
    split=split or dataset_config.eval_split,
    per_host_batch_size=per_host_batch_size,
    padding=padding,
    preprocess=lambda e: preprocess_for_eval(e, image_size, max_boxes),
  )
