"""Detection batches of the built-in scenes (scenes.py).

Training batches: 'image' float32 [B, S, S, 3] in [-1, 1]; ground truth
padded to `config.detection.max_boxes`: 'boxes' [B, G, 4] (normalised ymin,
xmin, ymax, xmax), 'labels' [B, G] int32 (0-9), 'valid' [B, G], 'crowd'
[B, G] (always False here). Evaluation batches add 'image_id', 'height',
'width' (pixels) and 'mask' (False for the padding of the last batch).

Batches are a pure function of (seed, step), as for the digits, so a resumed
run sees the batches of an uninterrupted one. Digits are not flipped (a
mirrored digit is another glyph); augmentation is a random zoom-out: the
scene shrunk by up to `ZOOM_OUT` into a random corner of a grey canvas.
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np

from mnv2_jax import scenes

ZOOM_OUT = 0.6  # smallest scale of the random zoom-out


def dataset_info():
  from mnv2_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.DatasetInfo(
      scenes.NUM_CLASSES, scenes.SPLIT_SIZES['train'],
      scenes.SPLIT_SIZES['test'], 'test',
      category_ids=tuple(range(1, scenes.NUM_CLASSES + 1)),
      category_names=tuple(f'digit {d}' for d in range(scenes.NUM_CLASSES)))


def _pad(values: np.ndarray, count: int, fill=0) -> np.ndarray:
  out = np.full((count,) + values.shape[1:], fill, values.dtype)
  out[:min(count, len(values))] = values[:count]
  return out


def _example(scene: dict, max_boxes: int) -> dict[str, np.ndarray]:
  k = len(scene['labels'])
  return {'image': scene['image'].astype(np.float32) / 127.5 - 1.0,
          'boxes': _pad(scene['boxes'], max_boxes),
          'labels': _pad(scene['labels'], max_boxes),
          'valid': np.arange(max_boxes) < k,
          'crowd': np.zeros(max_boxes, bool)}


def _zoom_out(example: dict, rng: np.random.Generator) -> dict:
  """Shrinks the scene by a random factor in [ZOOM_OUT, 1] into a random
  place of a grey canvas (SSD's 'expand' augmentation, nearest-neighbour)."""
  size = example['image'].shape[0]
  scale = rng.uniform(ZOOM_OUT, 1.0)
  small = max(8, int(round(size * scale)))
  index = (np.arange(small) * size / small).astype(int)
  top, left = rng.integers(0, size - small + 1, size=2)
  image = np.zeros_like(example['image'])
  image[top:top + small, left:left + small] = example['image'][index][:, index]
  factor = small / size
  offset = np.array([top, left, top, left]) / size
  boxes = np.where(example['valid'][:, None],
                   example['boxes'] * factor + offset, 0.0).astype(np.float32)
  return {**example, 'image': image, 'boxes': boxes}


def _stack(examples: list[dict]) -> dict[str, np.ndarray]:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def train_batches(config, *, start_step: int,
                  per_host_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """This host's part of each global training batch, forever."""
  data = scenes.load_split('train', config.image_size, config.dataset.seed)
  global_batch = per_host_batch_size * jax.process_count()
  steps_per_epoch = len(data) // global_batch
  if steps_per_epoch == 0:
    raise ValueError(f'config.batch_size={global_batch} is larger than the '
                     f'{len(data)} training scenes.')
  first = jax.process_index() * per_host_batch_size
  step = start_step
  while True:
    epoch, position = divmod(step, steps_per_epoch)
    order = np.random.default_rng([config.seed, epoch]).permutation(len(data))
    chosen = order[position * global_batch:(position + 1) * global_batch]
    chosen = chosen[first:first + per_host_batch_size]
    rng = np.random.default_rng([config.seed, step, 1])
    examples = []
    for i in chosen:
      example = _example(data[i], config.detection.max_boxes)
      if rng.random() < config.detection.zoom_out_probability:
        example = _zoom_out(example, rng)
      examples.append(example)
    yield _stack(examples)
    step += 1


def eval_batches(config, *, per_host_batch_size: int
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this host's share of the test scenes, the last batch
  padded (`mask`)."""
  data = scenes.load_split('test', config.image_size, config.dataset.seed)
  ids = np.array_split(np.arange(len(data)),
                       jax.process_count())[jax.process_index()]
  num_batches = -(-int(np.ceil(len(data) / jax.process_count()))
                  // per_host_batch_size)
  size = config.image_size
  for b in range(num_batches):
    chunk = ids[b * per_host_batch_size:(b + 1) * per_host_batch_size]
    examples = []
    for position in range(per_host_batch_size):
      real = position < len(chunk)
      index = int(chunk[position]) if real else 0
      example = _example(data[index], config.detection.max_boxes)
      example.update(image_id=np.int32(index + 1), height=np.int32(size),
                     width=np.int32(size), mask=np.bool_(real))
      examples.append(example)
    yield _stack(examples)
