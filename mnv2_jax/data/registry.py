"""What a config may name about the data, without importing any pipeline:
the datasets (`DATASETS`: classes, tasks, splits, whether TFDS reads it),
the input normalisations and the training images' dtypes, and `check`, the
checker of config.dataset that `configuration.validate` runs. It loads
without TensorFlow, scikit-learn or scikit-image; `datasets.py` serves the
batches."""

from __future__ import annotations

import dataclasses

from mnv2_jax import config_checks as checks


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a config needs to know about a dataset."""

  num_classes: int  # classification and detection: without a background
  tasks: tuple[str, ...]
  segmentation_classes: int = 0  # with the background
  tfds: bool = False  # read through TFDS (prepared once)
  splits: tuple[str, ...] = ()  # the built-in ones' (TFDS: any split name)
  # The module of mnv2_jax.data that serves it (datasets.py imports it on
  # first use), with InputOptions' four functions.
  pipeline: str = 'image_classification'


@dataclasses.dataclass(frozen=True)
class InputOptions:
  """What a pipeline needs besides config.dataset: the run's seed and task,
  the network's input and the task's ground truth. `datasets.py` builds it
  from an experiment config (`input_options`); the pipelines see nothing
  else of that config.

  Every pipeline module serves `dataset_info(dataset_config, options)`,
  `train_batches(dataset_config, options, *, start_step,
  per_host_batch_size)`, `eval_batches(dataset_config, options, *,
  per_host_batch_size, split=None)` and, for a dataset that must be
  prepared, `check_data_available(dataset_config)`, where `dataset_config`
  is config.dataset.
  """

  image_size: int
  seed: int  # the run's: shuffling and augmentation
  num_classes: int  # the network's outputs (classification: with background)
  task: str = 'classification'
  preprocessing: str = 'inception'  # PREPROCESSING
  eval_crop_fraction: float = 0.875  # the central crop of evaluation
  max_boxes: int = 100  # detection: ground truth padded to this many boxes
  zoom_out_probability: float = 0.0  # detection: SSD's zoom-out
  # segmentation: DeepLab's random rescaling and flip
  min_scale_factor: float = 0.5
  max_scale_factor: float = 2.0
  flip: bool = False


BUILT_IN_SPLITS = ('train', 'validation', 'test')

# config.dataset.name -> its facts. The built-in datasets' split sizes are
# their modules' (cluttered_digits.SPLIT_SIZES, scenes.SPLIT_SIZES).
DATASETS = {
  'digits': DatasetSpec(
    10,
    ('classification',),
    splits=(*BUILT_IN_SPLITS, 'train_and_validation'),
    pipeline='digits',
  ),
  'cluttered_digits': DatasetSpec(
    10,
    ('classification',),
    splits=BUILT_IN_SPLITS,
    pipeline='cluttered_digits',
  ),
  'imagenet2012': DatasetSpec(1000, ('classification',), tfds=True),
  'cifar10': DatasetSpec(10, ('classification',), tfds=True),
  'imagenette/160px-v2': DatasetSpec(10, ('classification',), tfds=True),
  'imagenette/320px-v2': DatasetSpec(10, ('classification',), tfds=True),
  'scenes': DatasetSpec(
    10,
    ('detection', 'segmentation'),
    segmentation_classes=11,
    splits=BUILT_IN_SPLITS,
    pipeline='scene_batches',
  ),
  'coco/2017': DatasetSpec(80, ('detection',), tfds=True, pipeline='coco'),
  'voc2012': DatasetSpec(
    20, ('segmentation',), segmentation_classes=21, tfds=True, pipeline='voc'
  ),
}

# config.preprocessing: how pixels in [0, 255] become the network's input
# (common.pixels_to_input).
PREPROCESSING = ('inception', 'torchvision', 'cifar')
# config.dataset.train_image_dtype: what the training pipeline hands over.
TRAIN_IMAGE_DTYPES = ('float32', 'uint8')


def check(config, defaults) -> None:
  """config.dataset and what must agree with the dataset: the input
  normalisation, the task, the number of classes, the evaluation crop.

  Raises ValueError naming the field, what is allowed and a fix (examples
  from `defaults`, the base config). Whether a prepared dataset's files are
  there is `datasets.check_available`'s question, asked later.
  """
  checks.check_choice(config, 'dataset.name', tuple(DATASETS), defaults)
  checks.check_choice(config, 'preprocessing', PREPROCESSING, defaults)
  checks.check_choice(
    config, 'dataset.train_image_dtype', TRAIN_IMAGE_DTYPES, defaults
  )
  spec = DATASETS[config.dataset.name]
  if config.dataset.train_image_dtype == 'uint8' and not (
    spec.tfds and config.task == 'classification'
  ):
    tfds_classification = [
      name
      for name, other in DATASETS.items()
      if other.tfds and 'classification' in other.tasks
    ]
    checks.fail(
      'dataset.train_image_dtype',
      'uint8',
      'uint8 training batches are made by the TFDS classification pipelines '
      f'({", ".join(tfds_classification)}), not by {config.dataset.name!r}',
      'float32',
    )
  checks.check_choice(config, 'background_class', (False, True), defaults)
  checks.check_range(
    config,
    'eval_crop_fraction',
    0.0,
    1.0,
    defaults,
    low_inclusive=False,
    high_inclusive=True,
  )
  _check_splits(config, spec)
  _check_task_and_classes(config, spec)
  checks.check_positive_integers(
    config, ('dataset.shuffle_buffer_size',), defaults
  )
  if not checks.is_int(config.dataset.seed) or not (
    0 <= config.dataset.seed < 2**32
  ):
    checks.fail(
      'dataset.seed',
      config.dataset.seed,
      'it must be an integer in [0, 2**32)',
      '0',
    )


def _check_splits(config, spec: DatasetSpec) -> None:
  dataset = config.dataset
  for field in ('train_split', 'eval_split'):
    if not isinstance(dataset[field], str) or not dataset[field]:
      checks.fail(
        f'dataset.{field}', dataset[field], 'it must name a split', 'train'
      )
  if not isinstance(dataset.test_split, str):
    checks.fail(
      'dataset.test_split',
      dataset.test_split,
      "it must name a split or be '' (none)",
      'test',
    )
  if not spec.splits:
    return  # TFDS: any split name the prepared dataset has
  for field in ('train_split', 'eval_split'):
    if dataset[field] not in spec.splits:
      checks.fail(
        f'dataset.{field}',
        dataset[field],
        f'dataset {dataset.name!r} has the splits {list(spec.splits)}',
        'validation' if field == 'eval_split' else 'train',
      )
  if dataset.test_split not in spec.splits + ('',):
    checks.fail(
      'dataset.test_split',
      dataset.test_split,
      f"dataset {dataset.name!r} has the splits {list(spec.splits)} (or '' "
      'for none)',
      'test',
    )


def _check_task_and_classes(config, spec: DatasetSpec) -> None:
  name = config.dataset.name
  if config.task not in spec.tasks:
    checks.fail(
      'task',
      config.task,
      f'dataset {name!r} is for {" or ".join(spec.tasks)}',
      spec.tasks[0],
    )
  if config.task == 'segmentation':
    expected = spec.segmentation_classes
  else:
    expected = spec.num_classes + int(config.background_class)
  if config.num_classes != expected:
    checks.fail(
      'num_classes',
      config.num_classes,
      f'dataset {name!r} has {expected} classes'
      + (' with the background class' if config.background_class else ''),
      str(expected),
    )
