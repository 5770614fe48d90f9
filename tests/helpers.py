"""Shared test helpers: tolerances derived from the float type and the
computation (never from the result on one CPU), the suite's tiny configs,
the data files it generates, and loading the repository's scripts.

Tolerances.

Two formulations of the same function (a fused and an unfused
normalisation, a batched and a looped matrix product) round differently,
and how they round changes with the CPU: XLA:CPU generates code for the
vector instructions at hand (AVX-512, AVX2, FMA) and the matrix libraries
pick their kernels at run time. A tolerance read off one machine's result
(a 1.1e-6 relative difference passing under 1e-6) fails on the next. The
bounds below follow the standard error analysis of floating-point sums
(Higham, "Accuracy and Stability of Numerical Algorithms", §3.1 and
Higham & Mary 2019 for the probabilistic sqrt(n) form): a dot product of n
terms has a relative error of order sqrt(n) * u, u the unit roundoff, and in
a network of `depth` such layers, whose normalisation keeps each one well
conditioned (BatchNorm), the layers' independent rounding errors add in
quadrature: sqrt(depth) of them.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import sys
from types import ModuleType

import jax
import ml_collections
import numpy as np

from mnv2_jax import configuration
from mnv2_jax import tasks
from mnv2_jax.data import datasets
from mnv2_jax.models import initializers
from mnv2_jax.models.building import build_model
from mnv2_jax.training import metric_writers
from mnv2_jax.training import optimization
from mnv2_jax.training import state as training_state
from mnv2_jax.training import trainer
from mnv2_jax.weights import importers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# XLA's per-program options for a program that runs many times: LLVM's
# default optimisation level, where the suite's XLA_FLAGS turn it off.
OPTIMISED_CODE = {'xla_backend_optimization_level': 2}
OPTIMISE_FROM_STEPS = 40  # below, the extra compile time is not repaid
# The network of the tests of the training loop, checkpoints and processes
# (tiny_digits_config, tests/kill_resume.py's SUITE_NETWORK): MobileNetV1
# 0.25 traces and compiles in about two thirds of MobileNetV2 0.35's time,
# and what they test is the same for every network.
TINY_ARCHITECTURE, TINY_WIDTH = 'mobilenet_v1', 0.25

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 2 u: 1.19e-7


def sum_rtol(terms: int, dtype=np.float32) -> float:
  """Relative tolerance between two orderings of one sum of `terms` terms:
  each is within sqrt(terms) * eps of the exact sum (probabilistic bound,
  with a factor 2 of headroom), so they are within twice that."""
  return 2 * 2 * math.sqrt(max(terms, 1)) * float(np.finfo(dtype).eps)


def network_rtol(depth: int, fan_in: int, dtype=np.float32) -> float:
  """Relative tolerance between two formulations of a network of `depth`
  layers whose largest sum has `fan_in` terms (a convolution's
  kh * kw * input channels): the layers' independent errors add in
  quadrature. For the tiny digits classifier (53 kernels, fan-in 1,280)
  it is 1.2e-4; two roundings of its loss part by about 1e-6."""
  return math.sqrt(depth) * sum_rtol(fan_in, dtype)


def network_shape(params) -> tuple[int, int]:
  """(depth, largest fan-in) of a network's parameters: the number of
  convolution and dense kernels, and the largest product of a kernel's
  input dimensions."""
  kernels = [
    leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    if getattr(path[-1], 'key', None) == 'kernel'
  ]
  fan_in = max(int(np.prod(np.shape(k)[:-1])) for k in kernels)
  return len(kernels), fan_in


def elementwise_atol(operations: int, magnitude: float, dtype=np.float32):
  """Absolute tolerance for `operations` elementwise float operations on
  values of up to `magnitude`: one rounding each, twice over (two
  formulations). Needed beside a relative tolerance wherever a result can
  cancel to near zero (x - mean, logsumexp(z) - z)."""
  return 2 * operations * float(np.finfo(dtype).eps) * magnitude


# ------------------------------------------------------ scripts and configs


def load_script(path: str, name: str | None = None) -> ModuleType:
  """A script of the repository (configs/, experiments/, a workdir's
  config.py) as a module, without putting its folder on sys.path."""
  name = name or os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses and pickling look modules up
  spec.loader.exec_module(module)
  return module


def config_file(name: str, *args) -> ml_collections.ConfigDict:
  """get_config(*args) of configs/<name>.py."""
  path = os.path.join(REPO_ROOT, 'configs', f'{name}.py')
  return configuration.load_module(path).get_config(*args)


def experiment_script(name: str) -> ModuleType:
  """experiments/<name>.py as a module."""
  return load_script(os.path.join(REPO_ROOT, 'experiments', f'{name}.py'))


# ------------------------------------------------------ tiny configs and data


def tiny_digits_config(**overrides) -> ml_collections.ConfigDict:
  """configs/quickstart.py shrunk to a few steps of the tiny network at 32x32."""
  config = config_file('quickstart')
  config.model.architecture = TINY_ARCHITECTURE
  config.model.width_multiplier = TINY_WIDTH
  config.batch_size = 16
  config.eval_batch_size = 120
  config.num_train_steps = 4
  config.warmup_epochs = 0.0
  config.lr_schedule = 'exponential'
  # As tests/kill_resume.py's runs: the same compiled programs (the step count
  # is not part of them), which the compilation cache then serves to both.
  config.base_learning_rate = 0.01
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.eval_every_epochs = 1000.0
  config.update_from_flattened_dict(overrides)
  return config


def random_like(abstract, seed=0):
  """Random arrays of the shapes of `abstract` (BN variances positive); no
  compiled init needed."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if 'var' in jax.tree_util.keystr(path):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
    return (0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def random_digits_workdir(
  path, architecture='mobilenet_v2', width=0.35, **model_options
):
  """A random-weight 32x32, 10-class digits model saved as `convert` saves:
  the model the export tests check (MobileNetV2 at α=0.35 by default)."""
  config = configuration.base_config()
  config.dataset.name = 'digits'
  config.dataset.test_split = 'test'
  config.num_classes = 10
  config.image_size = 32
  config.model.architecture = architecture
  config.model.width_multiplier = width
  config.model.update(model_options)
  model = build_model(config, 10)
  abstract = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32),
  )
  variables = random_like(dict(abstract))
  importers.save(path, config, variables, source='test')
  return config, variables


