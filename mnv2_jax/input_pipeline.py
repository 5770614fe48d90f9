"""One entry point to the datasets: built-in digits, cluttered digits and
scenes, TFDS ImageNet, CIFAR-10 and Imagenette, COCO and VOC 2012.

Every iterator yields host-local numpy batches: `image` float32 [B, S, S, 3] in
[-1, 1] and `label` int32 [B]; evaluation batches add a boolean `mask` (the
last batch is padded). `B` is the per-host batch: the global batch divided by
the number of hosts; `train.py` assembles the global, sharded array.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

from mnv2_jax import cluttered_digits
from mnv2_jax import digits
from mnv2_jax import scene_data

Batch = dict

# Per-batch counts of bad input that a pipeline skipped or repaired rather
# than crash on (imagenet.py, coco.py): host-side only, train.py takes them
# out of the batch, adds them up and writes the totals with the train metrics.
#   skipped_examples: undecodable images dropped (the next example took the
#     place); clipped_boxes: boxes reaching outside the image, clipped to it;
#   dropped_boxes: boxes of zero area (before or after clipping), removed.
REPAIR_COUNTS = ('skipped_examples', 'clipped_boxes', 'dropped_boxes')
# Classification sets read from TFDS through imagenet.py's pipeline (encoded
# images and labels); the others are built in or have their own module.
TFDS_CLASSIFICATION = ('imagenet2012', 'cifar10', 'imagenette/160px-v2',
                       'imagenette/320px-v2')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  eval_split: str  # the name written into metrics.jsonl
  # Detection: the dataset's category id and name of each contiguous label.
  category_ids: Optional[tuple[int, ...]] = None
  category_names: Optional[tuple[str, ...]] = None

  def task_kwargs(self) -> dict:
    if self.category_names is None:
      return {}
    return {'category_ids': self.category_ids,
            'category_names': self.category_names}


def _imagenet():
  # Imported lazily: the digits quickstart never needs TFDS or tf.data.
  from mnv2_jax import imagenet  # pylint: disable=g-import-not-at-top
  return imagenet


def _coco():
  from mnv2_jax import coco  # pylint: disable=g-import-not-at-top
  return coco


def _voc():
  from mnv2_jax import voc  # pylint: disable=g-import-not-at-top
  return voc


def dataset_info(config) -> DatasetInfo:
  if config.dataset.name == 'digits':
    return DatasetInfo(digits.NUM_CLASSES, digits.num_examples('train'),
                       digits.num_examples('test'), 'test')
  if config.dataset.name == 'cluttered_digits':
    return DatasetInfo(cluttered_digits.NUM_CLASSES,
                       cluttered_digits.num_examples('train'),
                       cluttered_digits.num_examples('test'), 'test')
  if config.dataset.name == 'scenes':
    return scene_data.dataset_info(config)
  if config.dataset.name == 'coco/2017':
    return _coco().dataset_info(config)
  if config.dataset.name == 'voc2012':
    return _voc().dataset_info(config)
  imagenet = _imagenet()
  return DatasetInfo(
      config.num_classes,
      imagenet.num_examples(config, config.dataset.train_split),
      imagenet.num_examples(config, config.dataset.eval_split),
      config.dataset.eval_split)


def check_available(config) -> None:
  """Raises a clear error when a dataset that needs files is not prepared."""
  if config.dataset.name in TFDS_CLASSIFICATION:
    _imagenet().check_data_available(config)
  elif config.dataset.name == 'coco/2017':
    _coco().check_data_available(config)
  elif config.dataset.name == 'voc2012':
    _voc().check_data_available(config)


def _shift_labels(batches: Iterator[Batch], config) -> Iterator[Batch]:
  """With config.background_class (TF-slim's 1001-way releases: logit 0 is
  'background'), dataset label k is logit k + 1."""
  if not config.background_class:
    yield from batches
    return
  for batch in batches:
    yield {**batch, 'label': batch['label'] + 1}


def train_batches(config, *, start_step: int,
                  per_host_batch_size: int) -> Iterator[Batch]:
  if config.dataset.name == 'digits':
    batches = digits.train_batches(config, start_step=start_step,
                                   per_host_batch_size=per_host_batch_size)
  elif config.dataset.name == 'cluttered_digits':
    images, labels = cluttered_digits.load_split('train', config.image_size)
    batches = digits.array_train_batches(
        images, labels, config, start_step=start_step,
        per_host_batch_size=per_host_batch_size, name='cluttered_digits',
        background=None)
  elif config.dataset.name == 'scenes':
    return scene_data.train_batches(config, start_step=start_step,
                                    per_host_batch_size=per_host_batch_size)
  elif config.dataset.name == 'coco/2017':
    return _coco().train_batches(config, start_step=start_step,
                                 per_host_batch_size=per_host_batch_size)
  elif config.dataset.name == 'voc2012':
    return _voc().train_batches(config, start_step=start_step,
                                per_host_batch_size=per_host_batch_size)
  else:
    batches = _imagenet().train_batches(
        config, start_step=start_step, per_host_batch_size=per_host_batch_size)
  return _shift_labels(batches, config)


def eval_batches(config, *, per_host_batch_size: int) -> Iterator[Batch]:
  if config.dataset.name == 'digits':
    batches = digits.eval_batches(config,
                                  per_host_batch_size=per_host_batch_size)
  elif config.dataset.name == 'cluttered_digits':
    images, labels = cluttered_digits.load_split('test', config.image_size)
    batches = digits.array_eval_batches(
        images, labels, per_host_batch_size=per_host_batch_size)
  elif config.dataset.name == 'scenes':
    return scene_data.eval_batches(config,
                                   per_host_batch_size=per_host_batch_size)
  elif config.dataset.name == 'coco/2017':
    return _coco().eval_batches(config,
                                per_host_batch_size=per_host_batch_size)
  elif config.dataset.name == 'voc2012':
    return _voc().eval_batches(config,
                               per_host_batch_size=per_host_batch_size)
  else:
    batches = _imagenet().eval_batches(
        config, per_host_batch_size=per_host_batch_size)
  return _shift_labels(batches, config)
