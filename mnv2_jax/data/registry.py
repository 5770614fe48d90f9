"""What a config may name about the data, without importing any pipeline:
the datasets (`DATASETS`: classes, tasks, splits, whether TFDS reads it),
the input normalisations and the training images' dtypes. `configuration`
validates against these, so it loads without TensorFlow, scikit-learn or
scikit-image; `datasets.py` serves the batches."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a config needs to know about a dataset."""

  num_classes: int  # classification and detection: without a background
  tasks: tuple[str, ...]
  segmentation_classes: int = 0  # with the background
  tfds: bool = False  # read through TFDS (prepared once)
  splits: tuple[str, ...] = ()  # the built-in ones' (TFDS: any split name)
  # The module of mnv2_jax.data that serves it (datasets.py imports it on
  # first use): dataset_info(config), train_batches(config, *, start_step,
  # per_host_batch_size), eval_batches(config, *, per_host_batch_size,
  # split=None) and, for a dataset that must be prepared,
  # check_data_available(config).
  pipeline: str = 'image_classification'


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
