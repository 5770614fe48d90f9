"""PASCAL VOC 2012 segmentation for Mobile DeepLabv3 (paper §6.3, PAPER.md §7).

No stock TFDS builder reads VOC's segmentation masks, so `Voc2012Segmentation`
is a TFDS builder of our own. It reads, from the manual directory:

  VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  VOCdevkit/VOC2012/SegmentationClass/<id>.png     palette PNGs: the palette
      index is the class (0 background, 1-20 objects, 255 object borders and
      'difficult' regions, ignored)
  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
  benchmark_RELEASE/dataset/cls/<id>.mat            optional: SBD (Hariharan
      et al.); with it the 'train_aug' split, the 10,582-image training set
      DeepLab uses: SBD train + val + VOC train, minus VOC val.

Splits: 'train' (1,464), 'validation' (1,449), and 'train_aug' when SBD is
there. Build once with

  tfds build mnv2_jax/voc.py --manual_dir <dir holding VOCdevkit> --data_dir <data_dir>

(or `python -m mnv2_jax.voc --manual_dir ... --data_dir ...`).

The tf.data pipelines follow DeepLab's: training rescales by a random factor
in [min_scale_factor, max_scale_factor] (drawn continuously; DeepLab draws it
in steps of 0.25) (bilinear image, nearest label), pads
to the crop (image with the mean grey, label 255), takes a random crop of
`image_size` and flips left-right with probability 1/2; evaluation pads the
whole image to `image_size` (513 holds every VOC image) and never resamples
it, so every labelled pixel is scored once. Images in [-1, 1].
"""

from __future__ import annotations

import os
from typing import Iterator

from absl import logging

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax import imagenet

