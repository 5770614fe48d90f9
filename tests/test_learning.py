"""Each task learns: a tiny network overfits a small fixed batch within a few
dozen steps, through the package's own training step and evaluation.

What they catch: a task, a loss, a training step or an evaluation that does
not learn at all, e.g. a sign error in a hand-written backward pass
(models/layers.py) or in the optimizer, which leaves the loss where it
started, or a metric that does not follow the loss.

What they do not catch: a gradient that is wrong in scale, or wrong in a few
layers. Adam divides each parameter's step by its own gradient's size, so a
gradient scaled by 2 in one layer trains the same, and a small network
memorises 16 images even with some layers' gradients wrong. Gradients are
checked exactly elsewhere: every layer's formulations against plain Flax's
autodiff in values and gradients (tests/test_layers.py), and the whole
network's gradient of every parameter in float64 against plain Flax within
1e-6 relative (tests/test_layers.py::test_network_formulations_match_plain_flax).
"""

import functools

import jax

from mnv2_jax import configuration
from mnv2_jax import tasks
from mnv2_jax.data import datasets
from mnv2_jax.models import initializers
from mnv2_jax.training import optimization
from mnv2_jax.training import state as training_state
from mnv2_jax.training import trainer


def _overfit(config, batch, steps: int):
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
  losses = []
  for _ in range(steps):
    state, metrics = step(state, train_batch, rng)
    losses.append(float(metrics['loss']))
  accumulator = task.accumulator()
  weights = {'params': state.params, 'batch_stats': state.batch_stats}
  accumulator.add(jax.jit(task.eval_step)(weights, batch), batch)
  return losses[0], losses[-1], accumulator.result()


def _fixed_batch(config, size: int) -> dict:
  """The first `size` examples of the evaluation pipeline (masked as real)."""
  batch = next(datasets.eval_batches(config, per_host_batch_size=size))
  assert batch['mask'].all()
  return batch


def _common(config, steps: int):
  config.num_train_steps = steps
  config.optimizer = 'adam'
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 0.0
  config.weight_decay = 0.0
  config.model.dropout_rate = 0.0
  config.model.batch_norm_momentum = 0.8  # running averages catch up
  return config


def test_classifier_overfits_a_batch():
  config = configuration.base_config()
  config.dataset.name = 'digits'
  config.dataset.eval_split = 'train'
  config.num_classes = 10
  config.image_size = 32
  config.model.width_multiplier = 0.35
  config = _common(config, steps=40)
  config.base_batch_size = 16
  config.base_learning_rate = 0.01
  batch = _fixed_batch(config, 16)
  first, last, metrics = _overfit(config, batch, 40)
  # Measured: loss 2.37 -> 0.0085, top-1 1.0 (bars set with margin).
  assert last < first / 10, (first, last)
  assert metrics['top1'] > 0.9, metrics


def test_detector_overfits_a_batch(small_scenes):
  del small_scenes
  config = configuration.base_config()
  config.task = 'detection'
  config.dataset.name = 'scenes'
  config.dataset.eval_split = 'train'
  config.num_classes = 10
  config.image_size = 64
  config.model.width_multiplier = 0.35
  config.detection.max_boxes = 8
  config = _common(config, steps=80)
  config.base_batch_size = 4
  config.base_learning_rate = 0.01
  batch = _fixed_batch(config, 4)
  first, last, metrics = _overfit(config, batch, 80)
  # Measured: loss 42.6 -> 0.045, AP50 1.0 (COCO's evaluator).
  assert last < first / 20, (first, last)
  assert metrics['AP50'] > 0.8, metrics


def test_segmenter_overfits_a_batch(small_scenes):
  del small_scenes
  config = configuration.base_config()
  config.task = 'segmentation'
  config.dataset.name = 'scenes'
  config.dataset.eval_split = 'train'
  config.num_classes = 11
  config.image_size = 65
  config.model.width_multiplier = 0.35
  config.model.output_stride = 8
  config.segmentation.flip = False
  config = _common(config, steps=160)
  config.base_batch_size = 4
  config.base_learning_rate = 0.01
  batch = _fixed_batch(config, 4)
  first, last, metrics = _overfit(config, batch, 160)
  # Measured: loss 2.53 -> 0.044, mIoU 0.906 (at 9x9 logits, a digit's
  # strokes are a few output pixels wide).
  assert last < first / 10, (first, last)
  assert metrics['mIoU'] > 0.8, metrics
