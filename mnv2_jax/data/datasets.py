"""Every dataset behind one interface: what it is, whether it is ready, and
its training and evaluation batches.

  * built in (no download): scikit-learn's digits, the cluttered digits and
    the scenes, all made of real pixels that ship with a dependency;
  * TFDS (prepared once, never downloaded by a run): ImageNet, CIFAR-10 and
    Imagenette, COCO 2017, and VOC 2012 through our own builder.

Each dataset's module (registry.DATASETS[name].pipeline) serves the same
four functions, which take config.dataset and `registry.InputOptions`, not
the experiment config; this module looks the pipeline up, builds the options
(`input_options`) and adds the label shift of 1001-way checkpoints. The batch format is data/batch_format.py's. The TensorFlow-based
modules are imported only for the datasets that need them: the built-in
quickstarts never load TensorFlow.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Iterator
from typing import Optional

from mnv2_jax.data import batch_format
from mnv2_jax.data import registry

# config.dataset.name -> its facts (registry.py, which the config's
# validation reads without importing the pipelines), among them the module
# of this package that serves it.
DatasetSpec = registry.DatasetSpec
DATASETS = registry.DATASETS


def pipeline(name: str) -> ModuleType:
  """The module serving dataset `name` (`DatasetSpec.pipeline`), imported on
  first use: TensorFlow takes seconds to import and the built-in data need
  none."""
  if name not in DATASETS:
    raise ValueError(
      f'config.dataset.name={name!r} is not a dataset: one of '
      f'{sorted(DATASETS)}.'
    )
  return importlib.import_module(f'mnv2_jax.data.{DATASETS[name].pipeline}')


def input_options(config) -> registry.InputOptions:
  """What the pipelines need of an experiment config besides config.dataset
  (the one place of this package that reads the rest of it)."""
  return registry.InputOptions(
    image_size=config.image_size,
    seed=config.seed,
    num_classes=config.num_classes,
    task=config.task,
    preprocessing=config.preprocessing,
    eval_crop_fraction=config.eval_crop_fraction,
    max_boxes=config.detection.max_boxes,
    zoom_out_probability=config.detection.zoom_out_probability,
    min_scale_factor=config.segmentation.min_scale_factor,
    max_scale_factor=config.segmentation.max_scale_factor,
    flip=config.segmentation.flip,
  )


def dataset_info(config) -> batch_format.DatasetInfo:
  """Classes, split sizes and names of the config's dataset."""
  return pipeline(config.dataset.name).dataset_info(
    config.dataset, input_options(config)
  )


def check_available(config) -> None:
  """Raises a clear error when a dataset that needs files is not prepared."""
  if DATASETS[config.dataset.name].tfds:
    pipeline(config.dataset.name).check_data_available(config.dataset)


def _shift_labels(
  batches: Iterator[batch_format.Batch], config
) -> Iterator[batch_format.Batch]:
  """With config.background_class (TF-slim's 1001-way releases: logit 0 is
  'background'), dataset label k is logit k + 1."""
  if not config.background_class or config.task != 'classification':
    yield from batches
    return
  for batch in batches:
    yield {**batch, 'label': batch['label'] + 1}


def train_batches(
  config, *, start_step: int, per_host_batch_size: int
) -> Iterator[batch_format.Batch]:
  """This host's training batches forever, from `start_step`."""
  batches = pipeline(config.dataset.name).train_batches(
    config.dataset,
    input_options(config),
    start_step=start_step,
    per_host_batch_size=per_host_batch_size,
  )
  return _shift_labels(batches, config)


def eval_batches(
  config, *, per_host_batch_size: int, split: Optional[str] = None
) -> Iterator[batch_format.Batch]:
  """One pass over this host's shard of `split` (default
  config.dataset.eval_split), the last batch padded (its `mask` False)."""
  batches = pipeline(config.dataset.name).eval_batches(
    config.dataset,
    input_options(config),
    per_host_batch_size=per_host_batch_size,
    split=split,
  )
  return _shift_labels(batches, config)
