"""ImageNet (TFDS `imagenet2012`) and the other TFDS classification sets
(CIFAR-10, Imagenette): the released MobileNetV2 preprocessing.

Preprocessing follows the released recipe (paper §6.1; TF-slim's
`inception_preprocessing`): inputs in [-1, 1];

* train: Inception-style random-area crop (area in [0.05, 1], aspect ratio in
  [3/4, 4/3]), bilinear resize to `image_size`, random left-right flip;
* eval: central crop of 87.5% of the image, bilinear resize to `image_size`.

`config.preprocessing='torchvision'` evaluates as the PyTorch releases expect
(resize to 256, crop 224, ImageNet mean/std), and 'cifar' pads by 4, crops
32x32 at random and flips (the whole image for evaluation). Reading, the
deterministic resumable order, bad-image handling and host sharding are
data/tfds_reading.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from typing import Optional

import tensorflow as tf

from mnv2_jax.data import batch_format
from mnv2_jax.data import registry
from mnv2_jax.data import tfds_reading

# Tags that keep the seeds derived for different purposes independent (the
# values this pipeline has always used).
_FILE_SHUFFLE_TAG = 0
_BUFFER_SHUFFLE_TAG = 1
_AUGMENT_TAG = 2

# Random-area crop of the released recipe: TF-slim inception_preprocessing's
# distorted_bounding_box_crop defaults. (Slim also applies a fast colour
# distortion, brightness and saturation, which this pipeline does not.)
_CROP_AREA_RANGE = (0.05, 1.0)
_CROP_ASPECT_RATIO_RANGE = (0.75, 1.33)
_CROP_MIN_OBJECT_COVERED = 0.1
_CROP_MAX_ATTEMPTS = 100

IMAGENET_MANUAL_STEPS = (
  'ImageNet cannot be downloaded automatically: download '
  'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
  'https://image-net.org/download-images into a manual dir and run\n'
  '  tfds build imagenet2012 --data_dir <data_dir> --manual_dir '
  '<manual_dir>\n'
)


CropWindowFn = Callable[[tf.Tensor], tf.Tensor]


def decode_and_crop(
  image_bytes: tf.Tensor, crop_window_fn: CropWindowFn
) -> tf.Tensor:
  """Decodes the window ``crop_window_fn(image_shape)`` of an encoded image.

  For JPEG input (all of TFDS ``imagenet2012``) only the header is parsed to get
  the shape and only the crop window is decoded, which is much cheaper than
  decoding the full image. Other formats fall back to a full decode + slice.

  Args:
    image_bytes: Scalar string tensor with the encoded image.
    crop_window_fn: Maps the int32 ``[height, width, channels]`` shape to an
      int32 ``[offset_y, offset_x, crop_height, crop_width]`` window.

  Returns:
    uint8 tensor ``[crop_height, crop_width, 3]``.
  """

  def decode_jpeg_window() -> tf.Tensor:
    shape = tf.io.extract_jpeg_shape(image_bytes)
    return tf.image.decode_and_crop_jpeg(
      image_bytes, crop_window_fn(shape), channels=3
    )

  def decode_other_window() -> tf.Tensor:
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    offset_y, offset_x, height, width = tf.unstack(
      crop_window_fn(tf.shape(image))
    )
    return image[offset_y : offset_y + height, offset_x : offset_x + width, :]

  return tf.cond(
    tf.io.is_jpeg(image_bytes), decode_jpeg_window, decode_other_window
  )


PREPROCESSING = batch_format.PREPROCESSING
TORCHVISION_MEAN = batch_format.TORCHVISION_MEAN
TORCHVISION_STD = batch_format.TORCHVISION_STD


def normalize(image: tf.Tensor, preprocessing: str = 'inception') -> tf.Tensor:
  """Maps pixels in [0, 255] to the network's input range.

  'inception' (TF-slim and Keras releases, the paper's recipe) and 'cifar':
  [-1, 1]. 'torchvision' (PyTorch releases): [0, 1], then per-channel
  mean/std.
  """
  image = tf.cast(image, tf.float32)
  if preprocessing in ('inception', 'cifar'):
    return batch_format.scale_pixels(image)
  if preprocessing == 'torchvision':
    return (image / 255.0 - TORCHVISION_MEAN) / TORCHVISION_STD
  raise ValueError(
    f'preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}.'
  )


def _resize_and_scale(
  image: tf.Tensor, image_size: int, preprocessing: str = 'inception'
) -> tf.Tensor:
  """Bilinearly resizes to ``image_size`` and normalises (`normalize`)."""
  image = tf.image.resize(
    image, [image_size, image_size], method='bilinear', antialias=False
  )
  image = normalize(image, preprocessing)
  image.set_shape([image_size, image_size, 3])
  return image


def _pad_crop_and_flip(
  image_bytes: tf.Tensor, seed: tf.Tensor, image_size: int
) -> tf.Tensor:
  """CIFAR's standard augmentation: the image (resized to `image_size` if it
  is not that size already) zero-padded by image_size / 8 on each side (4
  pixels at 32), a random `image_size` crop of that and a random flip. Returns
  float pixels in [0, 255]."""
  crop_seed, flip_seed = tf.unstack(
    tf.random.experimental.stateless_split(
      seed, num=2, alg=tfds_reading.RNG_ALG
    )
  )
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  image = tf.image.resize(image, [image_size, image_size], method='bilinear')
  pad = image_size // 8
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(
    image, [image_size, image_size, 3], seed=crop_seed
  )
  return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _training_image(
  pixels: tf.Tensor, image_size: int, preprocessing: str, image_dtype: str
) -> tf.Tensor:
  """Float pixels in [0, 255] as the training batch carries them: normalised
  ('float32') or rounded to integers for the device to normalise ('uint8',
  see batch_format.TRAIN_IMAGE_DTYPES)."""
  if image_dtype == 'uint8':
    image = tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)
  elif image_dtype == 'float32':
    image = normalize(pixels, preprocessing)
  else:
    raise ValueError(
      f'image_dtype must be one of {batch_format.TRAIN_IMAGE_DTYPES}, got '
      f'{image_dtype!r}.'
    )
  image.set_shape([image_size, image_size, 3])
  return image


def random_crop_window(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The Inception-style random crop of an image of int32 ``shape`` ([height,
  width, channels]), as ``[offset_y, offset_x, crop_height, crop_width]``:
  area in [0.05, 1] of the image, aspect ratio in [0.75, 1.33], up to 100
  attempts, else the whole image. Sampled from the shape alone, before
  anything is decoded."""
  # The whole image is the only "object", so the crop is sampled over it.
  whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    bounding_boxes=whole_image,
    seed=seed,
    min_object_covered=_CROP_MIN_OBJECT_COVERED,
    aspect_ratio_range=_CROP_ASPECT_RATIO_RANGE,
    area_range=_CROP_AREA_RANGE,
    max_attempts=_CROP_MAX_ATTEMPTS,
    use_image_if_no_bounding_boxes=True,
  )
  # If no window satisfies the constraints the op returns the whole image.
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def preprocess_for_train(
  image_bytes: tf.Tensor,
  seed: tf.Tensor,
  image_size: int,
  preprocessing: str = 'inception',
  image_dtype: str = 'float32',
) -> tf.Tensor:
  """Inception-style training preprocessing of one encoded image.

  Random-area crop (area in [0.05, 1] of the image, aspect ratio in
  [0.75, 1.33], up to 100 attempts, falling back to the whole image), bilinear
  resize to
  ``image_size`` and random left-right flip. All randomness is stateless, so the
  output is a pure function of ``(image_bytes, seed)``.

  Args:
    image_bytes: Scalar string tensor with the encoded (JPEG) image.
    seed: int32/int64 tensor of shape ``[2]``; the stateless RNG seed.
    image_size: Output height and width.
    preprocessing: input normalisation, see `normalize`.
    image_dtype: 'float32' (normalised) or 'uint8' (pixels, normalised later
      by `batch_format.pixels_to_input`).

  Returns:
    ``[image_size, image_size, 3]``: float32 (in [-1, 1] for 'inception'), or
    uint8 pixels.
  """
  if preprocessing == 'cifar':
    pixels = _pad_crop_and_flip(image_bytes, seed, image_size)
    return _training_image(pixels, image_size, preprocessing, image_dtype)
  crop_seed, flip_seed = tf.unstack(
    tf.random.experimental.stateless_split(
      seed, num=2, alg=tfds_reading.RNG_ALG
    )
  )

  image = decode_and_crop(
    image_bytes, lambda shape: random_crop_window(shape, crop_seed)
  )
  image = tf.image.resize(
    image, [image_size, image_size], method='bilinear', antialias=False
  )
  # The flip is exact and commutes with the per-pixel normalisation.
  pixels = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return _training_image(pixels, image_size, preprocessing, image_dtype)


