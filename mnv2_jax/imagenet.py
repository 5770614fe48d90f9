"""ImageNet (TFDS ``imagenet2012``) input pipeline for MobileNetV2.

Preprocessing follows the released MobileNetV2 recipe: Inception preprocessing
(TF-slim ``inception_preprocessing``), central crop 87.5% for evaluation and
inputs in [-1, 1].

* Train: Inception-style random-area crop (area in [0.05, 1], aspect ratio in
  [3/4, 4/3]), bilinear resize to ``image_size``, random left-right flip.
* Eval: central crop of 87.5% of the image, bilinear resize to ``image_size``.

The same pipeline reads the other TFDS classification sets
(``input_pipeline.TFDS_CLASSIFICATION``: CIFAR-10, Imagenette), which differ
only in their names, splits and, for CIFAR-10, ``preprocessing='cifar'``
(pad by 4, random 32x32 crop, flip; the whole image for evaluation).

The training stream is deterministic and exactly resumable. It is organised by
epoch: epoch ``e`` reads the files and fills the shuffle buffer with seeds
derived from ``(config.seed, e)``, and example ``i`` of that epoch's stream on
this host is augmented with a stateless seed derived from
``(config.seed, e, host, i)``. Resuming at ``start_step`` therefore rebuilds
epoch ``start_step // steps_per_epoch`` and skips the already-consumed records
*before* the expensive decode/augment map.

Bad input does not stop a run. Every image stays encoded until the
preprocessing decodes it (`_skip_image_decoding`), and an example whose image
does not decode (truncated, garbled) is dropped there, with TensorFlow's
error in the log (`_skip_undecodable`). In training (`_epoch_batches`) the next example of the
stream takes its place (each epoch holds a remainder of spares), so batches
stay full and no valid example is lost; the count goes into the train metrics
as `skipped_examples` (input_pipeline.REPAIR_COUNTS). After such a skip, a
resumed run's epoch is shifted by the number skipped before the resume point
(the records are skipped undecoded). Evaluation scores the other examples
once each and warns with the count.

TensorFlow is used only on the CPU; accelerators are hidden from it so that it
never grabs GPU/TPU memory JAX needs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax import input_pipeline

Batch = dict[str, np.ndarray]

# Tags that keep the seeds derived for different purposes independent.
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

# Fixed so that the file interleave order does not depend on the machine.
_INTERLEAVE_CYCLE_LENGTH = 16
_INTERLEAVE_BLOCK_LENGTH = 16

# Stateless RNG algorithm pinned so seeds mean the same thing on every device.
_RNG_ALG = 'philox'


_accelerators_hidden = False

SKIPPED_EXAMPLES = input_pipeline.REPAIR_COUNTS[0]


def _skip_undecodable(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Drops each example whose preprocessing raised: an image or mask that
  does not decode (truncated, garbled, not an image). TensorFlow logs the
  error of each. TFDS validates images when it prepares a dataset, so this
  only triggers on files damaged since; one of them must not end a long run."""
  return ds.ignore_errors(log_warning=True)


def _epoch_batches(ds: tf.data.Dataset, preprocess, *, steps_per_epoch: int,
                   skip_steps: int, per_host_batch_size: int
                   ) -> Iterator[Batch]:
  """One epoch's batches, from its (shuffled) stream of raw records: the
  records enumerated (the position seeds the augmentation), the consumed
  ones skipped before decoding (resume), the undecodable ones dropped, and
  the epoch cut at `steps_per_epoch` batches. A dropped example's place is
  taken by the next one: the records beyond steps_per_epoch * batch (the
  split's remainder) are the spares, so no valid example is lost.

  `preprocess(index, example)` must return the example's 'index'; the gaps
  in it count the dropped examples, and each batch carries SKIPPED_EXAMPLES
  (the number dropped since the previous batch) instead."""
  ds = ds.enumerate().skip(skip_steps * per_host_batch_size)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = _skip_undecodable(ds)
  ds = ds.batch(per_host_batch_size, drop_remainder=True)
  ds = ds.take(steps_per_epoch - skip_steps)
  ds = ds.with_options(_deterministic_options())
  expected = skip_steps * per_host_batch_size
  for batch in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
    index = batch.pop('index')
    skipped = int(index[-1]) - expected + 1 - len(index)
    expected = int(index[-1]) + 1
    if skipped:
      logging.warning(
          'Skipped %d training example(s) whose image could not be decoded '
          '(positions %d-%d of this epoch on this host); the batch was '
          'filled with the next ones.', skipped, index[0], index[-1])
    batch[SKIPPED_EXAMPLES] = np.int64(skipped)
    yield batch


