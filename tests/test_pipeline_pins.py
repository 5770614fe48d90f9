"""Every pipeline's batches, pinned: the first training batch, one later
training batch (a resumed run's) and the first evaluation batch of each
dataset give the labels and per-image pixel sums recorded in
tests/data/pipeline_pins.json.

The pins were written by the pipelines as they stood before the package was
split into layers (commit 2daf139), so the refactor provably kept every seed
and shuffle order. Changed on purpose since: digits' training batches (a
validation split of 180 carved out of its training digits) and the cluttered
digits' first evaluation batch (its config evaluates on the new validation
split); everything else is as recorded then. A change that moves results must
update them on purpose (`python tests/test_pipeline_pins.py` rewrites the
file).
"""

import json
import os
import sys

import helpers
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mnv2_jax import configuration
from mnv2_jax import voc as voc_cli
from mnv2_jax.data import cluttered_digits
from mnv2_jax.data import datasets
from mnv2_jax.data import scenes

PINS = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'data', 'pipeline_pins.json'
)


def _summary(batch, n=4):
  """Labels (or mask sums) and pixel sums of a batch's first `n` examples."""
  out = {}
  for key in ('label', 'labels'):
    if key in batch:
      values = np.asarray(batch[key])[:n]
      if key == 'label' and values.ndim > 1:  # segmentation masks
        out['mask_sums'] = [int(np.sum(v[v != 255])) for v in values]
        out['ignored'] = [int(np.sum(v == 255)) for v in values]
      else:
        out[key] = values.tolist()
  out['image_sums'] = [
    round(float(np.sum(np.asarray(x, np.float64))), 3)
    for x in batch['image'][:n]
  ]
  if 'boxes' in batch:
    out['box_sums'] = [round(float(np.sum(b)), 4) for b in batch['boxes'][:n]]
  if 'mask' in batch and batch['mask'].ndim == 1:
    out['mask'] = batch['mask'][:n].tolist()
  return out


def _pins_of(config, batch=4, step=5):
  first = next(
    datasets.train_batches(config, start_step=0, per_host_batch_size=batch)
  )
  later = next(
    datasets.train_batches(config, start_step=step, per_host_batch_size=batch)
  )
  evaluation = next(datasets.eval_batches(config, per_host_batch_size=batch))
  return {
    'train_0': _summary(first),
    f'train_{step}': _summary(later),
    'eval_0': _summary(evaluation),
  }


def compute_pins(tmp_dir: str) -> dict:
  pins = {}
  config = configuration.base_config()
  config.dataset.name = 'digits'
  config.dataset.eval_split = 'test'
  config.num_classes = 10
  config.image_size = 32
  pins['digits'] = _pins_of(config, step=400)  # past the first epoch
  config = helpers.config_file('cluttered_digits')
  pins['cluttered_digits'] = _pins_of(config)
  pins['scenes_detection'] = _pins_of(helpers.tiny_detection_config())
  pins['scenes_segmentation'] = _pins_of(helpers.tiny_scene_config())
  with tfds.testing.mock_data(
    num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    pins['imagenet2012'] = _pins_of(helpers.imagenet_config(), batch=3, step=4)
    config = helpers.config_file('cifar10_mnv2')
    config.dataset.shuffle_buffer_size = 8
    pins['cifar10'] = _pins_of(config, batch=3, step=4)
  config = helpers.tiny_detection_config()
  config.dataset.name = 'coco/2017'
  config.dataset.eval_split = 'validation'
  config.dataset.shuffle_buffer_size = 8
  config.num_classes = 80
  with tfds.testing.mock_data(num_examples=6, as_dataset_fn=helpers.mock_coco):
    pins['coco'] = _pins_of(config, batch=2, step=2)
  manual = os.path.join(tmp_dir, 'manual')
  helpers.write_voc(manual, ['a1', 'a2', 'a3', 'a4'], ['b1', 'b2', 'b3'])
  voc_cli.main(
    ['--manual_dir', manual, '--data_dir', os.path.join(tmp_dir, 'data')]
  )
  config = helpers.tiny_scene_config()
  config.dataset.name = 'voc2012'
  config.dataset.data_dir = os.path.join(tmp_dir, 'data')
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.num_classes = 21
  config.segmentation.flip = True
  pins['voc2012'] = _pins_of(config, batch=2, step=2)
  return pins


@pytest.fixture
def small_splits(monkeypatch):
  """The generated sets at a few dozen examples (the pins were written so)."""
  monkeypatch.setattr(
    cluttered_digits, 'SPLIT_SIZES', {'train': 40, 'validation': 12, 'test': 12}
  )
  monkeypatch.setattr(
    scenes, 'SPLIT_SIZES', {'train': 48, 'validation': 16, 'test': 16}
  )
  scenes.load_split.cache_clear()
  yield
  scenes.load_split.cache_clear()


def test_every_pipeline_gives_its_pinned_batches(small_splits, tmp_path):
  del small_splits
  with open(PINS) as f:
    expected = json.load(f)
  actual = compute_pins(str(tmp_path))
  assert sorted(actual) == sorted(expected)
  for dataset, batches in expected.items():
    for batch, summary in batches.items():
      got = actual[dataset][batch]
      for key, values in summary.items():
        if key == 'image_sums':  # float32 pixels summed: rounding only
          np.testing.assert_allclose(
            got[key], values, rtol=1e-4, atol=1e-2, err_msg=f'{dataset} {batch}'
          )
        else:
          assert got[key] == values, (dataset, batch, key)


if __name__ == '__main__':  # rewrites the pins: only for deliberate changes
  import tempfile

  cluttered_digits.SPLIT_SIZES = {'train': 40, 'validation': 12, 'test': 12}
  scenes.SPLIT_SIZES = {'train': 48, 'validation': 16, 'test': 16}
  with tempfile.TemporaryDirectory() as directory:
    pins = compute_pins(directory)
  with open(PINS, 'w') as f:
    json.dump(pins, f, indent=1, sort_keys=True)
  print(f'wrote {PINS}', file=sys.stderr)
