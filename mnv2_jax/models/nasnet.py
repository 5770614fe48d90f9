"""NASNet-A (Zoph et al., 2017) in its mobile ImageNet size, a peer of paper
Table 4 ("NasNet-A", 5.3M parameters, 564M multiply-adds).

The network is NASNet's "N @ F" family: N normal cells per stack, F the
penultimate layer's channels (6 × the last stack's filters), built as the
NASNet paper's Figure 2 and Appendix A and the TF-slim release
(`nets/nasnet`) lay it out, whose structure this follows:

- a 3x3 convolution (stride 2, no padding, 32 channels, BatchNorm) and two
  stride-2 reduction cells with a quarter and a half of the filters (the
  ImageNet stem);
- three stacks of N normal cells, a reduction cell (twice the filters,
  stride 2) before the second and the third;
- ReLU, global average pooling, dropout and the classifier.

A cell takes the two previous cells' outputs, h_i (this one's input) and
h_{i-1}, brings both to its filter count (ReLU, 1x1 convolution,
BatchNorm; the older one through a factorized reduction where its size is
twice h_i's), and combines them in five pairs of operations
(`NORMAL_CELL`, `REDUCTION_CELL`: separable 3x3 / 5x5 / 7x7 stacks, 3x3
pools, the identity), each pair added. The cell's output is the
concatenation of every state no pair read: 6 × filters for a normal cell,
4 × for a reduction cell. A separable stack is twice ReLU, a depthwise
KxK convolution, a 1x1 convolution and BatchNorm (the first with the
cell's stride). The auxiliary head of NASNet's training is not built: it is
not part of the inference network the counts of Table 4 describe; nor is
drop-path, whose keep probability is 1 for the mobile size.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import layers

Array = jax.Array

STEM_CHANNELS = 32
STEM_CELLS = 2
FILTER_SCALING = 2


@dataclasses.dataclass(frozen=True)
class CellSpec:
  """A NASNet-A cell: five pairs of (operation, input state index); state 0
  is h_i after its 1x1 convolution, state 1 is h_{i-1}, state 2 + k the k-th
  pair's sum. The output concatenates the states `concatenated` (the
  release's choice, which keeps h_{i-1} in a normal cell's output though
  pairs read it)."""

  pairs: tuple[tuple[tuple[str, int], tuple[str, int]], ...]
  concatenated: tuple[int, ...]


# NASNet's Figure 4 (NASNet-A), in the TF-slim release's order.
NORMAL_CELL = CellSpec(
  pairs=(
    (('separable_5x5', 0), ('separable_3x3', 1)),
    (('separable_5x5', 1), ('separable_3x3', 1)),
    (('avg_pool_3x3', 0), ('identity', 1)),
    (('avg_pool_3x3', 1), ('avg_pool_3x3', 1)),
    (('separable_3x3', 0), ('identity', 0)),
  ),
  concatenated=(1, 2, 3, 4, 5, 6),
)
REDUCTION_CELL = CellSpec(
  pairs=(
    (('separable_5x5', 0), ('separable_7x7', 1)),
    (('max_pool_3x3', 0), ('separable_7x7', 1)),
    (('avg_pool_3x3', 0), ('separable_5x5', 1)),
    (('identity', 3), ('avg_pool_3x3', 2)),
    (('separable_3x3', 2), ('max_pool_3x3', 0)),
  ),
  concatenated=(3, 4, 5, 6),
)


class FactorizedReduction(nn.Module):
  """Halves the spatial size without discarding every other pixel: two 1x1
  convolutions of half the filters each, on the input subsampled at even and
  at odd positions, concatenated, then BatchNorm (NASNet's release)."""

  features: int
  conv: functools.partial
  norm: functools.partial

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    first = self.features // 2
    even = inputs[:, ::2, ::2, :]
    # Shifted by one pixel, padded with zeros at the bottom and right.
    shifted = jnp.pad(inputs, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:, :]
    odd = shifted[:, ::2, ::2, :]
    x = jnp.concatenate(
      [
        self.conv(first, name='path1_conv')(even),
        self.conv(self.features - first, name='path2_conv')(odd),
      ],
      axis=-1,
    )
    return self.norm(name='bn', relu6=False)(x)


class SeparableStack(nn.Module):
  """Twice ReLU, a KxK depthwise and a 1x1 convolution, BatchNorm; the
  first with `stride`."""

  features: int
  kernel_size: int
  stride: int
  conv: functools.partial
  depthwise_conv: functools.partial
  norm: functools.partial

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    x = inputs
    for repeat, stride in enumerate((self.stride, 1), 1):
      x = nn.relu(x)
      x = self.depthwise_conv(
        kernel_size=self.kernel_size, strides=stride, name=f'depthwise_{repeat}'
      )(x)
      x = self.conv(self.features, name=f'pointwise_{repeat}')(x)
      x = self.norm(name=f'bn_{repeat}', relu6=False)(x)
    return x


def _pool(inputs: Array, kind: str, stride: int, implementation: str) -> Array:
  if kind == 'max':
    return nn.max_pool(inputs, (3, 3), (stride, stride), padding='SAME')
  return layers.average_pool(inputs, 3, stride, 'same', implementation)


class Cell(nn.Module):
  """One NASNet-A cell (`CellSpec`) of `features` filters."""

  spec: CellSpec
  features: int
  stride: int
  conv: functools.partial
  depthwise_conv: functools.partial
  norm: functools.partial
  implementation: str = 'auto'  # of the average pools (layers.average_pool)

  def _conv_bn(self, x, name, stride=1):
    x = self.conv(self.features, strides=stride, name=f'{name}_conv')(x)
    return self.norm(name=f'{name}_bn', relu6=False)(x)

  def _operation(self, x, operation: str, stride: int, name: str) -> Array:
    if operation.startswith('separable'):
      return SeparableStack(
        self.features,
        int(operation[-1]),
        stride,
        self.conv,
        self.depthwise_conv,
        self.norm,
        name=name,
      )(x)
    if operation == 'identity':
      if stride > 1 or x.shape[-1] != self.features:
        return self._conv_bn(nn.relu(x), name, stride)
      return x
    x = _pool(x, operation.split('_')[0], stride, self.implementation)
    if x.shape[-1] != self.features:
      x = self._conv_bn(x, name)
    return x

  @nn.compact
  def __call__(self, current: Array, previous: Optional[Array]) -> Array:
    if previous is None:  # the first stem cell: h_{i-1} is h_i, as it is
      previous = current
    elif previous.shape[1] != current.shape[1]:
      previous = FactorizedReduction(
        self.features, self.conv, self.norm, name='previous_reduction'
      )(nn.relu(previous))
    elif previous.shape[-1] != self.features:
      previous = self._conv_bn(nn.relu(previous), 'previous')
    states = [self._conv_bn(nn.relu(current), 'input'), previous]
    for index, pair in enumerate(self.spec.pairs):
      total = 0
      for side, (operation, state) in zip(('left', 'right'), pair):
        # Only the cell's inputs are strided; later states are already
        # reduced.
        stride = self.stride if state < 2 else 1
        total = total + self._operation(
          states[state], operation, stride, f'pair_{index}_{side}'
        )
      states.append(total)
    final = states[-1]
    outputs = []
    for index in self.spec.concatenated:
      state = states[index]
      if state.shape[1] != final.shape[1]:
        state = FactorizedReduction(
          final.shape[-1], self.conv, self.norm, name=f'reduction_{index}'
        )(state)
      elif state.shape[-1] != final.shape[-1]:
        state = self._conv_bn(state, f'reduction_{index}')
      outputs.append(state)
    return jnp.concatenate(outputs, axis=-1)


class NASNetA(nn.Module):
  """NASNet-A "N @ F" for ImageNet-sized inputs; F = 6 · 4 · filters.

  Attributes:
    num_classes: classifier outputs; 0 builds the backbone without it.
    filters: the first stack's filters (44 for NASNet-A Mobile, 4 @ 1056).
    cells_per_stack: N, normal cells per stack (4 for the mobile size).
    dropout_rate: dropout before the classifier (the release: 0.5).
    batch_norm_momentum, batch_norm_epsilon, padding, dtype, implementation:
      as in MobileNetV2 (the same layers and formulations).
  """

  num_classes: int = 1000
  filters: int = 44
  cells_per_stack: int = 4
  dropout_rate: float = 0.0
  batch_norm_momentum: float = 0.9997
  batch_norm_epsilon: float = 1e-3
  padding: str = 'same'
  dtype: str = 'float32'
  implementation: str = 'auto'
  width_multiplier: float = 1.0  # not used; statistics read it

  @nn.compact
  def __call__(
    self, images: Array, train: bool = False
  ) -> tuple[Array, dict[str, Array]]:
    """Returns logits [N, num_classes] (features if num_classes == 0), endpoints."""
    norm, conv, depthwise_conv = layers.network_factories(self, train=train)
    endpoints = {}
    x = conv(
      STEM_CHANNELS, kernel_size=3, strides=2, padding='valid', name='conv0'
    )(images.astype(layers.DTYPES[self.dtype]))
    x = norm(name='conv0_bn', relu6=False)(x)
    endpoints['conv0'] = x
    cell = functools.partial(
      Cell,
      conv=conv,
      depthwise_conv=depthwise_conv,
      norm=norm,
      implementation=self.implementation,
    )
    outputs = [None, x]
    for index in range(STEM_CELLS):
      features = self.filters // FILTER_SCALING ** (STEM_CELLS - index)
      x = cell(REDUCTION_CELL, features, 2, name=f'cell_stem_{index}')(
        x, outputs[-2]
      )
      endpoints[f'cell_stem_{index}'] = x
      outputs.append(x)
    features = self.filters
    for stack in range(3):
      if stack:
        features *= FILTER_SCALING
        x = cell(
          REDUCTION_CELL, features, 2, name=f'reduction_cell_{stack - 1}'
        )(x, outputs[-2])
        endpoints[f'reduction_cell_{stack - 1}'] = x
        outputs.append(x)
      for repeat in range(self.cells_per_stack):
        number = stack * self.cells_per_stack + repeat
        x = cell(NORMAL_CELL, features, 1, name=f'cell_{number}')(
          x, outputs[-2]
        )
        endpoints[f'cell_{number}'] = x
        outputs.append(x)
    x = nn.relu(x)
    return layers.pooled_classifier(
      x, self.num_classes, self.dropout_rate, train, endpoints
    )