def final_line(workdir, split='test') -> dict:
  """The last line of `split` in a workdir's metrics.jsonl."""
  lines = [l for l in metric_writers.read_jsonl(workdir) if l['split'] == split]
  return lines[-1]


def overfit(config, batch, steps: int):
  """Trains on `batch` for `steps` steps; returns the first and last losses
  and the task's metrics on the same batch, evaluated as evaluation runs."""
  configuration.validate(config)
  task = tasks.build_task(config)
  _, learning_rate, optimizer = optimization.build(config, len(batch['mask']))
  variables = initializers.host_variables(
    task.model, training_state.model_input_shape(config), 0, train=False
  )
  state = training_state.create_train_state(config, variables, optimizer)
  step = jax.jit(
    functools.partial(
      trainer.train_step,
      model=task.model,
      task=task,
      optimizer=optimizer,
      config=config,
      learning_rate=learning_rate,
    )
  )
  train_batch = {k: v for k, v in batch.items() if k != 'mask'}
  rng = jax.random.key(0)
  if steps >= OPTIMISE_FROM_STEPS:
    # Many steps of one program: LLVM's optimisations (off in the suite,
    # conftest.py) pay for their compile time here (the segmenter's 160
    # steps: 22 s -> 7 s, for 6 s more compiling).
    step = step.lower(state, train_batch, rng).compile(
      compiler_options=OPTIMISED_CODE
    )
  losses = []
  for _ in range(steps):
    state, metrics = step(state, train_batch, rng)
    losses.append(float(metrics['loss']))
  accumulator = task.accumulator()
  weights = {'params': state.params, 'batch_stats': state.batch_stats}
  accumulator.add(jax.jit(task.eval_step)(weights, batch), batch)
  return losses[0], losses[-1], accumulator.result()


def fixed_batch(config, size: int) -> dict:
  """The first `size` examples of the evaluation pipeline (masked as real)."""
  batch = next(datasets.eval_batches(config, per_host_batch_size=size))
  assert batch['mask'].all()
  return batch


def overfit_recipe(config, steps: int):
  """`config` set to overfit a fixed batch in `steps` steps: Adam, cosine,
  no regularisation, fast BatchNorm averages."""
  config.num_train_steps = steps
  config.optimizer = 'adam'
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 0.0
  config.weight_decay = 0.0
  config.model.dropout_rate = 0.0
  config.model.batch_norm_momentum = 0.8  # running averages catch up
  return config


def tiny_detection_config(**overrides):
  """Two steps of SSDLite 0.35 on 64x64 scenes, at most 8 boxes."""
  config = configuration.base_config()
  config.task = 'detection'
  config.dataset.name = 'scenes'
  config.dataset.eval_split = 'test'
  config.num_classes = 10
  config.image_size = 64
  config.model.width_multiplier = 0.35
  config.detection.max_boxes = 8
  config.batch_size = 8
  config.eval_batch_size = 100
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.eval_every_epochs = 1000.0
  config.update_from_flattened_dict(overrides)
  return config


