"""Our TFDS builder of PASCAL VOC 2012 segmentation (paper §6.3, Table 7).

No stock TFDS builder reads VOC's segmentation masks, so `Voc2012Segmentation`
is one of our own. It reads, from the manual directory:

  VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  VOCdevkit/VOC2012/SegmentationClass/<id>.png     palette PNGs: the palette
      index is the class (0 background, 1-20 objects, 255 object borders and
      'difficult' regions, ignored)
  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
  benchmark_RELEASE/dataset/cls/<id>.mat            optional: SBD (Hariharan
      et al.); with it the 'train_aug' split, the 10,582-image training set
      DeepLab uses: SBD train + val + VOC train, minus VOC val.

Splits: 'train' (1,464), 'validation' (1,449), and 'train_aug' when SBD is
there. Build once with `python -m mnv2_jax.voc --manual_dir <dir holding
VOCdevkit> --data_dir <data_dir>` (`prepare`). The pipelines that read it are
data/voc.py's.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from mnv2_jax.data import batch_format

NUM_CLASSES = 21  # with the background


class CorruptExampleError(ValueError):
  """A file of the VOC tree that cannot be used (named in the message)."""


def read_mask(path: str) -> np.ndarray:
  """A VOC SegmentationClass PNG as class ids [H, W] uint8 (palette index:
  0-20 and 255). Raises CorruptExampleError naming the file otherwise."""
  try:
    with Image.open(path) as image:
      if image.mode != 'P':
        raise CorruptExampleError(
          f'{path}: a VOC mask must be a palette ("P") PNG whose indices are '
          f'the classes; this one is mode {image.mode!r}.'
        )
      mask = np.asarray(image, np.uint8)
  except (OSError, SyntaxError) as error:
    raise CorruptExampleError(f'{path}: unreadable PNG ({error}).') from error
  _check_class_ids(mask, path)
  return mask


def read_sbd_mask(path: str) -> np.ndarray:
  """SBD's cls/<id>.mat (GTcls.Segmentation) as class ids [H, W] uint8."""
  try:
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    mask = np.asarray(mat['GTcls'].Segmentation, np.uint8)
  except (OSError, ValueError, KeyError, AttributeError) as error:
    raise CorruptExampleError(
      f'{path}: unreadable SBD mask ({error}).'
    ) from error
  _check_class_ids(mask, path)
  return mask


def _check_class_ids(mask: np.ndarray, path: str) -> None:
  bad = np.setdiff1d(
    np.unique(mask), list(range(NUM_CLASSES)) + [batch_format.IGNORE_LABEL]
  )
  if bad.size:
    raise CorruptExampleError(
      f'{path}: class ids {bad.tolist()} are not VOC classes (0-20, 255).'
    )


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
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(shape=(None, None, 3)),
          'segmentation': tfds.features.Image(shape=(None, None, 1)),
          'file_name': tfds.features.Text(),
        }
      ),
      homepage='http://host.robots.ox.ac.uk/pascal/VOC/voc2012/',
    )

  def _split_generators(self, dl_manager):
    root = os.path.join(dl_manager.manual_dir, 'VOCdevkit', 'VOC2012')
    sets = os.path.join(root, 'ImageSets', 'Segmentation')
    if not os.path.isdir(sets):
      raise FileNotFoundError(
        f'{sets} does not exist: the manual directory '
        f'({dl_manager.manual_dir}) must hold VOCdevkit/VOC2012 from '
        'VOCtrainval_11-May-2012.tar.' + self.MANUAL_DOWNLOAD_INSTRUCTIONS
      )
    train, val = (
      _ids(os.path.join(sets, 'train.txt')),
      _ids(os.path.join(sets, 'val.txt')),
    )
    splits = {
      'train': self._generate_examples(root, None, train),
      'validation': self._generate_examples(root, None, val),
    }
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
          'benchmark_RELEASE to build without train_aug).'
        )
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
        'completely extracted?'
      )
    image = os.path.join(root, 'JPEGImages', name + '.jpg')
    try:
      with Image.open(image) as jpeg:
        width, height = jpeg.size
        jpeg.load()  # decodes it all: a truncated file fails here
    except (OSError, SyntaxError) as error:
      raise CorruptExampleError(
        f'{image}: unreadable image ({error}).'
      ) from error
    if mask.shape != (height, width):
      raise CorruptExampleError(
        f'{name}: the mask is {mask.shape[1]}x{mask.shape[0]} but '
        f'{image} is {width}x{height}.'
      )
    return {'image': image, 'segmentation': mask[..., None], 'file_name': name}


def prepare(manual_dir: str, data_dir: str) -> Voc2012Segmentation:
  """Builds the TFDS dataset from the VOC (and SBD) files in `manual_dir`
  into `data_dir`; damaged pairs are skipped and listed in `skipped`."""
  voc = Voc2012Segmentation(data_dir=data_dir)
  voc.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
  )
  return voc
