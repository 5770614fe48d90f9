"""Detection and segmentation batches of the built-in scenes (data/scenes.py).

Detection (config.task == 'detection'):

Training batches: 'image' float32 [B, S, S, 3] in [-1, 1]; ground truth
padded to `config.detection.max_boxes`: 'boxes' [B, G, 4] (normalised ymin,
xmin, ymax, xmax), 'labels' [B, G] int32 (0-9), 'valid' [B, G], 'crowd'
[B, G] (always False here). Evaluation batches add 'image_id', 'height',
'width' (pixels) and 'mask' (False for the padding of the last batch).

Batches are a pure function of (seed, step), as for the digits, so a resumed
run sees the batches of an uninterrupted one. Digits are not flipped (a
mirrored digit is another glyph); augmentation is a random zoom-out: the
scene shrunk by up to `ZOOM_OUT` into a random corner of a grey canvas.

Segmentation (config.task == 'segmentation'): 'image' as above and 'label'
int32 [B, S, S] (0 = photo, k + 1 = digit k, 255 = ignore). Training applies
DeepLab's augmentation without the flip (paper §6.3; a mirrored digit is
another glyph): a random rescale by [min_scale_factor, max_scale_factor],
padding with the mean grey and label 255, and a random S x S crop.
"""

from __future__ import annotations

from typing import Iterator
from typing import Optional

import jax
import numpy as np
from PIL import Image

from mnv2_jax.data import batch_format
from mnv2_jax.data import registry
from mnv2_jax.data import scenes

ZOOM_OUT = 0.6  # smallest scale of the random zoom-out


def dataset_info(
  dataset_config, options: registry.InputOptions
) -> batch_format.DatasetInfo:
  if options.task == 'segmentation':
    return batch_format.DatasetInfo(
      scenes.NUM_CLASSES + 1,
      scenes.SPLIT_SIZES[dataset_config.train_split],
      scenes.SPLIT_SIZES[dataset_config.eval_split],
      dataset_config.eval_split,
      category_names=('background',)
      + tuple(f'digit {d}' for d in range(scenes.NUM_CLASSES)),
    )
  return batch_format.DatasetInfo(
    scenes.NUM_CLASSES,
    scenes.SPLIT_SIZES[dataset_config.train_split],
    scenes.SPLIT_SIZES[dataset_config.eval_split],
    dataset_config.eval_split,
    category_ids=tuple(range(1, scenes.NUM_CLASSES + 1)),
    category_names=tuple(f'digit {d}' for d in range(scenes.NUM_CLASSES)),
  )


def _pad(values: np.ndarray, count: int, fill=0) -> np.ndarray:
  out = np.full((count,) + values.shape[1:], fill, values.dtype)
  out[: min(count, len(values))] = values[:count]
  return out


def _example(scene: dict, max_boxes: int) -> dict[str, np.ndarray]:
  k = len(scene['labels'])
  return {
    'image': batch_format.scale_pixels(scene['image'].astype(np.float32)),
    'boxes': _pad(scene['boxes'], max_boxes),
    'labels': _pad(scene['labels'], max_boxes),
    'valid': np.arange(max_boxes) < k,
    'crowd': np.zeros(max_boxes, bool),
  }


def _zoom_out(example: dict, rng: np.random.Generator) -> dict:
  """Shrinks the scene by a random factor in [ZOOM_OUT, 1] into a random
  place of a grey canvas (SSD's 'expand' augmentation, nearest-neighbour)."""
  size = example['image'].shape[0]
  scale = rng.uniform(ZOOM_OUT, 1.0)
  small = max(8, int(round(size * scale)))
  index = (np.arange(small) * size / small).astype(int)
  top, left = rng.integers(0, size - small + 1, size=2)
  image = np.zeros_like(example['image'])
  image[top : top + small, left : left + small] = example['image'][index][
    :, index
  ]
  factor = small / size
  offset = np.array([top, left, top, left]) / size
  boxes = np.where(
    example['valid'][:, None], example['boxes'] * factor + offset, 0.0
  ).astype(np.float32)
  return {**example, 'image': image, 'boxes': boxes}


