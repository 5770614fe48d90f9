"""Parameter and multiply-add counts, checked against the paper and the release.

Multiply-adds are counted from the traced computation (every convolution and
matrix product of one forward pass of one image; BatchNorm, activations,
pooling and bias adds are not counted), so they follow whatever the config
builds. `grid_statistics` rebuilds the 22 released TF-slim checkpoints
(docs/paper.md) and counts them as the release does: conv and classifier
weights with a 1001-class head, no BatchNorm parameters, MACs truncated to
whole millions. `memory_table` is Table 3 by the rule of paper §5.1, and
`activation_traffic` the least memory traffic of a training step (the
roofline of benchmarks/speed.py). `python -m mnv2_jax.stats` prints them.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mnv2_jax.models import deeplab
from mnv2_jax.models import layers
from mnv2_jax.models import mobilenet_v2

# TF-slim README (docs/paper.md): (α, resolution) -> (top-1, top-5, million MACs);
# parameters per α in millions.
PUBLISHED_PARAMS_MILLIONS = {
  1.4: 6.06,
  1.3: 5.34,
  1.0: 3.47,
  0.75: 2.61,
  0.5: 1.95,
  0.35: 1.66,
}
PUBLISHED_GRID = {
  (1.4, 224): (75.0, 92.5, 582),
  (1.3, 224): (74.4, 92.1, 509),
  (1.0, 224): (71.8, 91.0, 300),
  (1.0, 192): (70.7, 90.1, 221),
  (1.0, 160): (68.8, 89.0, 154),
  (1.0, 128): (65.3, 86.9, 99),
  (1.0, 96): (60.3, 83.2, 56),
  (0.75, 224): (69.8, 89.6, 209),
  (0.75, 192): (68.7, 88.9, 153),
  (0.75, 160): (66.4, 87.3, 107),
  (0.75, 128): (63.2, 85.3, 69),
  (0.75, 96): (58.8, 81.6, 39),
  (0.5, 224): (65.4, 86.4, 97),
  (0.5, 192): (63.9, 85.4, 71),
  (0.5, 160): (61.0, 83.2, 50),
  (0.5, 128): (57.7, 80.8, 32),
  (0.5, 96): (51.2, 75.8, 18),
  (0.35, 224): (60.3, 82.9, 59),
  (0.35, 192): (58.2, 81.2, 43),
  (0.35, 160): (55.7, 79.1, 30),
  (0.35, 128): (50.8, 75.0, 20),
  (0.35, 96): (45.5, 70.4, 11),
}
RELEASE_NUM_CLASSES = 1001  # class 0 is "background" in the released models


def _sub_jaxprs(params: dict[str, Any]):
  for value in params.values():
    for item in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def _space_to_batch_elements(shape, out_spec, rates) -> int:
  """Output elements of an atrous convolution computed the way TensorFlow
  runs it (SpaceToBatchND, conv, BatchToSpaceND): every spatial size is
  padded up to a multiple of the rate, and the padding is computed too."""
  sizes = list(shape)
  for dim, rate in zip(out_spec[2:], rates):
    sizes[dim] = rate * -(-sizes[dim] // rate)
  return math.prod(sizes)


def _is_pooling(eqn) -> bool:
  return layers.POOLING_SCOPE in str(eqn.source_info.name_stack).split('/')


def count_multiply_adds(jaxpr, space_to_batch: bool = False) -> int:
  """Multiply-adds of every convolution and matrix product in a jaxpr.

  With `space_to_batch`, atrous convolutions count the positions TensorFlow's
  SpaceToBatchND implementation computes; this reproduces the paper's
  DeepLab ASPP figures (5.8B, 387B) within 0.4%, where the plain count is
  7.5% and 15% lower (see README, Segmentation).
  """
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated' and _is_pooling(eqn):
      pass  # layers.average_pool as a convolution: not counted
    elif name == 'conv_general_dilated':
      out_elements = math.prod(eqn.outvars[0].aval.shape)
      lhs_spec, rhs_spec, out_spec = eqn.params['dimension_numbers']
      rates = eqn.params['rhs_dilation']
      if space_to_batch and any(rate > 1 for rate in rates):
        out_elements = _space_to_batch_elements(
          eqn.outvars[0].aval.shape, out_spec, rates
        )
      kernel_shape = eqn.invars[1].aval.shape
      # Per output element: kernel window x input channels of one group.
      spatial = math.prod(kernel_shape[d] for d in rhs_spec[2:])
      total += out_elements * spatial * kernel_shape[rhs_spec[1]]
    elif name == 'dot_general':
      (lhs_contract, _), _ = eqn.params['dimension_numbers']
      lhs_shape = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(
        lhs_shape[d] for d in lhs_contract
      )
    for sub in _sub_jaxprs(eqn.params):
      total += count_multiply_adds(sub, space_to_batch)
  return total


def count_conv_outputs(jaxpr) -> int:
  """Output elements of every convolution in a jaxpr: the tensors that the
  BatchNorm after each one (paper §6.1) must see whole in training."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      total += math.prod(eqn.outvars[0].aval.shape)
    for sub in _sub_jaxprs(eqn.params):
      total += count_conv_outputs(sub)
  return total


