"""The training state and how a run's first state is made.

A new run's variables are drawn on the host (models.initializers), its
optimizer slots made by XLA:CPU, and the whole state replicated over the
mesh: a run compiles nothing for its accelerator before its first step but
the step itself. `initialize_from` copies another workdir's weights in
(fine-tuning, imported weights).
"""

from __future__ import annotations

import functools
from typing import Any
from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from mnv2_jax.training import checkpointing

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  # Exponential moving average of params and BatchNorm statistics (the
  # released recipe evaluates these); None when config.ema_decay == 0.
  ema_params: Optional[PyTree]
  ema_batch_stats: Optional[PyTree]


def create_train_state(
  config, variables: PyTree, optimizer: optax.GradientTransformation
) -> TrainState:
  """A step-0 state holding `variables` ({'params', 'batch_stats'}), fresh
  optimizer slots and, with `config.ema_decay`, the moving average's copy.
  Pure; used for new runs (`Trainer.init_state`) and imported weights
  (importers.save)."""
  params, batch_stats = variables['params'], variables['batch_stats']
  ema = config.ema_decay > 0
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=optimizer.init(params),
    ema_params=params if ema else None,
    ema_batch_stats=batch_stats if ema else None,
  )


def model_input_shape(config) -> tuple[int, int, int, int]:
  """The image batch shape a model is initialised with (one image)."""
  return (1, config.image_size, config.image_size, 3)


def abstract_variables(config, model: nn.Module) -> PyTree:
  """Shapes and dtypes of `model`'s variables (traced, nothing computed)."""
  return jax.eval_shape(
    functools.partial(model.init, train=False),
    jax.random.key(0),
    jax.ShapeDtypeStruct(model_input_shape(config), jnp.float32),
  )


def host_cpu_device() -> Optional[jax.Device]:
  """This host's first CPU device, or None where JAX runs without one."""
  try:
    return jax.local_devices(backend='cpu')[0]
  except RuntimeError:
    return None


def replicate(tree: PyTree, sharding: NamedSharding) -> PyTree:
  """Host arrays (the same on every host) as global arrays with `sharding`
  (replicated): every host fills its own devices."""

  def put(value):
    value = np.asarray(value)
    return jax.make_array_from_callback(
      value.shape, sharding, lambda index: value[index]
    )

  return jax.tree.map(put, tree)


BACKBONE_PREFIX = "['backbone']"  # ssd.SSDLite's MobileNetV2


def initialize_from(state: TrainState, workdir: str) -> tuple[TrainState, str]:
  """Copies the weights of `workdir`'s latest checkpoint into `state`.

  Every parameter and BatchNorm statistic whose name and shape match is
  copied (also into the EMA copy); a detector's `backbone/...` arrays also
  match a classifier's top-level ones. The others (a classifier for another
  number of classes, detection heads) keep their initialisation. Returns the
  new state and a one-line report.

  Raises:
    ValueError: nothing matches (a checkpoint of another model).
  """
  step, source = checkpointing.read_variables(workdir)
  copied, kept = [], []

  def merge(tree, source_tree):
    flat_source = {
      jax.tree_util.keystr(path): value
      for path, value in jax.tree_util.tree_flatten_with_path(source_tree)[0]
    }

    def pick(path, value):
      name = jax.tree_util.keystr(path)
      found = flat_source.get(name)
      if found is None and name.startswith(BACKBONE_PREFIX):
        # A detector's backbone from a classifier's checkpoint.
        found = flat_source.get(name[len(BACKBONE_PREFIX) :])
      if found is not None and np.shape(found) == value.shape:
        copied.append(name)
        return jnp.asarray(found, value.dtype)
      kept.append(
        name
        + (
          ''
          if found is None
          else f' (shape {np.shape(found)} there, {value.shape} here)'
        )
      )
      return value

    return jax.tree_util.tree_map_with_path(pick, tree)

  params = merge(state.params, source['params'])
  batch_stats = merge(state.batch_stats, source['batch_stats'])
  if not copied:
    raise ValueError(
      f'config.init_from={workdir!r}: none of its arrays match this model '
      f'by name and shape (e.g. here: {kept[:3]}). Was it written for '
      'another architecture?'
    )
  state = state.replace(params=params, batch_stats=batch_stats)
  if state.ema_params is not None:
    state = state.replace(ema_params=params, ema_batch_stats=batch_stats)
  report = (
    f'Initialised {len(copied)} arrays from {workdir} (step {step})'
    + (
      f'; kept the initialisation of {len(kept)}: '
      + ', '.join(kept[:8])
      + (' ...' if len(kept) > 8 else '')
      if kept
      else ''
    )
    + '.'
  )
  return state, report
