"""The built-in dataset: scikit-learn's handwritten digits.

1,797 real scanned 8x8 digits (10 classes) that ship with scikit-learn, so the
quickstart trains on real pixels with no download. Fixed stratified splits:
'test' keeps 20% (360 images), 'validation' 10% (180, taken from the rest),
'train' the other 1,257; 'train_and_validation' (1,437) is the two together,
the glyphs the generated sets (cluttered digits, scenes) paste into their
train and validation images. Settings are chosen on 'validation'; 'test' is
scored once, at the end. Images are resized once to the config's resolution
(bilinear), replicated to 3 channels and scaled to [-1, 1] like the ImageNet
inputs.

Batches are a pure function of (seed, step): epoch e visits a permutation drawn
from (seed, e), and the augmentation of step s draws from (seed, s). A run
resumed at step s therefore sees exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

import functools
from typing import Iterator
from typing import Optional

import jax
import numpy as np
from skimage import transform
from sklearn import datasets as sklearn_datasets
from sklearn import model_selection

from mnv2_jax.data import batch_format
from mnv2_jax.data import registry

TEST_FRACTION = 0.2
VALIDATION_SIZE = 180  # 10% of the 1,797, 18 per class
SPLIT_SEED = 0  # the split is part of the benchmark, not of the run's seed
NUM_CLASSES = 10
SPLITS = registry.DATASETS['digits'].splits


@functools.lru_cache(maxsize=4)
def _split_indices(split: str) -> np.ndarray:
  digits = sklearn_datasets.load_digits()
  rest, test = model_selection.train_test_split(
    np.arange(len(digits.target)),
    test_size=TEST_FRACTION,
    stratify=digits.target,
    random_state=SPLIT_SEED,
  )
  if split == 'test':
    return test
  if split == 'train_and_validation':
    return rest
  train, validation = model_selection.train_test_split(
    rest,
    test_size=VALIDATION_SIZE,
    stratify=digits.target[rest],
    random_state=SPLIT_SEED,
  )
  return train if split == 'train' else validation


@functools.lru_cache(maxsize=4)
def raw_split(split: str) -> tuple[np.ndarray, np.ndarray]:
  """The 8x8 scans of a split: (float32 [N, 8, 8] in [0, 1], int32 [N])."""
  if split not in SPLITS:
    raise ValueError(f'digits has splits {SPLITS}, got {split!r}.')
  digits = sklearn_datasets.load_digits()
  index = _split_indices(split)
  return (
    digits.images[index].astype(np.float32) / 16.0,  # raw range 0..16
    digits.target[index].astype(np.int32),
  )


@functools.lru_cache(maxsize=4)
def load_split(split: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images float32 [N, S, S, 3] in [-1, 1], labels int32 [N])."""
  images, labels = raw_split(split)
  index = np.arange(len(labels))
  resized = transform.resize(
    images,
    (len(index), image_size, image_size),
    order=1,
    mode='edge',
    anti_aliasing=False,
  )
  resized = resized.astype(np.float32) * 2.0 - 1.0
  return np.repeat(resized[..., None], 3, axis=-1), labels


def num_examples(split: str) -> int:
  return len(_split_indices(split))


def shift_augment(
  images: np.ndarray,
  rng: np.random.Generator,
  background: Optional[float] = -1.0,
  *,
  first: int = 0,
  global_batch_size: Optional[int] = None,
) -> np.ndarray:
  """Light augmentation: a random shift of up to 1/8 of the side, filled
  with `background` (the digits' -1), or mirrored where it is None.

  The shifts are drawn for the whole global batch (`global_batch_size`,
  default: these images) and this host's images, at `first`, take theirs: a
  job of several processes augments each example as one process does."""
  size = images.shape[1]
  shift = max(1, size // 8)
  pad = ((0, 0), (shift, shift), (shift, shift), (0, 0))
  padded = (
    np.pad(images, pad, mode='reflect')
    if background is None
    else np.pad(images, pad, constant_values=background)
  )
  total = len(images) if global_batch_size is None else global_batch_size
  offsets = rng.integers(0, 2 * shift + 1, size=(total, 2))
  offsets = offsets[first : first + len(images)]
  return np.stack(
    [
      padded[i, dy : dy + size, dx : dx + size]
      for i, (dy, dx) in enumerate(offsets)
    ]
  )


def dataset_info(
  dataset_config, options: registry.InputOptions, count=None
) -> batch_format.DatasetInfo:
  """Ten classes and the configured split sizes, by `count(split)` (default
  this set's `num_examples`; the cluttered digits pass theirs)."""
  del options  # the same for every run
  count = count or num_examples
  return batch_format.DatasetInfo(
    NUM_CLASSES,
    count(dataset_config.train_split),
    count(dataset_config.eval_split),
    dataset_config.eval_split,
  )


def train_batches(
  dataset_config,
  options: registry.InputOptions,
  *,
  start_step: int,
  per_host_batch_size: int,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields this host's part of each global training batch, forever."""
  images, labels = load_split(dataset_config.train_split, options.image_size)
  return array_train_batches(
    images,
    labels,
    options.seed,
    start_step=start_step,
    per_host_batch_size=per_host_batch_size,
    name='digits',
  )


def array_train_batches(
  images: np.ndarray,
  labels: np.ndarray,
  seed: int,
  *,
  start_step: int,
  per_host_batch_size: int,
  name: str,
  background: Optional[float] = -1.0,
) -> Iterator[dict[str, np.ndarray]]:
  """Shuffled, shift-augmented batches of an in-memory set, forever.

  A pure function of (seed, step), so a resumed run sees the batches of an
  uninterrupted one.
  """
  for step, batch_index in batch_format.shuffled_host_batches(
    len(labels),
    seed,
    per_host_batch_size,
    start_step,
    f'{name} training images',
  ):
    batch_images = shift_augment(
      images[batch_index],
      np.random.default_rng([seed, step, 1]),
      background,
      first=jax.process_index() * per_host_batch_size,
      global_batch_size=per_host_batch_size * jax.process_count(),
    )
    yield {'image': batch_images, 'label': labels[batch_index]}


def eval_batches(
  dataset_config,
  options: registry.InputOptions,
  *,
  per_host_batch_size: int,
  split: Optional[str] = None,
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this host's share of `split` (default the configured
  evaluation split); the last batch padded."""
  images, labels = load_split(
    split or dataset_config.eval_split, options.image_size
  )
  return array_eval_batches(
    images, labels, per_host_batch_size=per_host_batch_size
  )


def array_eval_batches(
  images: np.ndarray, labels: np.ndarray, *, per_host_batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this host's share of an in-memory set.

  `mask` marks real examples so that every test image counts exactly once.
  """
  host_images = np.array_split(images, jax.process_count())[jax.process_index()]
  host_labels = np.array_split(labels, jax.process_count())[jax.process_index()]
  # Every host yields the same number of batches (collectives must line up).
  num_batches = -(
    -int(np.ceil(len(labels) / jax.process_count())) // per_host_batch_size
  )
  for b in range(num_batches):
    chunk = slice(b * per_host_batch_size, (b + 1) * per_host_batch_size)
    batch_images, batch_labels = host_images[chunk], host_labels[chunk]
    real = len(batch_labels)
    pad = per_host_batch_size - real
    yield {
      'image': np.concatenate(
        [batch_images, np.zeros((pad,) + images.shape[1:], np.float32)]
      ),
      'label': np.concatenate([batch_labels, np.zeros((pad,), np.int32)]),
      'mask': np.arange(per_host_batch_size) < real,
    }
