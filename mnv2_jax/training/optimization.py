"""Optimisation: run length, learning-rate schedule, optimizer, weight decay
and the weight average, all from the config.

The paper's recipe (§6.1): RMSProp with decay 0.9 and momentum 0.9, learning
rate 0.045 decayed x0.98 per epoch, weight decay 4e-5. Durations are epochs in
the config and become steps in one place (`make_schedule`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Run length in steps: the one place epochs become steps."""

  steps_per_epoch: int
  total_steps: int
  warmup_steps: int
  decay_steps: int
  eval_every_steps: int


MAX_STEPS = 2**31  # TrainState.step is int32


def make_schedule(config, num_train_examples: int) -> Schedule:
  steps_per_epoch = max(1, num_train_examples // config.batch_size)
  if config.num_train_steps > 0:
    total, field = config.num_train_steps, 'num_train_steps'
  else:
    total = int(math.ceil(config.num_epochs * steps_per_epoch))
    field = 'num_epochs'
  if total >= MAX_STEPS:
    raise ValueError(
      f'config.{field}={config[field]!r} is invalid: it makes {total} steps '
      f'of {config.batch_size} images, more than the int32 step counter '
      f'holds ({MAX_STEPS - 1}). Fix it in the config file or with '
      f'--config.{field}={1000 if field == "num_epochs" else 100_000}.'
    )
  return Schedule(
    steps_per_epoch=steps_per_epoch,
    total_steps=total,
    warmup_steps=int(config.warmup_epochs * steps_per_epoch),
    decay_steps=max(1, int(config.lr_decay_epochs * steps_per_epoch)),
    eval_every_steps=max(1, int(config.eval_every_epochs * steps_per_epoch)),
  )


POLY_POWER = 0.9  # DeepLab's learning_power


def learning_rate_fn(config, schedule: Schedule) -> optax.Schedule:
  """Peak lr = base_learning_rate x batch_size / base_batch_size (linear
  scaling); optional linear warm-up; then x0.98 per epoch (paper §6.1,
  staircase), cosine to zero, or DeepLab's 'poly': (1 - step / total)^0.9."""
  peak = config.base_learning_rate * config.batch_size / config.base_batch_size
  if config.lr_schedule == 'poly':
    poly = optax.polynomial_schedule(
      peak,
      0.0,
      POLY_POWER,
      max(schedule.total_steps - schedule.warmup_steps, 1),
    )
    if not schedule.warmup_steps:
      return poly
    return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, schedule.warmup_steps), poly],
      [schedule.warmup_steps],
    )
  if config.lr_schedule == 'exponential':
    return optax.warmup_exponential_decay_schedule(
      init_value=0.0 if schedule.warmup_steps else peak,
      peak_value=peak,
      warmup_steps=schedule.warmup_steps,
      transition_steps=schedule.decay_steps,
      decay_rate=config.lr_decay_rate,
      staircase=True,
    )
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0 if schedule.warmup_steps else peak,
    peak_value=peak,
    warmup_steps=schedule.warmup_steps,
    decay_steps=max(schedule.total_steps, schedule.warmup_steps + 1),
  )


def create_optimizer(
  config, learning_rate: optax.Schedule
) -> optax.GradientTransformation:
  if config.optimizer == 'rmsprop':
    return optax.rmsprop(
      learning_rate,
      decay=config.rmsprop_decay,
      eps=config.rmsprop_epsilon,
      initial_scale=config.rmsprop_initial_scale,
      eps_in_sqrt=True,
      momentum=config.momentum,
    )
  if config.optimizer == 'adam':
    # Not a paper recipe: from-scratch runs of minutes (the CPU quickstarts).
    return optax.adam(
      learning_rate,
      b1=config.momentum,
      b2=config.adam_b2,
      eps=config.adam_epsilon,
    )
  return optax.sgd(learning_rate, momentum=config.momentum, nesterov=True)


def weight_decay_mask(params: PyTree) -> PyTree:
  """True for conv and dense kernels, except depthwise kernels (TF-slim does
  not regularise them); BatchNorm scales and biases are never decayed."""

  def is_decayed(path, _):
    names = [getattr(entry, 'key', '') for entry in path]
    return names[-1] == 'kernel' and 'depthwise' not in names

  return jax.tree_util.tree_map_with_path(is_decayed, params)


def l2_penalty(params: PyTree, mask: PyTree) -> jax.Array:
  """sum(w^2) / 2 over the masked kernels: TF's l2_regularizer."""
  leaves = [
    jnp.sum(jnp.square(p))
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
    if m
  ]
  return 0.5 * sum(leaves)


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
  """TF's ExponentialMovingAverage with num_updates: min(decay, (1+n)/(10+n))."""
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def build(
  config, num_train_examples: int
) -> tuple[Schedule, optax.Schedule, optax.GradientTransformation]:
  """The run's schedule, learning rate and optimizer, from the config."""
  schedule = make_schedule(config, num_train_examples)
  learning_rate = learning_rate_fn(config, schedule)
  return schedule, learning_rate, create_optimizer(config, learning_rate)
