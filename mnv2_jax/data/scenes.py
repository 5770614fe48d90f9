"""Built-in detection and segmentation scenes made of real, shipped pixels.

Each scene is a random crop of one of scikit-image's colour sample photos
with 1 to `MAX_OBJECTS` handwritten digits of scikit-learn's set pasted on it
at random positions and sizes, each in a random ink colour. Everything is a
pure function of (split, index, image size, seed), so the sets are identical
on every machine and run:

  * detection (SSDLite, paper §6.2): exact boxes (the tight box of the pasted
    digit's ink), labels 0-9;
  * segmentation (DeepLab, paper §6.3): a mask with the digit's class + 1
    where its ink is solid, 0 on the photo, and 255 ('ignore', as VOC's
    object borders) on the anti-aliased rim of every digit.

Splits: 'train' (2,000), 'validation' (200) and 'test' (200). Train and
validation scenes paste digits of the digits 'train_and_validation' split,
test scenes those of its 'test' split, so no test digit is seen in training;
settings are chosen on 'validation' and 'test' is scored once, at the end.
"""

from __future__ import annotations

import functools

import numpy as np
from skimage import transform

from mnv2_jax.data import batch_format
from mnv2_jax.data import digits
from mnv2_jax.data import photos

NUM_CLASSES = 10
MAX_OBJECTS = 4
SPLIT_SIZES = {'train': 2000, 'validation': 200, 'test': 200}
# Digit sizes as a fraction of the image side, and the largest IoU allowed
# between two digits of a scene (they may touch, not hide each other). From
# 0.15-0.45 to 0.3-0.6: more digits have an SSD anchor at IoU >= 0.5 at
# 160x160 (82.5% vs 70%), and their strokes span enough pixels of a
# stride-8 DeepLab output to be segmented.
MIN_SIZE, MAX_SIZE = 0.3, 0.6
MAX_OVERLAP = 0.1
INK_SOLID, INK_EDGE = 0.5, 0.1
_SPLIT_TAG = {'train': 0, 'test': 1, 'validation': 2}
# The digits split whose glyphs each split's scenes show (as cluttered_digits).
GLYPHS = {
  'train': 'train_and_validation',
  'validation': 'train_and_validation',
  'test': 'test',
}


def _resize_glyph(image: np.ndarray, size: int) -> np.ndarray:
  return transform.resize(
    image, (size, size), order=1, mode='edge', anti_aliasing=False
  ).astype(np.float32)


def _box_iou(a, b) -> float:
  ymin, xmin = max(a[0], b[0]), max(a[1], b[1])
  ymax, xmax = min(a[2], b[2]), min(a[3], b[3])
  inter = max(ymax - ymin, 0) * max(xmax - xmin, 0)
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def make_scene(
  split: str, index: int, image_size: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """One scene: 'image' uint8 [S, S, 3], 'boxes' float32 [K, 4] normalised
  (ymin, xmin, ymax, xmax), 'labels' int32 [K], 'mask' uint8 [S, S]."""
  if split not in SPLIT_SIZES:
    raise ValueError(f'scenes have splits {list(SPLIT_SIZES)}, got {split!r}.')
  rng = np.random.default_rng([seed, _SPLIT_TAG[split], index])
  photo = photos.photos()[rng.integers(len(photos.NAMES))]
  side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2]) + 1))
  top = int(rng.integers(0, photo.shape[0] - side + 1))
  left = int(rng.integers(0, photo.shape[1] - side + 1))
  image = photos.resize(photo[top : top + side, left : left + side], image_size)
  if rng.random() < 0.5:
    image = image[:, ::-1]
  mask = np.zeros((image_size, image_size), np.uint8)
  glyphs, glyph_labels = digits.raw_split(GLYPHS[split])
  boxes, labels = [], []
  for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
    for _attempt in range(20):
      size = int(round(rng.uniform(MIN_SIZE, MAX_SIZE) * image_size))
      y = int(rng.integers(0, image_size - size + 1))
      x = int(rng.integers(0, image_size - size + 1))
      which = int(rng.integers(len(glyph_labels)))
      ink = np.clip(_resize_glyph(glyphs[which], size), 0.0, 1.0)
      rows = np.nonzero(ink.max(axis=1) > INK_EDGE)[0]
      cols = np.nonzero(ink.max(axis=0) > INK_EDGE)[0]
      if not len(rows) or not len(cols):
        continue
      box = (
        (y + rows[0]) / image_size,
        (x + cols[0]) / image_size,
        (y + rows[-1] + 1) / image_size,
        (x + cols[-1] + 1) / image_size,
      )
      if all(_box_iou(box, other) <= MAX_OVERLAP for other in boxes):
        break
    else:
      continue
    # Ink of a random colour far from the local background.
    region = image[y : y + size, x : x + size]
    colour = rng.uniform(0, 255, 3)
    if np.abs(colour - region.mean(axis=(0, 1))).sum() < 200:
      colour = 255.0 - region.mean(axis=(0, 1))
    image[y : y + size, x : x + size] = (
      region * (1 - ink[..., None]) + colour * ink[..., None]
    )
    solid = ink > INK_SOLID
    edge = (ink > INK_EDGE) & ~solid
    window = mask[y : y + size, x : x + size]
    window[edge] = batch_format.IGNORE_LABEL
    window[solid] = glyph_labels[which] + 1
    boxes.append(box)
    labels.append(int(glyph_labels[which]))
  return {
    'image': np.clip(np.rint(image), 0, 255).astype(np.uint8),
    'boxes': np.asarray(boxes, np.float32).reshape(-1, 4),
    'labels': np.asarray(labels, np.int32),
    'mask': mask,
  }


@functools.lru_cache(maxsize=4)
def load_split(
  split: str, image_size: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
  """All scenes of a split (cached; 2,000 train scenes take a few seconds)."""
  return [
    make_scene(split, i, image_size, seed) for i in range(SPLIT_SIZES[split])
  ]
