"""An `imagenet2012`-format TFDS dataset written from real photographs, for
measuring and testing the ImageNet input pipeline without ImageNet.

Each example is a crop of one of scikit-image's sample photographs
(data/photos.py), resized to an ImageNet-like size and JPEG-encoded, with the
builder's own features (image, label, file_name), so `tfds.builder(
'imagenet2012', data_dir=...)` reads it exactly as it reads a `tfds build`.

Sizes follow ILSVRC2012's shape: most images have their longer side at 500
pixels (the size the images were distributed at), a quarter are smaller, three
in four are landscape, and the aspect ratios are those of cameras (4:3, 3:2,
1:1) with a spread. JPEG decoding costs in proportion to the coded bytes as
well as the pixels, and a crop of a sample photo compresses far better than an
ImageNet photo (38 KiB at quality 90), so each image gets luminance noise
(sigma 10 grey levels) and quality 95: about 100 KiB per image, near
ImageNet's mean of about 110 KiB (ILSVRC2012_img_train.tar's 138 GiB over its
1,281,167 images). `write` returns the realised mean size and bytes so a
benchmark states what it measured on.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image

from mnv2_jax.data import imagenet_records
from mnv2_jax.data import photos as photos_lib

# The longer side of most ILSVRC2012 images.
MAX_SIDE = 500
# Aspect ratios (longer / shorter side) and their weights.
_ASPECT_RATIOS = (4 / 3, 3 / 2, 1.0)
_ASPECT_WEIGHTS = (0.6, 0.2, 0.1)  # the remaining 0.1: uniform in [1, 2]


def _size(rng: np.random.Generator) -> tuple[int, int]:
  """(height, width) of one image."""
  longer = MAX_SIDE if rng.random() < 0.75 else int(rng.integers(200, MAX_SIDE))
  pick = rng.random()
  cumulative = np.cumsum(_ASPECT_WEIGHTS)
  if pick < cumulative[-1]:
    ratio = _ASPECT_RATIOS[int(np.searchsorted(cumulative, pick, 'right'))]
  else:
    ratio = float(rng.uniform(1.0, 2.0))
  shorter = max(1, round(longer / ratio))
  return (shorter, longer) if rng.random() < 0.75 else (longer, shorter)


def make_image(
  index: int, rng: np.random.Generator, noise_std: float = 10.0
) -> np.ndarray:
  """One uint8 [H, W, 3] image: a random crop of a sample photo with the
  aspect ratio of a drawn ImageNet-like size, resized to that size."""
  sources = photos_lib.photos()
  photo = sources[index % len(sources)]
  height, width = _size(rng)
  # The largest crop of the photo with the target's aspect ratio, scaled by
  # [0.5, 1] and placed at random.
  scale = rng.uniform(0.5, 1.0)
  ph, pw = photo.shape[:2]
  fit = min(ph / height, pw / width)
  crop_h = max(1, int(height * fit * scale))
  crop_w = max(1, int(width * fit * scale))
  top = int(rng.integers(0, ph - crop_h + 1))
  left = int(rng.integers(0, pw - crop_w + 1))
  crop = photo[top : top + crop_h, left : left + crop_w]
  if rng.random() < 0.5:
    crop = crop[:, ::-1]
  image = np.asarray(
    Image.fromarray(np.ascontiguousarray(crop)).resize(
      (width, height), Image.BILINEAR
    ),
    np.float32,
  )
  # Luminance noise: the same in every channel, so JPEG's chroma subsampling
  # does not discard it.
  image += rng.normal(0.0, noise_std, image.shape[:2])[..., None]
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def write(
  data_dir: str,
  *,
  train_examples: int,
  validation_examples: int,
  quality: int = 95,
  seed: int = 0,
) -> dict:
  """Writes the 'train' and 'validation' splits into `data_dir`.

  Returns what was written: examples per split, mean height and width, mean
  JPEG kilobytes and bytes per pixel.
  """
  if train_examples < 1 or validation_examples < 1:
    raise ValueError(
      'train_examples and validation_examples must be >= 1, got '
      f'{train_examples} and {validation_examples}.'
    )
  rng = np.random.default_rng(seed)
  shapes: list[tuple[int, int]] = []
  summary: dict = {'quality': quality}

  def examples(split: str, count: int):
    for i in range(count):
      image = make_image(i, rng)
      shapes.append(image.shape[:2])
      yield {
        'image': tf.io.encode_jpeg(image, quality=quality).numpy(),
        'label': int(rng.integers(0, 1000)),
        'file_name': f'{split}_{i:08d}.JPEG',
      }

  total_bytes = 0
  for split, count in (
    ('train', train_examples),
    ('validation', validation_examples),
  ):
    written = imagenet_records.write_split(
      data_dir, split, examples(split, count)
    )
    summary[f'{split}_examples'] = written['examples']
    total_bytes += written['bytes']
  imagenet_records.write_metadata(data_dir)
  heights, widths = np.asarray(shapes, np.float64).T
  summary.update(
    mean_height=float(heights.mean()),
    mean_width=float(widths.mean()),
    max_side=int(max(heights.max(), widths.max())),
    mean_jpeg_kb=total_bytes / len(shapes) / 1024,
    bytes_per_pixel=total_bytes / float(np.sum(heights * widths)),
  )
  return summary
