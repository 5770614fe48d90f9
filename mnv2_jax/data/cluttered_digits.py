"""A built-in classification set hard enough for the paper's ablations.

The plain digits saturate near 99% whatever the architecture, so Figure 6's
and §4's differences cannot show on them. Here each image is a random crop of
one of scikit-image's colour photos (the clutter) with one of scikit-learn's
handwritten digits pasted on it: `DIGIT_SIZE` of the side, anywhere in the
image (partly cut off at the edges), rotated (up to `MAX_ROTATION` degrees
either way), in an ink colour `INK_CONTRAST` away from the photo under it,
faded (`INK_OPACITY`), with a piece of another digit at the edge as a
distractor and Gaussian pixel noise on top. The label
is the pasted digit. Train images use the digits of the digits train split,
test images those of its test split, so no test glyph is seen in training.

Everything is a pure function of (split, index, image size), so the set is the
same on every machine; 10,000 train and 2,000 test images are generated once
per process (a few seconds) and cached.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from typing import Iterator
from typing import Optional

import numpy as np
from skimage import transform

from mnv2_jax.data import batch_format
from mnv2_jax.data import digits
from mnv2_jax.data import photos
from mnv2_jax.data import registry

NUM_CLASSES = 10
VERSION = 2  # of make_example's code: bump when it changes
SPLIT_SIZES = {'train': 10_000, 'validation': 2_000, 'test': 2_000}
DIGIT_SIZE = (0.8, 1.0)  # glyph side as a fraction of the image side
MAX_ROTATION = 15.0  # degrees
INK_OPACITY = (0.7, 1.0)
DISTRACTORS = (0, 1)  # pieces of other digits per image
NOISE_STD = 0.05  # of the [0, 1] pixel range
# How far (0-255) each channel of the digit's ink is from the photo under
# it; distractors take any colour and may blend in.
INK_CONTRAST = (80.0, 160.0)
# The photo's contrast around its mean colour (1: as shot).
PHOTO_CONTRAST = 0.5
_SPLIT_TAG = {'train': 10, 'test': 11, 'validation': 12}  # apart from scenes'
# The digits split whose glyphs each split's images show: test digits only in
# test images; train and validation images from the same 1,437.
GLYPHS = {
  'train': 'train_and_validation',
  'validation': 'train_and_validation',
  'test': 'test',
}


def _paste(image, glyph, top, left, colour, opacity):
  """Blends a [h, w] ink mask into image[top:, left:] (clipped at edges)."""
  size = image.shape[0]
  h, w = glyph.shape
  y0, x0 = max(top, 0), max(left, 0)
  y1, x1 = min(top + h, size), min(left + w, size)
  if y0 >= y1 or x0 >= x1:
    return
  ink = glyph[y0 - top : y1 - top, x0 - left : x1 - left, None] * opacity
  region = image[y0:y1, x0:x1]
  image[y0:y1, x0:x1] = region * (1 - ink) + colour * ink


def _rotated_glyph(glyph: np.ndarray, size: int, angle: float) -> np.ndarray:
  resized = transform.resize(
    glyph, (size, size), order=1, mode='constant', anti_aliasing=False
  )
  return np.clip(
    transform.rotate(resized, angle, resize=True, order=1, mode='constant'),
    0.0,
    1.0,
  ).astype(np.float32)


def make_example(
  split: str, index: int, image_size: int
) -> tuple[np.ndarray, int]:
  """One image (uint8 [S, S, 3]) and its label."""
  if split not in SPLIT_SIZES:
    raise ValueError(
      f'cluttered_digits has splits {list(SPLIT_SIZES)}, got {split!r}.'
    )
  rng = np.random.default_rng([_SPLIT_TAG[split], index])
  backgrounds = photos.photos()
  photo = backgrounds[rng.integers(len(backgrounds))]
  side = int(
    rng.integers(min(photo.shape[:2]) // 8, min(photo.shape[:2]) // 2 + 1)
  )
  top = int(rng.integers(0, photo.shape[0] - side + 1))
  left = int(rng.integers(0, photo.shape[1] - side + 1))
  image = photos.resize(photo[top : top + side, left : left + side], image_size)
  mean = image.mean(axis=(0, 1))
  image = mean + PHOTO_CONTRAST * (image - mean)
  glyphs, labels = digits.raw_split(GLYPHS[split])

  def ink_colour():
    return rng.uniform(0, 255, 3)

  # Distractors first (under the digit): a random piece of another glyph,
  # mostly outside the image so that only part of it shows.
  for _ in range(int(rng.integers(DISTRACTORS[0], DISTRACTORS[1] + 1))):
    other = glyphs[rng.integers(len(glyphs))]
    size = int(round(rng.uniform(*DIGIT_SIZE) * image_size))
    piece = _rotated_glyph(other, size, rng.uniform(-180, 180))
    h = piece.shape[0]
    y = int(rng.integers(-h + 2, image_size - 1))
    x = int(
      rng.choice(
        [
          rng.integers(-h + 2, -h // 2 + 1),
          rng.integers(image_size - h // 2, image_size - 1),
        ]
      )
    )
    if rng.random() < 0.5:
      y, x = x, y
    _paste(image, piece, y, x, ink_colour(), rng.uniform(*INK_OPACITY))

  which = int(rng.integers(len(labels)))
  size = int(round(rng.uniform(*DIGIT_SIZE) * image_size))
  glyph = _rotated_glyph(
    glyphs[which], size, rng.uniform(-MAX_ROTATION, MAX_ROTATION)
  )
  h = glyph.shape[0]
  y = int(rng.integers(min(0, image_size - h), max(0, image_size - h) + 1))
  x = int(rng.integers(min(0, image_size - h), max(0, image_size - h) + 1))
  region = (
    image[max(y, 0) : y + h, max(x, 0) : x + h].reshape(-1, 3).mean(axis=0)
  )
  # The digit's ink: each channel moved INK_CONTRAST away from the photo's
  # mean under it, towards the side with more room, so that the digit always
  # stands out (a mid-grey photo's complement would be the photo's colour).
  away = np.where(region < 127.5, 1.0, -1.0)
  colour = np.clip(region + away * rng.uniform(*INK_CONTRAST, 3), 0.0, 255.0)
  _paste(image, glyph, y, x, colour, rng.uniform(*INK_OPACITY))

  image = image + rng.normal(0.0, NOISE_STD * 255.0, image.shape)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), int(labels[which])


def _generator_key(split: str, image_size: int) -> str:
  """Names a cached split; any change of the generator's settings changes it."""
  settings = (
    VERSION,
    SPLIT_SIZES[split],
    DIGIT_SIZE,
    MAX_ROTATION,
    INK_OPACITY,
    DISTRACTORS,
    NOISE_STD,
    INK_CONTRAST,
    PHOTO_CONTRAST,
    photos.NAMES,
  )
  digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:12]
  return f'cluttered_digits_{split}_{image_size}_{digest}.npz'


