"""What every dataset shares: the facts a task needs about a dataset, the
counts of input a pipeline repaired instead of failing on, the label of
pixels no loss or metric counts, and the pixel scaling of the paper's recipe.

A leaf module: the dataset modules and the tasks import it; it imports none
of them.

Every pipeline yields host-local numpy batches: `image` float32 [B, S, S, 3]
(in [-1, 1] with the inception preprocessing) and the task's targets
(`label`; SSD's `boxes`, `labels`, `valid`, `crowd`; a segmentation `label`
map). Evaluation batches add a boolean `mask`: the last batch is padded to
full size and its padding is masked out, so every example counts once. `B` is
the per-host batch, the global batch divided by the number of hosts; the
trainer assembles the global, sharded array.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator
from typing import Optional

import jax
import numpy as np

from mnv2_jax.data import registry

Batch = dict

# How images become network inputs (config.preprocessing; data/image_classification.py):
# 'inception' ([-1, 1]; the paper, TF-slim, Keras), 'torchvision' (ImageNet
# mean/std; the PyTorch releases), 'cifar' ([-1, 1], pad-and-crop).
PREPROCESSING = registry.PREPROCESSING

# Segmentation pixels that no loss or metric counts: VOC's object borders
# ('void'), the padding of crops, the scenes' glyph edges.
IGNORE_LABEL = 255

# Per-batch counts of bad input that a pipeline skipped or repaired rather
# than crash on (imagenet.py, coco.py): host-side only; the trainer takes them
# out of the batch, adds them up and writes the totals with the train metrics.
#   skipped_examples: undecodable images dropped (the next example took the
#     place); clipped_boxes: boxes reaching outside the image, clipped to it;
#   dropped_boxes: boxes of zero area (before or after clipping), removed.
SKIPPED_EXAMPLES = 'skipped_examples'
REPAIR_COUNTS = (SKIPPED_EXAMPLES, 'clipped_boxes', 'dropped_boxes')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  eval_split: str  # the name written into metrics.jsonl
  # Detection: the dataset's category id and name of each contiguous label.
  category_ids: Optional[tuple[int, ...]] = None
  category_names: Optional[tuple[str, ...]] = None


# torchvision's ImageNet normalisation (of pixels scaled to [0, 1]).
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)

# How training images leave the host (`config.dataset.train_image_dtype`, the
# TFDS classification pipelines): 'float32', normalised on the host; or
# 'uint8', the resized, flipped pixels rounded to integers, normalised on the
# device inside the jitted step (`pixels_to_input`). uint8 copies and
# transfers a quarter of the bytes and moves the normalisation off the host;
# the rounding changes each input by at most half a grey level.
TRAIN_IMAGE_DTYPES = registry.TRAIN_IMAGE_DTYPES


def pixels_to_input(pixels, preprocessing: str):
  """Float pixels in [0, 255] to the network's input, as `preprocessing`
  normalises them ('inception', 'cifar': [-1, 1]; 'torchvision': ImageNet
  mean/std). Works on NumPy, JAX and TensorFlow float arrays alike."""
  if preprocessing in ('inception', 'cifar'):
    return scale_pixels(pixels)
  if preprocessing == 'torchvision':
    mean = np.asarray(TORCHVISION_MEAN, np.float32)
    std = np.asarray(TORCHVISION_STD, np.float32)
    return (pixels / 255.0 - mean) / std
  raise ValueError(
    f'preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}.'
  )


def scale_pixels(image):
  """Pixels in [0, 255] to [-1, 1], the input range of the released models
  and the paper's recipe (the 'inception' preprocessing). Works on NumPy
  arrays and TensorFlow tensors of a float dtype alike."""
  return image / 127.5 - 1.0


def shuffled_host_batches(
  num_examples: int,
  seed: int,
  per_host_batch_size: int,
  start_step: int,
  what: str,
) -> Iterator[tuple[int, np.ndarray]]:
  """(step, this host's example indices) of an in-memory set, forever.

  Each epoch is a permutation seeded by (seed, epoch); each global batch (the
  per-host batch times the number of hosts) is split over the hosts in
  process order. A pure function of (seed, step), so a resumed run sees the
  batches of an uninterrupted one.

  Raises:
    ValueError: the set holds fewer examples (`what`) than one global batch.
  """
  global_batch = per_host_batch_size * jax.process_count()
  steps_per_epoch = num_examples // global_batch
  if steps_per_epoch == 0:
    raise ValueError(
      f'config.batch_size={global_batch} is larger than the '
      f'{num_examples} {what}.'
    )
  first = jax.process_index() * per_host_batch_size
  step = start_step
  while True:
    epoch, position = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    chosen = order[position * global_batch : (position + 1) * global_batch]
    yield step, chosen[first : first + per_host_batch_size]
    step += 1