def _eval_with_padding(ds: tf.data.Dataset, padding: dict, *,
                       num_batches: int, per_host_batch_size: int,
                       host_examples: int) -> Iterator[Batch]:
  """Preprocessed eval examples, the undecodable ones dropped, padded with
  `padding` (mask False) to exactly `num_batches` batches, so every host runs
  the same number of steps whatever it skipped. Warns with the count."""
  ds = _skip_undecodable(ds)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(
      num_batches * per_host_batch_size))
  ds = ds.batch(per_host_batch_size, drop_remainder=True).take(num_batches)
  evaluated = 0
  for batch in ds.with_options(_deterministic_options()).prefetch(
      tf.data.AUTOTUNE).as_numpy_iterator():
    evaluated += int(batch['mask'].sum())
    yield batch
  if evaluated < host_examples:
    logging.warning(
        '%d of the %d evaluation images on this host could not be decoded '
        'and were skipped; the metrics are over the other %d.',
        host_examples - evaluated, host_examples, evaluated)


def _hide_accelerators_from_tf() -> None:
  """Makes TensorFlow CPU-only so that it never allocates accelerator memory.

  Safe to call any number of times. If the TF runtime was already initialised
  with accelerators visible, TF refuses the change; we log a warning rather than
  fail, since the pipeline itself only places ops on the CPU.
  """
  global _accelerators_hidden
  if _accelerators_hidden:
    return
  for device_type in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], device_type)
    except (RuntimeError, ValueError) as e:
      logging.warning(
          'Could not hide %s devices from TensorFlow: %s', device_type, e
      )
  _accelerators_hidden = True


_hide_accelerators_from_tf()


# ----------------------------------------------------------------------------
# Preprocessing.
# ----------------------------------------------------------------------------

CropWindowFn = Callable[[tf.Tensor], tf.Tensor]


def _decode_and_crop(image_bytes: tf.Tensor,
                     crop_window_fn: CropWindowFn) -> tf.Tensor:
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
    return image[offset_y:offset_y + height, offset_x:offset_x + width, :]

  return tf.cond(
      tf.io.is_jpeg(image_bytes), decode_jpeg_window, decode_other_window
  )


PREPROCESSING = ('inception', 'torchvision', 'cifar')
# torchvision's ImageNet normalisation (of pixels scaled to [0, 1]).
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def normalize(image: tf.Tensor, preprocessing: str = 'inception') -> tf.Tensor:
  """Maps pixels in [0, 255] to the network's input range.

  'inception' (TF-slim and Keras releases, the paper's recipe) and 'cifar':
  [-1, 1]. 'torchvision' (PyTorch releases): [0, 1], then per-channel
  mean/std.
  """
  image = tf.cast(image, tf.float32)
  if preprocessing in ('inception', 'cifar'):
    return image / 127.5 - 1.0
  if preprocessing == 'torchvision':
    return (image / 255.0 - TORCHVISION_MEAN) / TORCHVISION_STD
  raise ValueError(f'preprocessing must be one of {PREPROCESSING}, got '
                   f'{preprocessing!r}.')


def _resize_and_scale(image: tf.Tensor, image_size: int,
                      preprocessing: str = 'inception') -> tf.Tensor:
  """Bilinearly resizes to ``image_size`` and normalises (`normalize`)."""
  image = tf.image.resize(
      image, [image_size, image_size], method='bilinear', antialias=False
  )
  image = normalize(image, preprocessing)
  image.set_shape([image_size, image_size, 3])
  return image