def generate_split(
  split: str, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, S, S, 3], labels int32 [N]), generated."""
  examples = [
    make_example(split, i, image_size) for i in range(SPLIT_SIZES[split])
  ]
  return (
    np.stack([image for image, _ in examples]),
    np.asarray([label for _, label in examples], np.int32),
  )


@functools.lru_cache(maxsize=4)
def load_split(split: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(images float32 [N, S, S, 3] in [-1, 1], labels int32 [N]).

  Generating the 12,000 images takes ~30 s, which every run of a sweep would
  pay, so they are cached in $MNV2_JAX_CACHE (default ~/.cache/mnv2_jax)
  under a name that changes with every generator setting; an unreadable
  cache file is regenerated.
  """
  cache_dir = os.environ.get(
    'MNV2_JAX_CACHE', os.path.expanduser('~/.cache/mnv2_jax')
  )
  path = os.path.join(cache_dir, _generator_key(split, image_size))
  try:
    with np.load(path) as cached:
      images, labels = cached['images'], cached['labels']
  except (OSError, KeyError, ValueError, zipfile.BadZipFile):
    images, labels = generate_split(split, image_size)
    try:
      os.makedirs(cache_dir, exist_ok=True)
      temporary = f'{path}.{os.getpid()}.tmp.npz'
      np.savez(temporary, images=images, labels=labels)
      os.replace(temporary, path)  # atomic: concurrent runs never see half
    except OSError:
      pass  # a read-only home: generate every time
  return batch_format.scale_pixels(images.astype(np.float32)), labels


def num_examples(split: str) -> int:
  return SPLIT_SIZES[split]


def dataset_info(
  dataset_config, options: registry.InputOptions
) -> batch_format.DatasetInfo:
  return digits.dataset_info(dataset_config, options, num_examples)


def train_batches(
  dataset_config,
  options: registry.InputOptions,
  *,
  start_step: int,
  per_host_batch_size: int,
) -> Iterator[dict[str, np.ndarray]]:
  """This host's shuffled, shift-augmented training batches, forever (the
  digits' sampler, with no background fill: the clutter is the image)."""
  images, labels = load_split(dataset_config.train_split, options.image_size)
  return digits.array_train_batches(
    images,
    labels,
    options.seed,
    start_step=start_step,
    per_host_batch_size=per_host_batch_size,
    name='cluttered_digits',
    background=None,
  )


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
  return digits.array_eval_batches(
    images, labels, per_host_batch_size=per_host_batch_size
  )