NAME = 'voc2012'  # config.dataset.name
CLASS_NAMES = (
    'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus',
    'car', 'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike',
    'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
IGNORE_LABEL = 255
_AUGMENT_TAG = 11


class CorruptExampleError(ValueError):
  """A file of the VOC tree that cannot be used (named in the message)."""


def read_mask(path: str) -> np.ndarray:
  """A VOC SegmentationClass PNG as class ids [H, W] uint8 (palette index:
  0-20 and 255). Raises CorruptExampleError naming the file otherwise."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      if image.mode != 'P':
        raise CorruptExampleError(
            f'{path}: a VOC mask must be a palette ("P") PNG whose indices are '
            f'the classes; this one is mode {image.mode!r}.')
      mask = np.asarray(image, np.uint8)
  except (OSError, SyntaxError) as error:
    raise CorruptExampleError(f'{path}: unreadable PNG ({error}).') from error
  _check_class_ids(mask, path)
  return mask


def read_sbd_mask(path: str) -> np.ndarray:
  """SBD's cls/<id>.mat (GTcls.Segmentation) as class ids [H, W] uint8."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  try:
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    mask = np.asarray(mat['GTcls'].Segmentation, np.uint8)
  except (OSError, ValueError, KeyError, AttributeError) as error:
    raise CorruptExampleError(f'{path}: unreadable SBD mask ({error}).'
                              ) from error
  _check_class_ids(mask, path)
  return mask


def _check_class_ids(mask: np.ndarray, path: str) -> None:
  bad = np.setdiff1d(np.unique(mask), list(range(21)) + [IGNORE_LABEL])
  if bad.size:
    raise CorruptExampleError(
        f'{path}: class ids {bad.tolist()} are not VOC classes (0-20, 255).')


def _ids(path: str) -> list[str]:
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 semantic segmentation (+ SBD's train_aug)."""

  VERSION = tfds.core.Version('1.0.0')

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.skipped: list[str] = []  # damaged examples, once per split
  RELEASE_NOTES = {'1.0.0': 'VOC 2012 segmentation masks, optional SBD.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download VOCtrainval_11-May-2012.tar from
  http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and extract it into the
  manual directory (giving VOCdevkit/VOC2012/...). Optionally extract SBD's
  benchmark.tgz (http://home.bharathh.info/pubs/codes/SBD/download.html)
  there too (giving benchmark_RELEASE/dataset/cls/*.mat) for 'train_aug'.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='PASCAL VOC 2012 segmentation: images and class masks '
                    '(255 = ignore).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            'segmentation': tfds.features.Image(shape=(None, None, 1)),
            'file_name': tfds.features.Text(),
        }),
        homepage='http://host.robots.ox.ac.uk/pascal/VOC/voc2012/')

  def _split_generators(self, dl_manager):
    root = os.path.join(dl_manager.manual_dir, 'VOCdevkit', 'VOC2012')
    sets = os.path.join(root, 'ImageSets', 'Segmentation')
    if not os.path.isdir(sets):
      raise FileNotFoundError(
          f'{sets} does not exist: the manual directory '
          f'({dl_manager.manual_dir}) must hold VOCdevkit/VOC2012 from '
          'VOCtrainval_11-May-2012.tar.' + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    train, val = _ids(os.path.join(sets, 'train.txt')), _ids(
        os.path.join(sets, 'val.txt'))
    splits = {'train': self._generate_examples(root, None, train),
              'validation': self._generate_examples(root, None, val)}
    sbd = os.path.join(dl_manager.manual_dir, 'benchmark_RELEASE', 'dataset')
    if os.path.isdir(os.path.join(sbd, 'cls')):
      sbd_ids = []
      for name in ('train.txt', 'val.txt'):
        if os.path.exists(os.path.join(sbd, name)):
          sbd_ids += _ids(os.path.join(sbd, name))
      if not sbd_ids:
        raise FileNotFoundError(
            f'{sbd}/cls exists but neither {sbd}/train.txt nor val.txt: the '
            'SBD tree is incomplete (extract benchmark.tgz whole, or remove '
            'benchmark_RELEASE to build without train_aug).')
      held_out = set(val)
      augmented = sorted((set(sbd_ids) | set(train)) - held_out)
      splits['train_aug'] = self._generate_examples(root, sbd, augmented)
    return splits

  def _generate_examples(self, root: str, sbd: str | None, ids: list[str]):
    """The (image, mask) pairs of `ids`. A pair with a damaged file (an
    unreadable or truncated JPEG or PNG, a mask that is not a palette PNG,
    holds ids beyond VOC's or differs in size from its image) is skipped
    with a warning naming the file; `skipped` lists them for the report."""
    for name in ids:
      try:
        yield name, self._example(root, sbd, name)
      except CorruptExampleError as error:
        logging.warning('Skipping VOC example %s: %s', name, error)
        self.skipped.append(str(error))

  def _example(self, root: str, sbd: str | None, name: str) -> dict:
    png = os.path.join(root, 'SegmentationClass', name + '.png')
    if os.path.exists(png):
      mask = read_mask(png)
    elif sbd is not None:
      mask = read_sbd_mask(os.path.join(sbd, 'cls', name + '.mat'))
    else:
      raise FileNotFoundError(
          f'{png} is missing (listed in ImageSets): is the VOC tree '
          'completely extracted?')
    image = os.path.join(root, 'JPEGImages', name + '.jpg')
    from PIL import Image  # pylint: disable=g-import-not-at-top
    try:
      with Image.open(image) as jpeg:
        width, height = jpeg.size
        jpeg.load()  # decodes it all: a truncated file fails here
    except (OSError, SyntaxError) as error:
      raise CorruptExampleError(f'{image}: unreadable image ({error}).'
                                ) from error
    if mask.shape != (height, width):
      raise CorruptExampleError(
          f'{name}: the mask is {mask.shape[1]}x{mask.shape[0]} but '
          f'{image} is {width}x{height}.')
    return {'image': image, 'segmentation': mask[..., None],
            'file_name': name}


# ----------------------------------------------------------------- pipeline


def builder(config) -> Voc2012Segmentation:
  return Voc2012Segmentation(data_dir=config.dataset.data_dir)


def dataset_info(config):
  from mnv2_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  info = builder(config).info
  return input_pipeline.DatasetInfo(
      len(CLASS_NAMES), info.splits[config.dataset.train_split].num_examples,
      info.splits[config.dataset.eval_split].num_examples,
      config.dataset.eval_split, category_names=CLASS_NAMES)


def check_data_available(config) -> None:
  """Raises a clear error if the prepared dataset cannot be read."""
  voc = builder(config)
  splits = (config.dataset.train_split, config.dataset.eval_split)
  if voc.is_prepared():
    missing = [s for s in splits if s not in voc.info.splits]
    if missing:
      raise ValueError(
          f'The prepared VOC 2012 dataset in {voc.data_dir} has the splits '
          f'{sorted(voc.info.splits)}, not {missing}. train_aug needs SBD '
          '(benchmark_RELEASE) in the manual directory when the dataset is '
          'built: delete that directory and rebuild with SBD, or set '
          'config.dataset.train_split=train.')
  try:
    for split in splits:
      imagenet._read(voc, split)  # pylint: disable=protected-access
  except (AssertionError, KeyError, ValueError, tf.errors.OpError) as error:
    raise ValueError(
        f'The prepared VOC 2012 segmentation dataset (splits {splits}) was not '
        f'found in config.dataset.data_dir={config.dataset.data_dir!r} (looked '
        f'in {voc.data_dir}). Prepare it once with\n'
        '  python -m mnv2_jax.voc --manual_dir <dir holding VOCdevkit> '
        '--data_dir <data_dir>\n'
        'and point config.dataset.data_dir at that data_dir. '
        f'(Original error: {type(error).__name__}: {error})') from error


def _decode(example) -> tuple[tf.Tensor, tf.Tensor]:
  image = tf.io.decode_image(example['image'], channels=3,
                             expand_animations=False)
  # Both kept encoded by the reader (imagenet._read): a file that does not
  # decode fails here, in the preprocessing, and that example is skipped.
  label = tf.io.decode_png(example['segmentation'], channels=1)  # uint8
  return tf.cast(image, tf.float32), label


def _pad_to(image, label, height, width):
  """Pads bottom/right to at least height x width: image with the mean grey
  (0 after scaling to [-1, 1]), label with 255."""
  pad_h = tf.maximum(height - tf.shape(image)[0], 0)
  pad_w = tf.maximum(width - tf.shape(image)[1], 0)
  image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]],
                 constant_values=127.5)
  label = tf.pad(label, [[0, pad_h], [0, pad_w], [0, 0]],
                 constant_values=IGNORE_LABEL)
  return image, label


def preprocess_for_train(example, seed, image_size: int, min_scale: float,
                         max_scale: float, flip: bool):
  image, label = _decode(example)
  seeds = tf.random.experimental.stateless_split(seed, 4)
  scale = tf.random.stateless_uniform([], seeds[0], min_scale, max_scale)
  size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale),
                 tf.int32)
  image = tf.image.resize(image, size, 'bilinear')
  label = tf.image.resize(label, size, 'nearest')
  image, label = _pad_to(image, label, image_size, image_size)
  both = tf.concat([image, tf.cast(label, tf.float32)], -1)
  both = tf.image.stateless_random_crop(both, [image_size, image_size, 4],
                                        seeds[1])
  if flip:
    both = tf.image.stateless_random_flip_left_right(both, seeds[2])
  return {'image': both[..., :3] / 127.5 - 1.0,
          'label': tf.cast(both[..., 3], tf.int32)}


def preprocess_for_eval(example, image_size: int):
  """The whole image, padded to image_size (513 holds every VOC image, the
  largest are 500 px), so every labelled pixel is scored at its own
  resolution. A larger image stops the evaluation with an error naming
  config.image_size rather than being resampled."""
  image, label = _decode(example)
  check = tf.debugging.assert_less_equal(
      tf.reduce_max(tf.shape(image)[:2]), image_size,
      message=f'an evaluation image is larger than config.image_size='
              f'{image_size}: evaluation pads whole images; set '
              'config.image_size to at least the largest side (VOC: 500; '
              'DeepLab uses 513)')
  with tf.control_dependencies([check]):
    image = tf.identity(image)
  image, label = _pad_to(image, label, image_size, image_size)
  image = tf.ensure_shape(image, [image_size, image_size, 3])
  return {'image': image / 127.5 - 1.0,
          'label': tf.cast(tf.ensure_shape(label, [image_size, image_size, 1])
                           [..., 0], tf.int32),
          'mask': tf.constant(True)}


def train_batches(config, *, start_step: int,
                  per_host_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """This host's training batches forever; a pure function of (seed, step)."""
  segmentation = config.segmentation
  return imagenet.tfds_train_batches(
      config, builder(config), start_step=start_step,
      per_host_batch_size=per_host_batch_size, augment_tag=_AUGMENT_TAG,
      preprocess=lambda example, seed: preprocess_for_train(
          example, seed, config.image_size, segmentation.min_scale_factor,
          segmentation.max_scale_factor, segmentation.flip))


def eval_batches(config, *, per_host_batch_size: int
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this host's shard of the eval split, padded (`mask`)."""
  size = config.image_size
  padding = {'image': tf.zeros([size, size, 3]),
             'label': tf.fill([size, size], IGNORE_LABEL),
             'mask': tf.constant(False)}
  return imagenet.tfds_eval_batches(
      config, builder(config), per_host_batch_size=per_host_batch_size,
      padding=padding, preprocess=lambda e: preprocess_for_eval(e, size))


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      description='Prepares the VOC 2012 segmentation TFDS dataset.')
  parser.add_argument('--manual_dir', required=True,
                      help='the directory holding VOCdevkit (and SBD).')
  parser.add_argument('--data_dir', required=True)
  args = parser.parse_args(argv)
  voc = Voc2012Segmentation(data_dir=args.data_dir)
  voc.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=args.manual_dir))
  for name, split in voc.info.splits.items():
    print(f'{name}: {split.num_examples} examples')
  if voc.skipped:
    print(f'Skipped {len(voc.skipped)} damaged example(s) (counted once per '
          'split that lists them):')
    for reason in voc.skipped:
      print(f'  {reason}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
