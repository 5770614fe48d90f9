"""Every dataset behind one interface: what it is, whether it is ready, and
its training and evaluation batches.

  * built in (no download): scikit-learn's digits, the cluttered digits and
    the scenes, all made of real pixels that ship with a dependency;
  * TFDS (prepared once, never downloaded by a run): ImageNet, CIFAR-10 and
    Imagenette, COCO 2017, and VOC 2012 through our own builder.

The batch format is data/common.py's. The TensorFlow-based modules are
imported only for the datasets that need them: the built-in quickstarts never
load TensorFlow.
"""

from __future__ import annotations

from typing import Iterator

from mnv2_jax.data import cluttered_digits
from mnv2_jax.data import common
from mnv2_jax.data import digits
from mnv2_jax.data import registry
from mnv2_jax.data import scene_batches

# config.dataset.name -> its facts (registry.py, which the config's
# validation reads without importing the pipelines).
DatasetSpec = registry.DatasetSpec
DATASETS = registry.DATASETS


def _tfds_module(name: str):
  """The TensorFlow-based pipeline of a TFDS dataset, imported on demand
  (TensorFlow takes seconds to import and the built-in data need none)."""
  if name == 'coco/2017':
    from mnv2_jax.data import coco  # noqa: PLC0415

    return coco
  if name == 'voc2012':
    from mnv2_jax.data import voc  # noqa: PLC0415

    return voc
  from mnv2_jax.data import imagenet  # noqa: PLC0415 (also CIFAR, Imagenette)

  return imagenet


def dataset_info(config) -> common.DatasetInfo:
  name = config.dataset.name
  train, evaluation = config.dataset.train_split, config.dataset.eval_split
  if name in ('digits', 'cluttered_digits'):
    module = digits if name == 'digits' else cluttered_digits
    return common.DatasetInfo(
      module.NUM_CLASSES,
      module.num_examples(train),
      module.num_examples(evaluation),
      evaluation,
    )
  if name == 'scenes':
    return scene_batches.dataset_info(config)
  if name in ('coco/2017', 'voc2012'):
    return _tfds_module(name).dataset_info(config)
  imagenet = _tfds_module(name)
  return common.DatasetInfo(
    config.num_classes,
    imagenet.num_examples(config, config.dataset.train_split),
    imagenet.num_examples(config, config.dataset.eval_split),
    config.dataset.eval_split,
  )


def check_available(config) -> None:
  """Raises a clear error when a dataset that needs files is not prepared."""
  if DATASETS[config.dataset.name].tfds:
    _tfds_module(config.dataset.name).check_data_available(config)


def _shift_labels(
  batches: Iterator[common.Batch], config
) -> Iterator[common.Batch]:
  """With config.background_class (TF-slim's 1001-way releases: logit 0 is
  'background'), dataset label k is logit k + 1."""
  if not config.background_class:
    yield from batches
    return
  for batch in batches:
    yield {**batch, 'label': batch['label'] + 1}


def train_batches(
  config, *, start_step: int, per_host_batch_size: int
) -> Iterator[common.Batch]:
  """This host's training batches forever, from `start_step`."""
  name = config.dataset.name
  if name == 'digits':
    batches = digits.train_batches(
      config, start_step=start_step, per_host_batch_size=per_host_batch_size
    )
  elif name == 'cluttered_digits':
    images, labels = cluttered_digits.load_split(
      config.dataset.train_split, config.image_size
    )
    batches = digits.array_train_batches(
      images,
      labels,
      config,
      start_step=start_step,
      per_host_batch_size=per_host_batch_size,
      name='cluttered_digits',
      background=None,
    )
  elif name == 'scenes':
    return scene_batches.train_batches(
      config, start_step=start_step, per_host_batch_size=per_host_batch_size
    )
  elif name in ('coco/2017', 'voc2012'):
    return _tfds_module(name).train_batches(
      config, start_step=start_step, per_host_batch_size=per_host_batch_size
    )
  else:
    batches = _tfds_module(name).train_batches(
      config, start_step=start_step, per_host_batch_size=per_host_batch_size
    )
  return _shift_labels(batches, config)


def eval_batches(config, *, per_host_batch_size: int) -> Iterator[common.Batch]:
  """One pass over this host's shard of the evaluation split, the last batch
  padded (its `mask` False)."""
  name = config.dataset.name
  if name == 'digits':
    batches = digits.eval_batches(
      config, per_host_batch_size=per_host_batch_size
    )
  elif name == 'cluttered_digits':
    images, labels = cluttered_digits.load_split(
      config.dataset.eval_split, config.image_size
    )
    batches = digits.array_eval_batches(
      images, labels, per_host_batch_size=per_host_batch_size
    )
  elif name == 'scenes':
    return scene_batches.eval_batches(
      config, per_host_batch_size=per_host_batch_size
    )
  elif name in ('coco/2017', 'voc2012'):
    return _tfds_module(name).eval_batches(
      config, per_host_batch_size=per_host_batch_size
    )
  else:
    batches = _tfds_module(name).eval_batches(
      config, per_host_batch_size=per_host_batch_size
    )
  return _shift_labels(batches, config)