def _pad_crop_and_flip(image_bytes: tf.Tensor, seed: tf.Tensor,
                       image_size: int) -> tf.Tensor:
  """CIFAR's standard augmentation: the image (resized to `image_size` if it
  is not that size already) zero-padded by image_size / 8 on each side (4
  pixels at 32), a random `image_size` crop of that and a random flip."""
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2, alg=_RNG_ALG))
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  image = tf.image.resize(image, [image_size, image_size], method='bilinear')
  pad = image_size // 8
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(
      image, [image_size, image_size, 3], seed=crop_seed)
  image = tf.image.stateless_random_flip_left_right(
      normalize(image, 'cifar'), seed=flip_seed)
  image.set_shape([image_size, image_size, 3])
  return image


def preprocess_for_train(
    image_bytes: tf.Tensor, seed: tf.Tensor, image_size: int,
    preprocessing: str = 'inception'
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

  Returns:
    float32 tensor ``[image_size, image_size, 3]`` (in [-1, 1] for
    'inception').
  """
  if preprocessing == 'cifar':
    return _pad_crop_and_flip(image_bytes, seed, image_size)
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2, alg=_RNG_ALG)
  )

  def random_crop_window(shape: tf.Tensor) -> tf.Tensor:
    # The whole image is the only "object", so the crop is sampled over it.
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=whole_image,
        seed=crop_seed,
        min_object_covered=_CROP_MIN_OBJECT_COVERED,
        aspect_ratio_range=_CROP_ASPECT_RATIO_RANGE,
        area_range=_CROP_AREA_RANGE,
        max_attempts=_CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    # If no window satisfies the constraints the op returns the whole image.
    return tf.stack([begin[0], begin[1], size[0], size[1]])

  image = _decode_and_crop(image_bytes, random_crop_window)
  image = _resize_and_scale(image, image_size, preprocessing)
  return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def preprocess_for_eval(
    image_bytes: tf.Tensor, image_size: int, crop_fraction: float = 0.875,
    preprocessing: str = 'inception'
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
    image = tf.io.decode_image(image_bytes, channels=3,
                               expand_animations=False)
    return _resize_and_scale(image, image_size, preprocessing)
  if preprocessing == 'torchvision':
    image = tf.io.decode_image(image_bytes, channels=3,
                               expand_animations=False)
    resize_to = int(round(image_size / crop_fraction))
    shape = tf.cast(tf.shape(image)[:2], tf.float64)
    scale = resize_to / tf.reduce_min(shape)
    # torchvision: the shorter side becomes resize_to, the longer int(l * s).
    new_shape = tf.maximum(tf.cast(shape * scale, tf.int32), resize_to)
    image = tf.image.resize(tf.cast(image, tf.float32), new_shape,
                            method='bilinear', antialias=True)
    offset = tf.cast(tf.round(
        tf.cast(new_shape - image_size, tf.float32) / 2.0), tf.int32)
    image = image[offset[0]:offset[0] + image_size,
                  offset[1]:offset[1] + image_size]
    image = normalize(tf.clip_by_value(image, 0.0, 255.0), preprocessing)
    image.set_shape([image_size, image_size, 3])
    return image

  def central_crop_window(shape: tf.Tensor) -> tf.Tensor:
    size = tf.cast(shape[:2], tf.float64)
    offset = tf.cast((size - size * crop_fraction) / 2.0, tf.int32)
    crop_size = shape[:2] - 2 * offset
    return tf.concat([offset, crop_size], axis=0)

  image = _decode_and_crop(image_bytes, central_crop_window)
  return _resize_and_scale(image, image_size, preprocessing)


# ----------------------------------------------------------------------------
# Dataset access.
# ----------------------------------------------------------------------------


def _builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Returns the TFDS builder; never downloads or prepares anything."""
  return tfds.builder(config.dataset.name, data_dir=config.dataset.data_dir)


def _cardinality(ds: tf.data.Dataset) -> int:
  """Returns the (known, finite) number of elements of ``ds``."""
  n = int(ds.cardinality())
  if n < 0:
    raise ValueError(f'Dataset cardinality is unknown ({n}).')
  return n


def _read(
    builder: tfds.core.DatasetBuilder,
    split: tfds.typing.SplitArg,
    *,
    shuffle_files: bool = False,
    file_shuffle_seed: int | None = None,
) -> tf.data.Dataset:
  """Reads ``split`` with undecoded (encoded JPEG) images."""
  read_config = tfds.ReadConfig(
      shuffle_seed=file_shuffle_seed,
      interleave_cycle_length=_INTERLEAVE_CYCLE_LENGTH,
      interleave_block_length=_INTERLEAVE_BLOCK_LENGTH,
      # Caching would defeat the point of skipping records on resume and could
      # hold the whole split in memory.
      try_autocache=False,
  )
  return builder.as_dataset(
      split=split,
      shuffle_files=shuffle_files,
      decoders=_skip_image_decoding(builder),
      read_config=read_config,
  )


def _skip_image_decoding(builder: tfds.core.DatasetBuilder) -> dict:
  """Every image feature (the image; VOC's mask) stays encoded: the
  preprocessing decodes it, where a file that does not decode is skipped
  (`_skip_undecodable`) rather than failing inside TFDS's reader."""
  features = builder.info.features
  return {name: tfds.decode.SkipDecoding() for name in ('image', 'segmentation')
          if name in features}


def _host_split(split: str, *, drop_remainder: bool) -> tfds.typing.SplitArg:
  """Returns this host's (JAX process's) shard of ``split``."""
  return tfds.even_splits(
      split, n=jax.process_count(), drop_remainder=drop_remainder
  )[jax.process_index()]


def _deterministic_options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def _derive_seed(*parts: int) -> int:
  """Hashes non-negative integers into a 32-bit seed (stable across runs)."""
  entropy = [int(p) % 2**64 for p in parts]
  return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """Number of examples in ``split`` of the whole dataset (all hosts).

  Read from the prepared dataset's metadata. When the builder has no split
  metadata (e.g. under ``tfds.testing.mock_data``), it is counted from the
  dataset cardinality instead.

  Args:
    config: Experiment config (``config.dataset.name``/``data_dir`` are used).
    split: TFDS split name, e.g. ``'train'`` or ``'validation'``.

  Returns:
    The number of examples.
  """
  builder = _builder(config)
  if builder.info.splits:
    return builder.info.splits[split].num_examples
  return _cardinality(_read(builder, split))


def check_data_available(config: ml_collections.ConfigDict) -> None:
  """Checks that the prepared ImageNet dataset can be read. Never downloads.

  Args:
    config: Experiment config (``config.dataset`` is used).

  Raises:
    ValueError: If the train or eval split cannot be read from
      ``config.dataset.data_dir``, with instructions to prepare it.
  """
  builder = _builder(config)
  splits = (config.dataset.train_split, config.dataset.eval_split)
  try:
    for split in splits:
      _read(builder, split)
  except (AssertionError, KeyError, ValueError, tf.errors.OpError) as e:
    data_dir = config.dataset.data_dir
    if config.dataset.name != 'imagenet2012':  # TFDS downloads these itself
      raise ValueError(
          f'Prepared TFDS dataset {config.dataset.name!r} (splits {splits}) '
          f'was not found: config.dataset.data_dir={data_dir!r} (looked in '
          f'{builder.data_dir}). Runs never download; on a machine with '
          'network access prepare it with\n'
          f'  tfds build {config.dataset.name} --data_dir '
          f'{data_dir or "<data_dir>"}\n'
          'then point config.dataset.data_dir at that data_dir. '
          f'(Original error: {type(e).__name__}: {e})') from e
    manual_dir = config.dataset.get('manual_dir') or '<manual_dir>'
    raise ValueError(
        f'Prepared TFDS dataset {config.dataset.name!r} (splits {splits}) was '
        f'not found: config.dataset.data_dir={data_dir!r} (looked in '
        f'{builder.data_dir}). ImageNet cannot be downloaded automatically. '
        'To prepare it, download ILSVRC2012_img_train.tar and '
        'ILSVRC2012_img_val.tar from https://image-net.org/download-images '
        f'into the manual dir ({manual_dir}) and run\n'
        f'  tfds build {config.dataset.name} --data_dir '
        f'{data_dir or "<data_dir>"} --manual_dir {manual_dir}\n'
        'then point config.dataset.data_dir at that data_dir. '
        f'(Original error: {type(e).__name__}: {e})'
    ) from e


# ----------------------------------------------------------------------------
# Batched pipelines.
# ----------------------------------------------------------------------------



def tfds_train_batches(config: ml_collections.ConfigDict,
                       builder: tfds.core.DatasetBuilder, *, start_step: int,
                       per_host_batch_size: int, augment_tag: int,
                       preprocess) -> Iterator[Batch]:
  """This host's training batches of any TFDS task dataset, forever (COCO,
  VOC); a pure function of (config.seed, step, host), so a resumed run sees
  the batches of an uninterrupted one.

  `preprocess(example, seed)` maps one example to its training features;
  `seed` is a stateless-RNG key derived from (seed, epoch, augment_tag,
  host, position in the epoch).
  """
  _hide_accelerators_from_tf()
  split = _host_split(config.dataset.train_split, drop_remainder=True)
  host_examples = _cardinality(_read(builder, split))
  steps_per_epoch = host_examples // per_host_batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'This host has {host_examples} training images, fewer '
                     f'than one batch of {per_host_batch_size}.')
  epoch, skip = divmod(start_step, steps_per_epoch)
  while True:
    key = tf.constant([_derive_seed(config.seed, epoch, augment_tag),
                       jax.process_index()], tf.int64)

    def with_seed(index, example, key=key):
      return {**preprocess(example, tf.random.experimental.stateless_fold_in(
          key, index, alg=_RNG_ALG)), 'index': index}

    ds = _read(builder, split, shuffle_files=True,
               file_shuffle_seed=_derive_seed(config.seed, epoch, 1))
    ds = ds.shuffle(config.dataset.shuffle_buffer_size,
                    seed=_derive_seed(config.seed, epoch, 2),
                    reshuffle_each_iteration=False)
    yield from _epoch_batches(
        ds, with_seed, steps_per_epoch=steps_per_epoch, skip_steps=skip,
        per_host_batch_size=per_host_batch_size)
    epoch, skip = epoch + 1, 0


