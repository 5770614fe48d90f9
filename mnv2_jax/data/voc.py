"""PASCAL VOC 2012 segmentation for Mobile DeepLabv3 (paper §6.3, Table 7):
the tf.data pipelines of the dataset data/voc_builder.py prepares.

The pipelines follow DeepLab's: training rescales by a random factor in
[min_scale_factor, max_scale_factor] (drawn continuously; DeepLab draws it
in steps of 0.25) (bilinear image, nearest label), pads to the crop (image
with the mean grey, label 255), takes a random crop of `image_size` and flips
left-right with probability 1/2; evaluation pads the whole image to
`image_size` (513 holds every VOC image) and never resamples it, so every
labelled pixel is scored once. Images in [-1, 1].
"""

from __future__ import annotations

from typing import Iterator
from typing import Optional

import numpy as np
import tensorflow as tf

from mnv2_jax.data import batch_format
from mnv2_jax.data import registry
from mnv2_jax.data import tfds_reading
from mnv2_jax.data import voc_builder

NAME = 'voc2012'  # config.dataset.name
CLASS_NAMES = (
  'background',
  'aeroplane',
  'bicycle',
  'bird',
  'boat',
  'bottle',
  'bus',
  'car',
  'cat',
  'chair',
  'cow',
  'diningtable',
  'dog',
  'horse',
  'motorbike',
  'person',
  'pottedplant',
  'sheep',
  'sofa',
  'train',
  'tvmonitor',
)
_AUGMENT_TAG = 11


def builder(dataset_config) -> voc_builder.Voc2012Segmentation:
  """Our VOC builder in config.dataset's data_dir."""
  return voc_builder.Voc2012Segmentation(data_dir=dataset_config.data_dir)


def dataset_info(
  dataset_config, options: registry.InputOptions
) -> batch_format.DatasetInfo:
  del options  # the classes are the dataset's
  info = builder(dataset_config).info
  return batch_format.DatasetInfo(
    len(CLASS_NAMES),
    info.splits[dataset_config.train_split].num_examples,
    info.splits[dataset_config.eval_split].num_examples,
    dataset_config.eval_split,
    category_names=CLASS_NAMES,
  )


def check_data_available(dataset_config) -> None:
  """Raises a clear error if the prepared dataset cannot be read."""
  voc = builder(dataset_config)
  splits = (dataset_config.train_split, dataset_config.eval_split)
  if voc.is_prepared():
    missing = [s for s in splits if s not in voc.info.splits]
    if missing:
      raise ValueError(
        f'The prepared VOC 2012 dataset in {voc.data_dir} has the splits '
        f'{sorted(voc.info.splits)}, not {missing}. train_aug needs SBD '
        '(benchmark_RELEASE) in the manual directory when the dataset is '
        'built: delete that directory and rebuild with SBD, or set '
        'config.dataset.train_split=train.'
      )
  tfds_reading.check_prepared(
    dataset_config,
    voc,
    'Prepare it once with\n'
    '  python -m mnv2_jax.voc --manual_dir <dir holding VOCdevkit> '
    '--data_dir <data_dir>\n',
  )


def _decode(example) -> tuple[tf.Tensor, tf.Tensor]:
  image = tf.io.decode_image(
    example['image'], channels=3, expand_animations=False
  )
  # Both kept encoded by the reader (tfds_reading.read): a file that does not
  # decode fails here, in the preprocessing, and that example is skipped.
  label = tf.io.decode_png(example['segmentation'], channels=1)  # uint8
  return tf.cast(image, tf.float32), label


def _pad_to(image, label, height, width):
  """Pads bottom/right to at least height x width: image with the mean grey
  (0 after scaling to [-1, 1]), label with 255."""
  pad_h = tf.maximum(height - tf.shape(image)[0], 0)
  pad_w = tf.maximum(width - tf.shape(image)[1], 0)
  image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=127.5)
  label = tf.pad(
    label,
    [[0, pad_h], [0, pad_w], [0, 0]],
    constant_values=batch_format.IGNORE_LABEL,
  )
  return image, label


def preprocess_for_train(
  example, seed, image_size: int, min_scale: float, max_scale: float, flip: bool
):
  image, label = _decode(example)
  seeds = tf.random.experimental.stateless_split(seed, 4)
  scale = tf.random.stateless_uniform([], seeds[0], min_scale, max_scale)
  size = tf.cast(
    tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32
  )
  image = tf.image.resize(image, size, 'bilinear')
  label = tf.image.resize(label, size, 'nearest')
  image, label = _pad_to(image, label, image_size, image_size)
  both = tf.concat([image, tf.cast(label, tf.float32)], -1)
  both = tf.image.stateless_random_crop(
    both, [image_size, image_size, 4], seeds[1]
  )
  if flip:
    both = tf.image.stateless_random_flip_left_right(both, seeds[2])
  return {
    'image': batch_format.scale_pixels(both[..., :3]),
    'label': tf.cast(both[..., 3], tf.int32),
  }


def preprocess_for_eval(example, image_size: int):
  """The whole image, padded to image_size (513 holds every VOC image, the
  largest are 500 px), so every labelled pixel is scored at its own
  resolution. A larger image stops the evaluation with an error naming
  config.image_size rather than being resampled."""
  image, label = _decode(example)
  check = tf.debugging.assert_less_equal(
    tf.reduce_max(tf.shape(image)[:2]),
    image_size,
    message=f'an evaluation image is larger than config.image_size='
    f'{image_size}: evaluation pads whole images; set '
    'config.image_size to at least the largest side (VOC: 500; '
    'DeepLab uses 513)',
  )
  with tf.control_dependencies([check]):
    image = tf.identity(image)
  image, label = _pad_to(image, label, image_size, image_size)
  image = tf.ensure_shape(image, [image_size, image_size, 3])
  return {
    'image': batch_format.scale_pixels(image),
    'label': tf.cast(
      tf.ensure_shape(label, [image_size, image_size, 1])[..., 0], tf.int32
    ),
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
  return tfds_reading.train_batches(
    dataset_config,
    builder(dataset_config),
    seed=options.seed,
    start_step=start_step,
    per_host_batch_size=per_host_batch_size,
    augment_tag=_AUGMENT_TAG,
    preprocess=lambda example, seed: preprocess_for_train(
      example,
      seed,
      options.image_size,
      options.min_scale_factor,
      options.max_scale_factor,
      options.flip,
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
  size = options.image_size
  padding = {
    'image': tf.zeros([size, size, 3]),
    'label': tf.fill([size, size], batch_format.IGNORE_LABEL),
    'mask': tf.constant(False),
  }
  return tfds_reading.eval_batches(
    dataset_config,
    builder(dataset_config),
    split=split or dataset_config.eval_split,
    per_host_batch_size=per_host_batch_size,
    padding=padding,
    preprocess=lambda e: preprocess_for_eval(e, size),
  )
