"""Real photographs that ship with scikit-image: the backgrounds of the
built-in scenes and cluttered digits, and int8 calibration crops."""

from __future__ import annotations

import functools

import numpy as np
import skimage.data
from PIL import Image

# scikit-image's colour sample photographs.
NAMES = (
  'astronaut',
  'coffee',
  'chelsea',
  'rocket',
  'hubble_deep_field',
  'immunohistochemistry',
  'retina',
)


@functools.lru_cache(maxsize=4)
def photos(names: tuple[str, ...] = NAMES) -> tuple[np.ndarray, ...]:
  """The photographs `names` as uint8 [H, W, 3] arrays (alpha dropped)."""
  return tuple(
    np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
    for name in names
  )


def resize(crop: np.ndarray, size: int) -> np.ndarray:
  """Antialiased bilinear resize of a uint8 crop to size x size (Pillow),
  as float32."""
  resized = Image.fromarray(crop).resize((size, size), Image.BILINEAR)
  return np.asarray(resized, np.float32)