def preprocess_for_eval(
  image_bytes: tf.Tensor,
  image_size: int,
  crop_fraction: float = 0.875,
  preprocessing: str = 'inception',
) -> tf.Tensor:
  """Evaluation preprocessing of one encoded image, as each release expects.

  'inception' (TF-slim, Keras): central crop keeping `crop_fraction` of each
  side, bilinear resize to `image_size`, [-1, 1]. The crop window follows
  slim's ``central_crop(image, 0.875)`` (as ``tf.image.central_crop``): offset
  ``floor((size - size * fraction) / 2)`` on each side.

  'torchvision': resize the shorter side to ``round(image_size /
  crop_fraction)`` (256 for 224) with antialiased bilinear interpolation (PIL's
  filter, torchvision's default), central crop of `image_size` (offset
  ``round((size - image_size) / 2)``), ImageNet mean/std normalisation.

  Args:
    image_bytes: Scalar string tensor with the encoded (JPEG/PNG) image.
    image_size: Output height and width.
    crop_fraction: Fraction of each side kept by the central crop, in (0, 1].
    preprocessing: 'inception' or 'torchvision'.

  Returns:
    float32 tensor ``[image_size, image_size, 3]``.
  """
  if not 0.0 < crop_fraction <= 1.0:
    raise ValueError(f'crop_fraction must be in (0, 1], got {crop_fraction}.')
  if preprocessing == 'cifar':  # the whole image, no crop
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return _resize_and_scale(image, image_size, preprocessing)
  if preprocessing == 'torchvision':
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    resize_to = int(round(image_size / crop_fraction))
    shape = tf.cast(tf.shape(image)[:2], tf.float64)
    scale = resize_to / tf.reduce_min(shape)
    # torchvision: the shorter side becomes resize_to, the longer int(l * s).
    new_shape = tf.maximum(tf.cast(shape * scale, tf.int32), resize_to)
    image = tf.image.resize(
      tf.cast(image, tf.float32), new_shape, method='bilinear', antialias=True
    )
    offset = tf.cast(
      tf.round(tf.cast(new_shape - image_size, tf.float32) / 2.0), tf.int32
    )
    image = image[
      offset[0] : offset[0] + image_size, offset[1] : offset[1] + image_size
    ]
    image = normalize(tf.clip_by_value(image, 0.0, 255.0), preprocessing)
    image.set_shape([image_size, image_size, 3])
    return image

  def central_crop_window(shape: tf.Tensor) -> tf.Tensor:
    size = tf.cast(shape[:2], tf.float64)
    offset = tf.cast((size - size * crop_fraction) / 2.0, tf.int32)
    crop_size = shape[:2] - 2 * offset
    return tf.concat([offset, crop_size], axis=0)

  image = decode_and_crop(image_bytes, central_crop_window)
  return _resize_and_scale(image, image_size, preprocessing)


