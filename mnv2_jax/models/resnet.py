"""ResNet v1 (He et al., 2016), the large backbone of paper Table 7.

Table 7 compares MobileNetV2 under DeepLabv3 with ResNet-101 (58.16M
parameters with the ASPP head). That figure is DeepLab's "ResNet-101 beta"
(the DeepLab release's `resnet_v1_101_beta`): ResNet v1 with the 7x7 stem
replaced by three 3x3 convolutions of 64, 64 and 128 channels. The original
7x7 stem gives 58.04M, the beta stem 58.16M, as counted by `stats --paper`.

Layout (TF-slim's `resnet_v1`, which DeepLab builds on):

  stem      3x3/2 conv 64, 3x3 conv 64, 3x3 conv 128 (beta), or 7x7/2 conv 64
            (original); then a 3x3/2 max pool: output stride 4
  block1-4  bottleneck units (1x1 to `bottleneck`, 3x3, 1x1 to 4·bottleneck,
            BatchNorm after each, ReLU after the sum) of 64, 128, 256, 512;
            `UNITS[depth]` of them; the 3x3 of a block's *last* unit carries
            the stride 2 of blocks 1-3 (TF-slim's convention)

The output stride works as in the MobileNets: below 32 the strides become
dilations. Block 4's units multiply the dilation by DeepLabv3's multi-grid
(1, 2, 4) when the output stride is below 32 (DeepLabv3 §3.2). Dilations
change neither the parameters nor the multiply-adds.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax

from mnv2_jax.models import layers

Array = jax.Array

OUTPUT_STRIDES = (8, 16, 32)
STEMS = ('beta', 'original')
# ResNet's Table 1: units per block.
UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# config.model.architecture -> depth.
ARCHITECTURES = {'resnet_50': 50, 'resnet_101': 101}
BOTTLENECK_CHANNELS = (64, 128, 256, 512)
EXPANSION = 4  # a unit's output is 4x its bottleneck
BETA_STEM_CHANNELS = (64, 64, 128)
STEM_STRIDE = 4  # the stride-2 convolution and the stride-2 max pool
MULTI_GRID = (1, 2, 4)  # DeepLabv3 §3.2, block 4 below output stride 32


@dataclasses.dataclass(frozen=True)
class UnitConfig:
  """One bottleneck unit after the output stride is applied."""

  block: int  # 1..4
  index: int  # 1.. within the block
  bottleneck: int
  out_channels: int
  stride: int
  dilation: int


def unit_configs(
  depth: int = 101, output_stride: int = 32, width_multiplier: float = 1.0
) -> tuple[UnitConfig, ...]:
  """Every unit's channels, stride and dilation (TF-slim's
  `stack_blocks_dense` rule: once the output stride is reached, strides
  become dilations)."""
  if depth not in UNITS:
    raise ValueError(
      f'ResNet depth must be one of {sorted(UNITS)}, got {depth}.'
    )
  if output_stride not in OUTPUT_STRIDES:
    raise ValueError(
      f'model.output_stride must be one of {OUTPUT_STRIDES}, '
      f'got {output_stride}.'
    )
  configs, current_stride, rate = [], STEM_STRIDE, 1
  for block, (units, channels) in enumerate(
    zip(UNITS[depth], BOTTLENECK_CHANNELS), 1
  ):
    bottleneck = max(int(channels * width_multiplier), 8)
    for index in range(1, units + 1):
      stride = 2 if (index == units and block < 4) else 1
      grid = (
        MULTI_GRID[(index - 1) % len(MULTI_GRID)]
        if block == 4 and output_stride < 32
        else 1
      )
      if current_stride == output_stride:
        unit_stride, dilation = 1, rate * grid
        rate *= stride
      else:
        unit_stride, dilation = stride, grid
        current_stride *= stride
      configs.append(
        UnitConfig(
          block=block,
          index=index,
          bottleneck=bottleneck,
          out_channels=bottleneck * EXPANSION,
          stride=unit_stride,
          dilation=dilation,
        )
      )
  return tuple(configs)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (stride, dilation), 1x1 expand, each with BatchNorm;
  ReLU after the first two and after the sum with the shortcut."""

  config: UnitConfig
  conv: functools.partial
  norm: functools.partial

  @nn.compact
  def __call__(self, x: Array) -> Array:
    unit = self.config
    if x.shape[-1] == unit.out_channels:
      # TF-slim's `subsample`: a 1x1 max pool of the stride, i.e. every
      # stride-th pixel.
      shortcut = x[:, :: unit.stride, :: unit.stride] if unit.stride > 1 else x
    else:
      shortcut = layers.ConvBN(
        functools.partial(self.conv, unit.out_channels, strides=unit.stride),
        self.norm,
        None,
        name='shortcut',
      )(x)
    y = layers.ConvBN(
      functools.partial(self.conv, unit.bottleneck),
      self.norm,
      nn.relu,
      name='conv1',
    )(x)
    y = layers.ConvBN(
      functools.partial(
        self.conv,
        unit.bottleneck,
        kernel_size=3,
        strides=unit.stride,
        dilation=unit.dilation,
      ),
      self.norm,
      nn.relu,
      name='conv2',
    )(y)
    y = layers.ConvBN(
      functools.partial(self.conv, unit.out_channels),
      self.norm,
      None,
      name='conv3',
    )(y)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """ResNet v1 classifier/backbone.

  Attributes:
    num_classes: classifier outputs; 0 builds the backbone without it.
    depth: 50, 101 or 152 (`UNITS`).
    stem: 'beta' (three 3x3 convolutions, DeepLab's) or 'original' (7x7).
    width_multiplier: scales every layer (1.0 is ResNet; smaller ones are for
      the proxies).
    output_stride: 32, 16 or 8.
    batch_norm_momentum, batch_norm_epsilon, padding, dtype, implementation:
      as in MobileNetV2 (the same layers and formulations).
  """

  num_classes: int = 1000
  depth: int = 101
  stem: str = 'beta'
  width_multiplier: float = 1.0
  output_stride: int = 32
  dropout_rate: float = 0.0
  batch_norm_momentum: float = 0.997
  batch_norm_epsilon: float = 1e-5
  padding: str = 'same'
  dtype: str = 'float32'
  implementation: str = 'auto'

  @nn.compact
  def __call__(
    self, images: Array, train: bool = False
  ) -> tuple[Array, dict[str, Array]]:
    """Returns logits [N, num_classes] (pooled features if num_classes == 0)
    and endpoints ('stem', 'block1' .. 'block4')."""
    if self.stem not in STEMS:
      raise ValueError(
        f'ResNet stem must be one of {STEMS}, got {self.stem!r}.'
      )
    norm, conv, _ = layers.network_factories(self, train=train)
    endpoints = {}

    def scaled(channels: int) -> int:
      return max(int(channels * self.width_multiplier), 8)

    x = images.astype(layers.DTYPES[self.dtype])
    if self.stem == 'beta':
      for i, channels in enumerate(BETA_STEM_CHANNELS):
        x = layers.ConvBN(
          functools.partial(
            conv, scaled(channels), kernel_size=3, strides=2 if i == 0 else 1
          ),
          norm,
          nn.relu,
          name=f'stem_{i + 1}',
        )(x)
    else:
      x = layers.ConvBN(
        functools.partial(conv, scaled(64), kernel_size=7, strides=2),
        norm,
        nn.relu,
        name='stem_1',
      )(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    endpoints['stem'] = x
    units = unit_configs(self.depth, self.output_stride, self.width_multiplier)
    for unit in units:
      x = Bottleneck(
        unit, conv, norm, name=f'block{unit.block}_unit{unit.index}'
      )(x)
      endpoints[f'block{unit.block}'] = x
    return layers.pooled_classifier(
      x, self.num_classes, self.dropout_rate, train, endpoints
    )
