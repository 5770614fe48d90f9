"""Reading and batching TFDS datasets, shared by ImageNet (and CIFAR-10,
Imagenette), COCO and VOC.

Training streams are deterministic and exactly resumable. They are organised
by epoch: epoch `e` reads the files and fills the shuffle buffer with seeds
derived from `(seed, e)`, and example `i` of that epoch's stream on
this host is augmented with a stateless seed derived from
`(seed, e, dataset tag, host, i)`. Resuming at `start_step` therefore
rebuilds epoch `start_step // steps_per_epoch` and skips the consumed records
*before* the expensive decode/augment map.

Bad input does not stop a run. Every image stays encoded until the
preprocessing decodes it (`skip_image_decoding`), and an example whose image
does not decode (truncated, garbled) is dropped there, with TensorFlow's
error in the log (`skip_undecodable`). In training (`epoch_batches`) the next
example of the stream takes its place (each epoch holds a remainder of
spares), so batches stay full and no valid example is lost; the count goes
into the train metrics as `skipped_examples` (batch_format.REPAIR_COUNTS). After
such a skip, a resumed run's epoch is shifted by the number skipped before the
resume point (the records are skipped undecoded). Evaluation scores the other
examples once each and warns with the count.

Every host reads its own shard of each split (`host_split`). Evaluation pads
every host's shard to the same number of full batches, the padding masked
out, so all hosts run the same number of steps and every example counts once.

TensorFlow is used only on the CPU; accelerators are hidden from it so that it
never grabs GPU/TPU memory JAX needs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Optional

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax.data import batch_format

Batch = batch_format.Batch

# Fixed so that the file interleave order does not depend on the machine.
_INTERLEAVE_CYCLE_LENGTH = 16
_INTERLEAVE_BLOCK_LENGTH = 16

# Stateless RNG algorithm pinned so seeds mean the same thing on every device.
RNG_ALG = 'philox'

_accelerators_hidden = False


def hide_accelerators_from_tf() -> None:
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


hide_accelerators_from_tf()


def skip_undecodable(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Drops each example whose preprocessing raised: an image or mask that
  does not decode (truncated, garbled, not an image). TensorFlow logs the
  error of each. TFDS validates images when it prepares a dataset, so this
  only triggers on files damaged since; one of them must not end a long run."""
  return ds.ignore_errors(log_warning=True)


def epoch_batches(
  ds: tf.data.Dataset,
  preprocess,
  *,
  steps_per_epoch: int,
  skip_steps: int,
  per_host_batch_size: int,
) -> Iterator[Batch]:
  """One epoch's batches, from its (shuffled) stream of raw records: the
  records enumerated (the position seeds the augmentation), the consumed
  ones skipped before decoding (resume), the undecodable ones dropped, and
  the epoch cut at `steps_per_epoch` batches. A dropped example's place is
  taken by the next one: the records beyond steps_per_epoch * batch (the
  split's remainder) are the spares, so no valid example is lost.

  `preprocess(index, example)` must return the example's 'index'; the gaps
  in it count the dropped examples, and each batch carries batch_format.SKIPPED_EXAMPLES
  (the number dropped since the previous batch) instead."""
  ds = ds.enumerate().skip(skip_steps * per_host_batch_size)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = skip_undecodable(ds)
  ds = ds.batch(per_host_batch_size, drop_remainder=True)
  ds = ds.take(steps_per_epoch - skip_steps)
  ds = ds.with_options(deterministic_options())
  expected = skip_steps * per_host_batch_size
  for batch in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
    index = batch.pop('index')
    skipped = int(index[-1]) - expected + 1 - len(index)
    expected = int(index[-1]) + 1
    if skipped:
      logging.warning(
        'Skipped %d training example(s) whose image could not be decoded '
        '(positions %d-%d of this epoch on this host); the batch was '
        'filled with the next ones.',
        skipped,
        index[0],
        index[-1],
      )
    batch[batch_format.SKIPPED_EXAMPLES] = np.int64(skipped)
    yield batch