def mock_coco(self, *args, **kwargs):
  """Six coco/2017-shaped examples (TFDS's automatic mock draws objects
  fields of unequal lengths): encoded JPEGs of random sizes, 0-3 objects
  each, one of them crowd, one box of zero area."""
  import tensorflow as tf

  del self, args, kwargs
  rng = np.random.default_rng(0)
  datasets = []
  for i in range(6):
    height, width = rng.integers(40, 90, size=2)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    count = i % 4
    corner = rng.uniform(0, 0.5, (count, 2))
    boxes = (
      np.concatenate([corner, corner + rng.uniform(0.1, 0.5, (count, 2))], 1)
      .clip(0, 1)
      .astype(np.float32)
    )
    if count == 3:
      boxes[2, 2] = boxes[2, 0]  # zero area
    datasets.append(
      tf.data.Dataset.from_tensors(
        {
          'image': tf.io.encode_jpeg(image),
          'image/filename': tf.constant(f'{i}.jpg'),
          'image/id': tf.constant(i + 1, tf.int64),
          'objects': {
            'area': tf.constant(rng.integers(1, 100, count), tf.int64),
            'bbox': tf.constant(boxes.reshape(count, 4)),
            'id': tf.constant(np.arange(count), tf.int64),
            'is_crowd': tf.constant(np.arange(count) == 1),
            'label': tf.constant(rng.integers(0, 80, count), tf.int64),
          },
        }
      )
    )
  ds = datasets[0]
  for other in datasets[1:]:
    ds = ds.concatenate(other)
  return ds


def tiny_scene_config(**overrides):
  """One step of Mobile DeepLabv3 0.35 (OS 16) on 64x64 scenes, validated."""
  config = configuration.base_config()
  config.task = 'segmentation'
  config.dataset.name = 'scenes'
  config.dataset.eval_split = 'test'
  config.num_classes = 11
  config.image_size = 64  # as tests/test_ssd.py: the same cached scenes
  config.model.width_multiplier = 0.35
  config.model.output_stride = 16
  config.segmentation.flip = False
  config.batch_size = 4
  config.eval_batch_size = 100
  config.num_train_steps = 1
  config.log_every_steps = 1
  config.checkpoint_every_steps = 1
  config.eval_every_epochs = 1000.0
  config.update_from_flattened_dict(overrides)
  configuration.validate(config)
  return config


def palette_png(path, mask) -> None:
  """`mask` as a palette PNG, as VOC's SegmentationClass files are."""
  from PIL import Image

  image = Image.fromarray(mask.astype(np.uint8), mode='P')
  palette = np.zeros((256, 3), np.uint8)
  palette[:21] = np.random.default_rng(0).integers(0, 255, (21, 3))
  palette[255] = 224
  image.putpalette(palette.reshape(-1).tolist())
  image.save(path)


def write_voc(root, train_ids, val_ids, sbd_ids=()):
  """A VOCdevkit tree of random JPEGs and palette masks (values 0-20 and
  255), plus SBD .mat masks for `sbd_ids`. Returns {id: mask}."""
  import scipy.io
  from PIL import Image

  rng = np.random.default_rng(0)
  voc = os.path.join(root, 'VOCdevkit', 'VOC2012')
  for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
    os.makedirs(os.path.join(voc, sub), exist_ok=True)
  masks = {}
  for name in list(train_ids) + list(val_ids) + list(sbd_ids):
    height, width = rng.integers(40, 80, size=2)
    Image.fromarray(
      rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ).save(os.path.join(voc, 'JPEGImages', name + '.jpg'))
    mask = rng.integers(0, 21, (height, width)).astype(np.uint8)
    mask[:, :3] = 255
    masks[name] = mask
    if name in sbd_ids:
      cls = os.path.join(root, 'benchmark_RELEASE', 'dataset', 'cls')
      os.makedirs(cls, exist_ok=True)
      mask[:, :3] = 0  # SBD has no ignore label
      scipy.io.savemat(
        os.path.join(cls, name + '.mat'),
        {
          'GTcls': {
            'Segmentation': mask,
            'Boundaries': np.zeros(1),
            'CategoriesPresent': np.unique(mask),
          }
        },
      )
    else:
      palette_png(os.path.join(voc, 'SegmentationClass', name + '.png'), mask)
  for split, ids in (('train', train_ids), ('val', val_ids)):
    with open(
      os.path.join(voc, 'ImageSets', 'Segmentation', split + '.txt'), 'w'
    ) as f:
      f.write('\n'.join(ids) + '\n')
  if sbd_ids:
    with open(
      os.path.join(root, 'benchmark_RELEASE', 'dataset', 'train.txt'), 'w'
    ) as f:
      f.write('\n'.join(list(sbd_ids) + [val_ids[0]]) + '\n')
  return masks


def imagenet_config(
  data_dir: str | None = None,
  seed: int = 0,
  *,
  image_dtype: str = 'float32',
  shuffle_buffer_size: int = 64,
) -> ml_collections.ConfigDict:
  """The ImageNet experiment's config (configs/imagenet_mnv2.py), small:
  32x32 images, batches of 4."""
  config = config_file('imagenet_mnv2')
  config.update_from_flattened_dict(
    {
      'dataset.data_dir': data_dir,
      'dataset.shuffle_buffer_size': shuffle_buffer_size,
      'dataset.train_image_dtype': image_dtype,
      'image_size': 32,
      'seed': seed,
      'batch_size': 4,
    }
  )
  return config