def num_examples(dataset_config, split: str) -> int:
  """Examples in `split` of config.dataset's prepared dataset."""
  return tfds_reading.num_examples(dataset_config, split)


def dataset_info(
  dataset_config, options: registry.InputOptions
) -> batch_format.DatasetInfo:
  return batch_format.DatasetInfo(
    options.num_classes,
    num_examples(dataset_config, dataset_config.train_split),
    num_examples(dataset_config, dataset_config.eval_split),
    dataset_config.eval_split,
  )


def check_data_available(dataset_config) -> None:
  """Raises a clear error, with the commands that prepare it, when the
  dataset cannot be read. Never downloads."""
  if dataset_config.name == 'imagenet2012':
    how = IMAGENET_MANUAL_STEPS
  else:  # TFDS downloads the others itself
    how = (
      'On a machine with network access prepare it with\n'
      f'  tfds build {dataset_config.name} --data_dir <data_dir>\n'
    )
  tfds_reading.check_prepared(
    dataset_config, tfds_reading.builder(dataset_config), how
  )


def train_batches(
  dataset_config,
  options: registry.InputOptions,
  *,
  start_step: int,
  per_host_batch_size: int,
) -> Iterator[batch_format.Batch]:
  """This host's training batches forever, from `start_step`: a
  deterministic function of `options.seed`, the step and the host.

  Yields:
    {'image': float32 [B, S, S, 3] in [-1, 1] (uint8 pixels with
     config.dataset.train_image_dtype='uint8'), 'label': int32 [B],
     'skipped_examples': int64}.
  """
  image_size, preprocessing = options.image_size, options.preprocessing
  image_dtype = dataset_config.get('train_image_dtype', 'float32')

  def preprocess(example, seed):
    return {
      'image': preprocess_for_train(
        example['image'],
        seed,
        image_size,
        preprocessing,
        image_dtype=image_dtype,
      ),
      'label': tf.cast(example['label'], tf.int32),
    }

  return tfds_reading.train_batches(
    dataset_config,
    tfds_reading.builder(dataset_config),
    seed=options.seed,
    start_step=start_step,
    per_host_batch_size=per_host_batch_size,
    preprocess=preprocess,
    augment_tag=_AUGMENT_TAG,
    file_tag=_FILE_SHUFFLE_TAG,
    buffer_tag=_BUFFER_SHUFFLE_TAG,
  )


def eval_batches(
  dataset_config,
  options: registry.InputOptions,
  *,
  per_host_batch_size: int,
  split: Optional[str] = None,
) -> Iterator[batch_format.Batch]:
  """One pass over this host's shard of `split` (default the configured
  evaluation split), padded with zero images (mask False) to the same number
  of full batches on every host.

  Yields:
    {'image': float32 [B, S, S, 3], 'label': int32 [B], 'mask': bool [B]}.
  """
  image_size = options.image_size
  crop_fraction = options.eval_crop_fraction
  preprocessing = options.preprocessing

  def preprocess(example):
    return {
      'image': preprocess_for_eval(
        example['image'], image_size, crop_fraction, preprocessing
      ),
      'label': tf.cast(example['label'], tf.int32),
      'mask': tf.constant(True),
    }

  padding = {
    'image': tf.zeros([image_size, image_size, 3], tf.float32),
    'label': tf.constant(0, tf.int32),
    'mask': tf.constant(False),
  }
  return tfds_reading.eval_batches(
    dataset_config,
    tfds_reading.builder(dataset_config),
    split=split or dataset_config.eval_split,
    per_host_batch_size=per_host_batch_size,
    preprocess=preprocess,
    padding=padding,
  )