# Memory accesses per convolution output element in a training step, at the
# least: written once (a BatchNorm in training mode needs the whole batch's
# statistics before it can normalise, so the output must reach memory), read
# once by the next layer (normalisation and ReLU6 fused into its input),
# read once more in the backward pass; its gradient written once and read
# once. Inference folds BatchNorm into the convolution: written once, read
# once.
TRAINING_ACCESSES = 5
INFERENCE_ACCESSES = 2


def activation_traffic(
  model, image_size: int, bytes_per_element: int
) -> dict[str, int]:
  """The least memory traffic of one image's activations (bytes) in a
  training step and in inference, by the access counts above. Weights and
  their gradients are left out (per image they shrink with the batch)."""
  model = model.clone(implementation='xla')
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  jaxpr = jax.make_jaxpr(model.apply)(variables, images).jaxpr
  elements = count_conv_outputs(jaxpr)
  return {
    'conv_output_elements': elements,
    'training_bytes': TRAINING_ACCESSES * elements * bytes_per_element,
    'inference_bytes': INFERENCE_ACCESSES * elements * bytes_per_element,
  }


def _tree_size(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _batch_norm_parameters(params) -> int:
  """BatchNorm scale and bias entries (the release does not count them):
  every module whose parameters are exactly a scale and a bias."""
  if not isinstance(params, dict):
    return 0
  if set(params) == {'scale', 'bias'}:
    return _tree_size(params)
  return sum(_batch_norm_parameters(value) for value in params.values())


MODEL_NAMES = {
  'MobileNetV2': 'MobileNetV2',
  'MobileNetV1': 'MobileNetV1',
  'ShuffleNet': 'ShuffleNet',
  'NASNetA': 'NASNet-A',
}
HEAD_NAMES = {'SSDLite': 'SSDLite', 'MobileDeepLabV3': 'DeepLabv3'}
BACKBONE_NAMES = {
  'mobilenet_v2': 'MobileNetV2',
  'mobilenet_v1': 'MobileNetV1',
  'resnet_50': 'ResNet-50',
  'resnet_101': 'ResNet-101',
}


def model_name(model) -> str:
  """'MobileNetV1', or a head on its backbone: 'MobileNetV1 + SSDLite'."""
  kind = type(model).__name__
  if kind in HEAD_NAMES:
    backbone = BACKBONE_NAMES[model.backbone_architecture]
    return f'{backbone} + {HEAD_NAMES[kind]}'
  return MODEL_NAMES.get(kind, kind)


def multi_scale_multiply_adds(
  model, image_size: int, scales, flip: bool
) -> dict[str, int]:
  """Multiply-adds of multi-scale (+ flip) inference of one image (Table 7's
  MF rows): one forward pass per scale at DeepLab's scaled size, twice with
  the flip."""
  per_scale = [
    model_statistics(model, deeplab.scaled_size(image_size, scale))
    for scale in scales
  ]
  passes = 2 if flip else 1
  return {
    key: passes * sum(stats[key] for stats in per_scale)
    for key in ('multiply_adds', 'multiply_adds_space_to_batch')
  }


@functools.lru_cache(maxsize=64)
def _variable_shapes(model, image_size: int):
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)


# Traced shapes, by model: a network's parameters do not depend on the image
# size (every one here is convolutional up to a global pool), so the
# multi-scale counts trace `init` once, at the first size asked for.
_FIRST_SIZE: dict[Any, int] = {}


def model_statistics(model, image_size: int) -> dict[str, Any]:
  """Counts of one model at one square resolution (batch of one image).

  Computed once per (model, image_size) in a process: Flax modules compare
  and hash by their attributes."""
  return copy.deepcopy(_model_statistics(model, image_size))


