"""Image files read for a trained model, as its config's evaluation
preprocessing says: what `python -m mnv2_jax.predict` feeds the network, and
the names of its classes."""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# The 1000 ImageNet class names in TFDS label order, shipped with TFDS.
from tensorflow_datasets.datasets.siscore import labels as imagenet_labels

from mnv2_jax.data import batch_format
from mnv2_jax.data import image_classification
from mnv2_jax.data import voc


def class_names(config) -> list[str]:
  """Names of the model's logits (detection: of its foreground classes)."""
  if config.dataset.name in ('digits', 'cluttered_digits', 'scenes'):
    return [f'digit {d}' for d in range(config.num_classes)]
  names = list(imagenet_labels.IMAGENET_LABELS_LIST)
  if config.background_class:
    names = ['background'] + names
  if len(names) != config.num_classes:
    return [f'class {i}' for i in range(config.num_classes)]
  return names


def detection_names(config) -> list[str]:
  """Names of a detector's foreground classes."""
  if config.dataset.name == 'coco/2017':
    try:
      return list(
        tfds.builder('coco/2017').info.features['objects']['label'].names
      )
    except Exception:
      pass  # no prepared COCO here: numbered classes
  return class_names(config)


def segmentation_names(config) -> list[str]:
  """Names of a segmenter's classes, the background first."""
  if config.dataset.name == voc.NAME:
    return list(voc.CLASS_NAMES)
  return ['background'] + class_names(config)[: config.num_classes - 1]


def _unreadable(path: str, error: Exception) -> ValueError:
  """A one-line error naming the file and TF's reason."""
  message = getattr(error, 'message', str(error)).strip().split('\n')[0]
  # TF prefixes the op's device and appends its name: keep the reason.
  message = re.sub(r'^\{\{.*?\}\}\s*|\s*\[Op:.*$', '', message)
  return ValueError(f'{path}: not a readable image ({message})')


def load_image(path: str, config) -> np.ndarray:
  """One preprocessed image [S, S, 3]; raises ValueError naming the file."""
  try:
    data = tf.io.read_file(path)
    if config.dataset.name == 'digits':
      image = tf.io.decode_image(data, channels=1, expand_animations=False)
      image = tf.image.resize(
        tf.cast(image, tf.float32), [config.image_size] * 2, method='bilinear'
      )
      image = batch_format.scale_pixels(image)
      return np.repeat(image.numpy(), 3, axis=-1)
    if config.dataset.name == 'cluttered_digits':  # whole image, no crop
      image = tf.io.decode_image(data, channels=3, expand_animations=False)
      image = tf.image.resize(
        tf.cast(image, tf.float32), [config.image_size] * 2, method='bilinear'
      )
      return batch_format.scale_pixels(image).numpy()
    return image_classification.preprocess_for_eval(
      data, config.image_size, config.eval_crop_fraction, config.preprocessing
    ).numpy()
  except (tf.errors.OpError, ValueError) as error:
    raise _unreadable(path, error) from error


def load_original_and_input(path: str, config) -> tuple[np.ndarray, np.ndarray]:
  """(the original RGB uint8 image, the network input [S, S, 3]: the whole
  image resized, in [-1, 1]) for a detector or a segmenter."""
  try:
    original = tf.io.decode_image(
      tf.io.read_file(path), channels=3, expand_animations=False
    )
  except (tf.errors.OpError, ValueError) as error:
    raise _unreadable(path, error) from error
  resized = tf.image.resize(
    original, [config.image_size] * 2, method='bilinear'
  )
  return original.numpy(), batch_format.scale_pixels(resized).numpy()
