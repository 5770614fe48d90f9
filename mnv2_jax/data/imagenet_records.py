"""Writing `imagenet2012`-format TFDS datasets, and the one-time preparation
that re-encodes ImageNet smaller for a faster input pipeline.

`resize` reads a `tfds build imagenet2012` (or any dataset in its format) and
writes the same splits, labels and file names with every image whose shorter
side exceeds `shorter_side` downscaled to it (antialiased bilinear, aspect kept)
and re-encoded at `quality`; smaller images keep their original bytes. JPEG
decoding costs in proportion to the pixels and the coded bytes, so the input
pipeline decodes a 500x375 ImageNet image's 256-pixel version at about half
the cost (benchmarks/input_pipeline.py measures it). The pipeline reads the
result unchanged (`--config.dataset.data_dir=<output>`); training crops and
evaluation's central crop are fractions of the image, so their geometry is the
same, at a lower source resolution.

The trade-off is known from FFCV and big_vision's low-resolution ImageNet
variants: training crops of a small area are upsampled from fewer source pixels,
and accuracy can move. Its size for MobileNetV2 has not been measured here (no
ImageNet run); evaluate on the validation split prepared the same way, which
`resize` writes beside the train split, and compare with the original once.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable

import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax.data import tfds_reading

_EXAMPLES_PER_SHARD = 256


def version_dir(data_dir: str) -> pathlib.Path:
  """Where `tfds.builder('imagenet2012', data_dir)` looks for its files."""
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  return pathlib.Path(data_dir) / 'imagenet2012' / str(builder.version)


def write_split(
  data_dir: str,
  split: str,
  examples,
) -> dict:
  """Writes `examples` (an iterable of {'image': encoded bytes, 'label': int,
  'file_name': str}) as the TFRecord shards of `split` in the layout of
  `tfds build`. Call `write_metadata` once every split is written.

  Returns {'examples': count, 'bytes': total encoded image bytes}.
  """
  features = tfds.builder('imagenet2012', data_dir=data_dir).info.features
  directory = version_dir(data_dir)
  directory.mkdir(parents=True, exist_ok=True)
  shards: list[list[bytes]] = [[]]
  total_bytes = 0
  for example in examples:
    if len(shards[-1]) == _EXAMPLES_PER_SHARD:
      shards.append([])
    total_bytes += len(example['image'])
    shards[-1].append(features.serialize_example(example))
  for i, records in enumerate(shards):
    name = f'imagenet2012-{split}.tfrecord-{i:05d}-of-{len(shards):05d}'
    with tf.io.TFRecordWriter(os.fspath(directory / name)) as writer:
      for record in records:
        writer.write(record)
  return {'examples': sum(map(len, shards)), 'bytes': total_bytes}


def write_metadata(data_dir: str) -> None:
  """Writes TFDS's dataset_info.json for the shards in `data_dir` (split
  sizes are read from the shards)."""
  features = tfds.builder('imagenet2012', data_dir=data_dir).info.features
  tfds.folder_dataset.write_metadata(
    data_dir=version_dir(data_dir), features=features, check_data=False
  )


def _resized_jpeg(shorter_side: int, quality: int):
  def reencode(example):
    encoded = example['image']
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    shape = tf.shape(image)[:2]
    shorter = tf.reduce_min(shape)

    def downscale():
      scale = shorter_side / tf.cast(shorter, tf.float64)
      size = tf.cast(tf.round(tf.cast(shape, tf.float64) * scale), tf.int32)
      small = tf.image.resize(image, size, method='bilinear', antialias=True)
      small = tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8)
      return tf.io.encode_jpeg(small, quality=quality), size

    def keep():
      return encoded, shape

    image_bytes, size = tf.cond(shorter > shorter_side, downscale, keep)
    return {
      'image': image_bytes,
      'label': example['label'],
      'file_name': example['file_name'],
      'source_bytes': tf.strings.length(encoded),
      'source_pixels': tf.reduce_prod(tf.cast(shape, tf.int64)),
      'pixels': tf.reduce_prod(tf.cast(size, tf.int64)),
    }

  return reencode


def resize(
  source_data_dir: str,
  output_data_dir: str,
  *,
  shorter_side: int = 256,
  quality: int = 90,
  splits: Iterable[str] = ('train', 'validation'),
) -> dict:
  """Writes `splits` of the `imagenet2012` dataset in `source_data_dir` into
  `output_data_dir`, every image's shorter side at most `shorter_side`.

  An image that does not decode is left out and counted. Refuses to write
  into a directory that already holds the dataset (nothing is overwritten).

  Returns, per split: examples read and written, images left out, mean pixels
  and JPEG bytes before and after.
  """
  if shorter_side < 1 or not 1 <= quality <= 100:
    raise ValueError(
      f'shorter_side must be >= 1 and quality in [1, 100], got '
      f'{shorter_side} and {quality}.'
    )
  source = tfds.builder('imagenet2012', data_dir=source_data_dir)
  if not source.is_prepared():
    raise FileNotFoundError(
      f'No prepared imagenet2012 in {source_data_dir}: build it first with\n'
      f'  tfds build imagenet2012 --data_dir {source_data_dir} '
      '--manual_dir <dir with the ILSVRC2012 tars>'
    )
  target = version_dir(output_data_dir)
  if target.exists() and any(target.iterdir()):
    raise FileExistsError(
      f'{target} already holds a dataset; choose another --output_data_dir '
      'or delete it first.'
    )
  summary = {'shorter_side': shorter_side, 'quality': quality}
  for split in splits:
    totals = {'source_bytes': 0, 'source_pixels': 0, 'pixels': 0, 'bytes': 0}
    ds = tfds_reading.read(source, split)
    ds = ds.map(
      _resized_jpeg(shorter_side, quality),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    ds = tfds_reading.skip_undecodable(ds).prefetch(tf.data.AUTOTUNE)

    def examples(ds=ds, totals=totals):
      for example in ds.as_numpy_iterator():
        for key in ('source_bytes', 'source_pixels', 'pixels'):
          totals[key] += int(example.pop(key))
        totals['bytes'] += len(example['image'])
        example['file_name'] = example['file_name'].decode()
        yield example

    written = write_split(output_data_dir, split, examples())['examples']
    read = source.info.splits[split].num_examples
    count = max(written, 1)
    summary[split] = {
      'examples_read': read,
      'examples_written': written,
      'left_out_undecodable': read - written,
      'mean_pixels_before': totals['source_pixels'] / count,
      'mean_pixels_after': totals['pixels'] / count,
      'mean_kb_before': totals['source_bytes'] / count / 1024,
      'mean_kb_after': totals['bytes'] / count / 1024,
    }
  write_metadata(output_data_dir)
  return summary