@functools.lru_cache(maxsize=256)
def _model_statistics(model, image_size: int) -> dict[str, Any]:
  # Count with XLA's convolution ops: the CPU formulations are the same
  # arithmetic spread over slices and elementwise ops the counter does not see.
  model = model.clone(implementation='xla')
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = _variable_shapes(model, _FIRST_SIZE.setdefault(model, image_size))
  closed, outputs = jax.make_jaxpr(model.apply, return_shape=True)(
    variables, images
  )
  endpoints = outputs[-1]  # MobileNetV2: (logits, endpoints); SSDLite: 3-tuple
  spatial = {
    name: value for name, value in endpoints.items() if len(value.shape) == 4
  }
  largest = max(spatial, key=lambda name: math.prod(spatial[name].shape))
  trainable = _tree_size(variables['params'])
  return {
    'model': model_name(model),
    'image_size': image_size,
    'width_multiplier': model.width_multiplier,
    'num_classes': model.num_classes,
    'trainable_parameters': trainable,
    'all_parameters': trainable + _tree_size(variables.get('batch_stats', {})),
    'parameters_without_batch_norm': (
      trainable - _batch_norm_parameters(variables['params'])
    ),
    'multiply_adds': count_multiply_adds(closed.jaxpr),
    'multiply_adds_space_to_batch': count_multiply_adds(
      closed.jaxpr, space_to_batch=True
    ),
    'largest_activation': {
      'name': largest,
      'shape': list(spatial[largest].shape[1:]),
      'elements': math.prod(spatial[largest].shape[1:]),
    },
  }


def grid_statistics() -> list[dict[str, Any]]:
  """The 22 released checkpoints, counted as the release counts them."""
  rows = []
  for (alpha, resolution), (top1, top5, macs) in PUBLISHED_GRID.items():
    stats = model_statistics(
      mobilenet_v2.MobileNetV2(
        num_classes=RELEASE_NUM_CLASSES, width_multiplier=alpha
      ),
      resolution,
    )
    params_millions = round(stats['parameters_without_batch_norm'] / 1e6, 2)
    macs_millions = stats['multiply_adds'] // 10**6  # truncated, as published
    rows.append(
      {
        'width_multiplier': alpha,
        'resolution': resolution,
        'parameters': stats['parameters_without_batch_norm'],
        'parameters_millions': params_millions,
        'published_parameters_millions': PUBLISHED_PARAMS_MILLIONS[alpha],
        'multiply_adds': stats['multiply_adds'],
        'multiply_adds_millions': macs_millions,
        'published_multiply_adds_millions': macs,
        'published_top1': top1,
        'published_top5': top5,
        'matches': (
          params_millions == PUBLISHED_PARAMS_MILLIONS[alpha]
          and macs_millions == macs
        ),
      }
    )
  return rows


# Paper Table 3, MobileNetV2 column: resolution -> (max channels, memory in
# KB of 16-bit activations); the network's maximum is 400K.
PAPER_TABLE3 = {
  112: (16, 400),
  56: (32, 200),
  28: (64, 100),
  14: (160, 62),
  7: (320, 32),
  1: (1280, 2),
}
PAPER_TABLE3_MAX_KB = 400


def memory_table(
  width_multiplier: float = 1.0, image_size: int = 224, bytes_per_value: int = 2
) -> list[dict[str, Any]]:
  """Table 3 of the paper by its rule (§5.1), one row per resolution.

  Treating each inverted residual as one operation whose expanded tensor is
  never materialised whole (`model.split_inverted_residual`), the memory
  inference needs is set by the bottleneck tensors, the thin tensors that
  flow between blocks. Per resolution: the widest bottleneck tensor there
  (a block's output, at its own resolution; 1x1: the pooled 1280 features)
  and its size at 16 bits, 1 KB = 1000 bytes. `table2_channels` is the other
  reading the paper's rows fit: for each input resolution of Table 2's
  bottleneck rows, the widest output c of a row reading it.
  """
  rows: dict[int, dict[str, Any]] = {}
  size = -(-image_size // mobilenet_v2.STEM_STRIDE)
  for block in mobilenet_v2.block_configs(width_multiplier):
    row = rows.setdefault(
      size, {'resolution': size, 'channels': 0, 'table2_channels': 0}
    )
    row['table2_channels'] = max(row['table2_channels'], block.out_channels)
    size = -(-size // block.stride)
    row = rows.setdefault(
      size, {'resolution': size, 'channels': 0, 'table2_channels': 0}
    )
    row['channels'] = max(row['channels'], block.out_channels)
  pooled = mobilenet_v2.last_conv_channels(width_multiplier)
  rows[1] = {'resolution': 1, 'channels': pooled, 'table2_channels': pooled}
  table = []
  for resolution in sorted(rows, reverse=True):
    row = rows[resolution]
    row['kilobytes'] = row['channels'] * resolution**2 * bytes_per_value / 1000
    row['table2_kilobytes'] = (
      row['table2_channels'] * resolution**2 * bytes_per_value / 1000
    )
    if image_size == 224 and width_multiplier == 1.0:
      row['paper_channels'], row['paper_kilobytes'] = PAPER_TABLE3.get(
        resolution, (None, None)
      )
    table.append(row)
  return table