def eval_with_padding(
  ds: tf.data.Dataset,
  padding: dict,
  *,
  num_batches: int,
  per_host_batch_size: int,
  host_examples: int,
) -> Iterator[Batch]:
  """Preprocessed eval examples, the undecodable ones dropped, padded with
  `padding` (mask False) to exactly `num_batches` batches, so every host runs
  the same number of steps whatever it skipped. Warns with the count."""
  ds = skip_undecodable(ds)
  ds = ds.concatenate(
    tf.data.Dataset.from_tensors(padding).repeat(
      num_batches * per_host_batch_size
    )
  )
  ds = ds.batch(per_host_batch_size, drop_remainder=True).take(num_batches)
  evaluated = 0
  for batch in (
    ds.with_options(deterministic_options())
    .prefetch(tf.data.AUTOTUNE)
    .as_numpy_iterator()
  ):
    evaluated += int(batch['mask'].sum())
    yield batch
  if evaluated < host_examples:
    logging.warning(
      '%d of the %d evaluation images on this host could not be decoded '
      'and were skipped; the metrics are over the other %d.',
      host_examples - evaluated,
      host_examples,
      evaluated,
    )


def builder(dataset_config) -> tfds.core.DatasetBuilder:
  """The TFDS builder of config.dataset (its `name` and `data_dir`); never
  downloads or prepares anything."""
  return tfds.builder(dataset_config.name, data_dir=dataset_config.data_dir)


def cardinality(ds: tf.data.Dataset) -> int:
  """Returns the (known, finite) number of elements of ``ds``."""
  n = int(ds.cardinality())
  if n < 0:
    raise ValueError(f'Dataset cardinality is unknown ({n}).')
  return n