def tfds_eval_batches(config: ml_collections.ConfigDict,
                      builder: tfds.core.DatasetBuilder, *,
                      per_host_batch_size: int, preprocess,
                      padding: dict) -> Iterator[Batch]:
  """One pass over this host's shard of the eval split of a TFDS task
  dataset, `preprocess(example)` applied, padded with copies of `padding`
  (whose 'mask' is False) to whole batches, the same count on every host."""
  _hide_accelerators_from_tf()
  split = config.dataset.eval_split
  total = (builder.info.splits[split].num_examples if builder.info.splits
           else _cardinality(_read(builder, split)))  # mock_data: no metadata
  num_batches = math.ceil(-(-total // jax.process_count())
                          / per_host_batch_size)
  ds = _read(builder, _host_split(config.dataset.eval_split,
                                  drop_remainder=False))
  host_examples = _cardinality(ds)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  yield from _eval_with_padding(
      ds, padding, num_batches=num_batches,
      per_host_batch_size=per_host_batch_size, host_examples=host_examples)


def _train_epoch(
    config: ml_collections.ConfigDict,
    builder: tfds.core.DatasetBuilder,
    split: tfds.typing.SplitArg,
    *,
    epoch: int,
    steps_per_epoch: int,
    skip_steps: int,
    per_host_batch_size: int,
) -> Iterator[Batch]:
  """One epoch of this host's training batches, minus the first skip_steps."""
  host = jax.process_index()
  file_seed = _derive_seed(config.seed, epoch, _FILE_SHUFFLE_TAG)
  buffer_seed = _derive_seed(config.seed, epoch, _BUFFER_SHUFFLE_TAG)
  augment_key = tf.constant(
      [_derive_seed(config.seed, epoch, _AUGMENT_TAG), host], dtype=tf.int64
  )
  image_size = config.image_size
  preprocessing = config.preprocessing

  def preprocess(index: tf.Tensor, example: dict[str, tf.Tensor]):
    # Seed depends only on (seed, epoch, host, position in this epoch's
    # stream), so a resumed stream reproduces the augmentations exactly.
    seed = tf.random.experimental.stateless_fold_in(
        augment_key, index, alg=_RNG_ALG
    )
    return {
        'image': preprocess_for_train(example['image'], seed, image_size,
                                      preprocessing),
        'label': tf.cast(example['label'], tf.int32),
        'index': index,
    }

  ds = _read(builder, split, shuffle_files=True, file_shuffle_seed=file_seed)
  ds = ds.shuffle(
      config.dataset.shuffle_buffer_size,
      seed=buffer_seed,
      reshuffle_each_iteration=False,
  )
  # Skips raw records (cheap) rather than decoded images when resuming.
  return _epoch_batches(
      ds, preprocess, steps_per_epoch=steps_per_epoch, skip_steps=skip_steps,
      per_host_batch_size=per_host_batch_size)


def train_batches(
    config: ml_collections.ConfigDict,
    *,
    start_step: int,
    per_host_batch_size: int,
) -> Iterator[Batch]:
  """Yields this host's training batches forever, starting at ``start_step``.

  The stream is a deterministic function of ``config.seed`` and the host index:
  ``train_batches(config, start_step=k, ...)`` yields exactly the batches that
  ``train_batches(config, start_step=0, ...)`` yields from its ``k``-th batch on.

  Args:
    config: Experiment config (``config.dataset``, ``image_size``, ``seed``).
    start_step: Global step to resume from (number of batches already seen).
    per_host_batch_size: Examples per batch on this host.

  Yields:
    ``{'image': float32 [B, S, S, 3] in [-1, 1], 'label': int32 [B]}``.

  Raises:
    ValueError: If this host's shard holds fewer than one batch.
  """
  _hide_accelerators_from_tf()
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  builder = _builder(config)
  split = _host_split(config.dataset.train_split, drop_remainder=True)
  host_examples = _cardinality(_read(builder, split))
  steps_per_epoch = host_examples // per_host_batch_size
  if steps_per_epoch == 0:
    raise ValueError(
        f'This host has {host_examples} training examples, fewer than one '
        f'batch of {per_host_batch_size}.'
    )
  epoch, skip_steps = divmod(start_step, steps_per_epoch)
  while True:
    ds = _train_epoch(
        config,
        builder,
        split,
        epoch=epoch,
        steps_per_epoch=steps_per_epoch,
        skip_steps=skip_steps,
        per_host_batch_size=per_host_batch_size,
    )
    yield from ds
    epoch, skip_steps = epoch + 1, 0


def eval_batches(
    config: ml_collections.ConfigDict, *, per_host_batch_size: int
) -> Iterator[Batch]:
  """Yields one pass over this host's shard of the eval split.

  The eval split is sharded without dropping examples, and the stream is padded
  with zero images (``mask=False``) to the same number of full batches on every
  host, ``ceil(ceil(N / hosts) / B)``, so that all hosts run the same number of
  eval steps and every example is counted exactly once.

  Args:
    config: Experiment config (``config.dataset``, ``image_size``,
      ``eval_crop_fraction``).
    per_host_batch_size: Examples per batch on this host.

  Yields:
    ``{'image': float32 [B, S, S, 3], 'label': int32 [B], 'mask': bool [B]}``.
  """
  _hide_accelerators_from_tf()
  builder = _builder(config)
  eval_split = config.dataset.eval_split
  total = num_examples(config, eval_split)
  max_host_examples = -(-total // jax.process_count())
  num_batches = math.ceil(max_host_examples / per_host_batch_size)

  ds = _read(builder, _host_split(eval_split, drop_remainder=False))
  host_examples = _cardinality(ds)
  num_padding = num_batches * per_host_batch_size - host_examples
  if num_padding < 0:  # Would make `repeat` infinite; cannot happen with TFDS.
    raise ValueError(
        f'This host has {host_examples} eval examples, more than the expected '
        f'maximum of {max_host_examples} per host.'
    )
  image_size = config.image_size
  crop_fraction = config.eval_crop_fraction
  preprocessing = config.preprocessing

  def preprocess(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
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
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  yield from _eval_with_padding(
      ds, padding, num_batches=num_batches,
      per_host_batch_size=per_host_batch_size, host_examples=host_examples)