def _rescale_and_crop(
  image: np.ndarray, label: np.ndarray, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """DeepLab's training geometry on a uint8 scene and its mask: resize by
  `scale` (bilinear image, nearest label), pad to at least the original size
  (image 0 after the [-1, 1] scaling, i.e. mid grey; label 255), then a
  random crop of the original size."""
  size = image.shape[0]
  scaled = max(1, int(round(size * scale)))
  image = np.asarray(
    Image.fromarray(image).resize((scaled, scaled), Image.BILINEAR), np.float32
  )
  label = np.asarray(
    Image.fromarray(label).resize((scaled, scaled), Image.NEAREST)
  )
  padded = max(size, scaled)
  canvas = np.full((padded, padded, 3), 127.5, np.float32)
  canvas_label = np.full((padded, padded), batch_format.IGNORE_LABEL, np.uint8)
  canvas[:scaled, :scaled] = image
  canvas_label[:scaled, :scaled] = label
  top, left = rng.integers(0, padded - size + 1, size=2)
  return (
    canvas[top : top + size, left : left + size],
    canvas_label[top : top + size, left : left + size],
  )


def _segmentation_example(
  scene: dict,
  options: registry.InputOptions,
  rng: np.random.Generator = None,
) -> dict[str, np.ndarray]:
  image, label = scene['image'], scene['mask']
  if rng is not None:
    scale = rng.uniform(options.min_scale_factor, options.max_scale_factor)
    image, label = _rescale_and_crop(image, label, scale, rng)
  return {
    'image': batch_format.scale_pixels(np.asarray(image, np.float32)),
    'label': label.astype(np.int32),
  }


def _stack(examples: list[dict]) -> dict[str, np.ndarray]:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def train_batches(
  dataset_config,
  options: registry.InputOptions,
  *,
  start_step: int,
  per_host_batch_size: int,
) -> Iterator[dict[str, np.ndarray]]:
  """This host's part of each global training batch, forever."""
  data = scenes.load_split(
    dataset_config.train_split, options.image_size, dataset_config.seed
  )
  for step, chosen in batch_format.shuffled_host_batches(
    len(data), options.seed, per_host_batch_size, start_step, 'training scenes'
  ):
    # Each host its own stream (one process: the stream it always had). The
    # draws per example vary (zoom-out, crops), so unlike the digits' shifts
    # they cannot be drawn for the global batch: a job of several processes
    # augments the scenes differently from one process, equally at random.
    host = [jax.process_index()] if jax.process_count() > 1 else []
    rng = np.random.default_rng([options.seed, step, 1, *host])
    examples = []
    for i in chosen:
      if options.task == 'segmentation':
        examples.append(_segmentation_example(data[i], options, rng))
        continue
      example = _example(data[i], options.max_boxes)
      if rng.random() < options.zoom_out_probability:
        example = _zoom_out(example, rng)
      examples.append(example)
    yield _stack(examples)


def eval_batches(
  dataset_config,
  options: registry.InputOptions,
  *,
  per_host_batch_size: int,
  split: Optional[str] = None,
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this host's share of the scenes of `split` (default the
  configured evaluation split), the last batch padded (`mask`)."""
  data = scenes.load_split(
    split or dataset_config.eval_split, options.image_size, dataset_config.seed
  )
  ids = np.array_split(np.arange(len(data)), jax.process_count())[
    jax.process_index()
  ]
  num_batches = -(
    -int(np.ceil(len(data) / jax.process_count())) // per_host_batch_size
  )
  size = options.image_size
  for b in range(num_batches):
    chunk = ids[b * per_host_batch_size : (b + 1) * per_host_batch_size]
    examples = []
    for position in range(per_host_batch_size):
      real = position < len(chunk)
      index = int(chunk[position]) if real else 0
      if options.task == 'segmentation':
        example = _segmentation_example(data[index], options)
        example['mask'] = np.bool_(real)
        examples.append(example)
        continue
      example = _example(data[index], options.max_boxes)
      example.update(
        image_id=np.int32(index + 1),
        height=np.int32(size),
        width=np.int32(size),
        mask=np.bool_(real),
      )
      examples.append(example)
    yield _stack(examples)
