"""What differs between classification, detection and segmentation, behind
one interface (`interface.Task`).

The trainer (training/trainer.py) and its loop are shared; a task supplies
the network (`models/building.py`), the loss of its training outputs, the
evaluation step (jit-compiled, pure) and the host-side accumulation of the
evaluation outputs into metrics:

  * classification (paper §6.1): tasks/classification.py;
  * detection (SSDLite, paper §6.2): tasks/detection.py;
  * segmentation (Mobile DeepLabv3, paper §6.3): tasks/segmentation.py.
"""

from __future__ import annotations

from mnv2_jax.tasks import classification
from mnv2_jax.tasks import detection
from mnv2_jax.tasks import interface
from mnv2_jax.tasks import segmentation

# config.task -> its task.
TASK_CLASSES = {
  'classification': classification.Classification,
  'detection': detection.Detection,
  'segmentation': segmentation.Segmentation,
}


def build_task(config, dataset_info=None) -> interface.Task:
  """The task `config.task` names. `dataset_info` (data.batch_format.DatasetInfo)
  gives COCO's category ids and the classes' names where the dataset has
  them."""
  return TASK_CLASSES[config.task](config, dataset_info)