def read(
  dataset: tfds.core.DatasetBuilder,
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
  return dataset.as_dataset(
    split=split,
    shuffle_files=shuffle_files,
    decoders=skip_image_decoding(dataset),
    read_config=read_config,
  )


def skip_image_decoding(dataset: tfds.core.DatasetBuilder) -> dict:
  """Every image feature (the image; VOC's mask) stays encoded: the
  preprocessing decodes it, where a file that does not decode is skipped
  (`skip_undecodable`) rather than failing inside TFDS's reader."""
  features = dataset.info.features
  return {
    name: tfds.decode.SkipDecoding()
    for name in ('image', 'segmentation')
    if name in features
  }


def host_split(split: str, *, drop_remainder: bool) -> tfds.typing.SplitArg:
  """Returns this host's (JAX process's) shard of ``split``."""
  return tfds.even_splits(
    split, n=jax.process_count(), drop_remainder=drop_remainder
  )[jax.process_index()]


def deterministic_options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def derive_seed(*parts: int) -> int:
  """Hashes non-negative integers into a 32-bit seed (stable across runs)."""
  entropy = [int(p) % 2**64 for p in parts]
  return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def num_examples(
  dataset_config,
  split: str,
  dataset: Optional[tfds.core.DatasetBuilder] = None,
) -> int:
  """Number of examples in ``split`` of the whole dataset (all hosts).

  Read from the prepared dataset's metadata. When the builder has no split
  metadata (e.g. under ``tfds.testing.mock_data``), it is counted from the
  dataset cardinality instead.

  Args:
    dataset_config: config.dataset (its ``name`` and ``data_dir``).
    split: TFDS split name, e.g. ``'train'`` or ``'validation'``.

  Returns:
    The number of examples.
  """
  dataset = builder(dataset_config) if dataset is None else dataset
  if dataset.info.splits:
    return dataset.info.splits[split].num_examples
  return cardinality(read(dataset, split))


def train_batches(
  dataset_config,
  dataset: tfds.core.DatasetBuilder,
  *,
  seed: int,
  start_step: int,
  per_host_batch_size: int,
  preprocess,
  augment_tag: int,
  file_tag: int = 1,
  buffer_tag: int = 2,
) -> Iterator[Batch]:
  """This host's training batches of a TFDS dataset, forever, from
  `start_step`: a pure function of (seed, step, host), so a resumed run sees
  the batches of an uninterrupted one. `dataset_config` (config.dataset)
  gives the split and the shuffle buffer.

  `preprocess(example, seed)` maps one example to its training features;
  `seed` is a stateless-RNG key derived from (seed, epoch, augment_tag, host,
  position in the epoch). The tags keep each dataset's seeds of file order,
  shuffle buffer and augmentation apart (and as they always were).

  Raises:
    ValueError: this host's shard holds fewer than one batch.
  """
  hide_accelerators_from_tf()
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  split = host_split(dataset_config.train_split, drop_remainder=True)
  host_examples = cardinality(read(dataset, split))
  steps_per_epoch = host_examples // per_host_batch_size
  if steps_per_epoch == 0:
    raise ValueError(
      f'This host has {host_examples} training examples, '
      f'fewer than one batch of {per_host_batch_size}.'
    )
  epoch, skip = divmod(start_step, steps_per_epoch)
  while True:
    key = tf.constant(
      [derive_seed(seed, epoch, augment_tag), jax.process_index()],
      tf.int64,
    )

    def with_seed(index, example, key=key):
      # The seed depends only on (seed, epoch, host, position in this
      # epoch's stream): a resumed stream repeats the augmentations exactly.
      return {
        **preprocess(
          example,
          tf.random.experimental.stateless_fold_in(key, index, alg=RNG_ALG),
        ),
        'index': index,
      }

    ds = read(
      dataset,
      split,
      shuffle_files=True,
      file_shuffle_seed=derive_seed(seed, epoch, file_tag),
    )
    ds = ds.shuffle(
      dataset_config.shuffle_buffer_size,
      seed=derive_seed(seed, epoch, buffer_tag),
      reshuffle_each_iteration=False,
    )
    # Skips raw records (cheap) rather than decoded images when resuming.
    yield from epoch_batches(
      ds,
      with_seed,
      steps_per_epoch=steps_per_epoch,
      skip_steps=skip,
      per_host_batch_size=per_host_batch_size,
    )
    epoch, skip = epoch + 1, 0


def eval_batches(
  dataset_config,
  dataset: tfds.core.DatasetBuilder,
  *,
  split: str,
  per_host_batch_size: int,
  preprocess,
  padding: dict,
) -> Iterator[Batch]:
  """One pass over this host's shard of `split`, `preprocess(example)`
  applied, padded with copies of `padding` (whose 'mask' is False) to whole
  batches, `ceil(ceil(N / hosts) / B)` of them on every host."""
  hide_accelerators_from_tf()
  total = num_examples(dataset_config, split, dataset)
  num_batches = math.ceil(
    -(-total // jax.process_count()) / per_host_batch_size
  )
  ds = read(dataset, host_split(split, drop_remainder=False))
  host_examples = cardinality(ds)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  yield from eval_with_padding(
    ds,
    padding,
    num_batches=num_batches,
    per_host_batch_size=per_host_batch_size,
    host_examples=host_examples,
  )


def check_prepared(
  dataset_config,
  dataset: tfds.core.DatasetBuilder,
  how_to_prepare: str,
) -> None:
  """Raises ValueError naming the dataset, where it was looked for and
  `how_to_prepare` (the commands) if its train or eval split cannot be read.
  Never downloads."""
  splits = (dataset_config.train_split, dataset_config.eval_split)
  try:
    for split in splits:
      read(dataset, split)
  except (AssertionError, KeyError, ValueError, tf.errors.OpError) as error:
    raise ValueError(
      f'Prepared TFDS dataset {dataset_config.name!r} (splits {splits}) '
      'was not found: config.dataset.data_dir='
      f'{dataset_config.data_dir!r} (looked in {dataset.data_dir}). Runs '
      f'never download. {how_to_prepare} Then point '
      'config.dataset.data_dir at that data_dir. (Original error: '
      f'{type(error).__name__}: {error})'
    ) from error
