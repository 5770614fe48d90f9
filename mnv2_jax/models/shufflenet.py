"""ShuffleNet v1 (Zhang et al., 2017), a peer of paper Table 4 and Table 3.

ShuffleNet's Table 1 with g groups and scale s: a 3x3 convolution to 24
channels (stride 2; `STEM_CHANNELS` per scale) and a 3x3 max pool (stride 2); three stages of 4, 8 and 4
units whose first unit has stride 2; global average pooling and the
classifier. A unit (ShuffleNet's Figure 2) is a 1x1 group convolution to a
quarter of the stage's channels (BatchNorm, ReLU), the channel shuffle, a 3x3
depthwise convolution (BatchNorm, no ReLU) and a 1x1 group convolution back
(BatchNorm). A stride-1 unit adds its input; a stride-2 unit concatenates a
3x3 average pool of its input and so outputs the stage's channels minus its
input's. ReLU follows the sum or the concatenation. The first unit's first
1x1 convolution is not grouped: its input has only 24 channels.

Endpoints: `conv1`, `pool1`, `stage_K_unit_U` (K = 2, 3, 4), `global_pool`, `logits`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import layers

Array = jax.Array

# The stem's channels per scale, as the authors' released code builds them
# (megvii-model/ShuffleNet-Series, ShuffleNetV1): 24 at 1x and 1.5x, 12 at
# 0.5x, 48 at 2x. Their Table 2 complexities need these (0.5x: 38M, 2x: 524M
# multiply-adds; with a 24-channel stem 42.7M and 507.6M).
STEM_CHANNELS = {0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}
UNITS_PER_STAGE = (4, 8, 4)  # stages 2, 3, 4
BOTTLENECK_DIVISOR = 4  # the bottleneck is a quarter of the unit's output
# ShuffleNet's Table 1: output channels of stages 2-4 at 1x, per group count.
STAGE_CHANNELS = {
  1: (144, 288, 576),
  2: (200, 400, 800),
  3: (240, 480, 960),
  4: (272, 544, 1088),
  8: (384, 768, 1536),
}
SCALES = tuple(STEM_CHANNELS)


def stage_channels(groups: int, scale: float) -> tuple[int, ...]:
  """Output channels of stages 2-4: Table 1's column for `groups`, times s."""
  if scale not in STEM_CHANNELS:
    raise ValueError(
      f'model.width_multiplier of ShuffleNet is its scale s, one of '
      f'{SCALES} (the released sizes); got {scale}.'
    )
  if groups not in STAGE_CHANNELS:
    raise ValueError(
      f'model.shufflenet_groups must be one of {sorted(STAGE_CHANNELS)}, '
      f'got {groups}.'
    )
  return tuple(int(channels * scale) for channels in STAGE_CHANNELS[groups])


def _pool_padding(padding: str):
  return 'SAME' if padding == 'same' else ((1, 1), (1, 1))


class ShuffleUnit(nn.Module):
  """One ShuffleNet unit (Figure 2b, stride 1; Figure 2c, stride 2)."""

  out_channels: int
  bottleneck_channels: int
  groups: int
  stride: int
  group_first_conv: bool
  conv: functools.partial
  depthwise_conv: functools.partial
  norm: functools.partial
  padding: str = 'same'
  implementation: str = 'auto'  # of the shortcut's pool (layers.average_pool)

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    in_channels = inputs.shape[-1]
    branch_channels = (
      self.out_channels - in_channels if self.stride > 1 else self.out_channels
    )
    first_groups = self.groups if self.group_first_conv else 1
    x = layers.ConvBN(
      functools.partial(
        self.conv, self.bottleneck_channels, groups=first_groups
      ),
      self.norm,
      nn.relu,
      name='compress',
    )(inputs)
    if first_groups > 1:
      x = layers.channel_shuffle(x, self.groups)
    x = layers.ConvBN(
      functools.partial(
        self.depthwise_conv, kernel_size=3, strides=self.stride
      ),
      self.norm,
      None,
      name='depthwise',
    )(x)
    x = layers.ConvBN(
      functools.partial(self.conv, branch_channels, groups=self.groups),
      self.norm,
      None,
      name='expand',
    )(x)
    if self.stride == 1:
      return nn.relu(x + inputs)
    shortcut = layers.average_pool(
      inputs, 3, self.stride, self.padding, self.implementation
    )
    return nn.relu(jnp.concatenate([shortcut.astype(x.dtype), x], axis=-1))


class ShuffleNet(nn.Module):
  """ShuffleNet v1 classifier/backbone (ShuffleNet's Table 1).

  Attributes:
    num_classes: classifier outputs; 0 builds the backbone without it.
    width_multiplier: the scale s (ShuffleNet s×) of every stage's channels,
      one of SCALES; the stem's channels per scale are `STEM_CHANNELS`.
    groups: g, the group count of the pointwise convolutions (the paper's
      peers use g = 3).
    dropout_rate, batch_norm_momentum, batch_norm_epsilon, padding, dtype,
      implementation: as in MobileNetV2.
  """

  num_classes: int = 1000
  width_multiplier: float = 1.0
  groups: int = 3
  dropout_rate: float = 0.0
  batch_norm_momentum: float = 0.997
  batch_norm_epsilon: float = 1e-3
  padding: str = 'same'
  dtype: str = 'float32'
  implementation: str = 'auto'

  @nn.compact
  def __call__(
    self, images: Array, train: bool = False
  ) -> tuple[Array, dict[str, Array]]:
    """Returns logits [N, num_classes] (features if num_classes == 0), endpoints."""
    norm, conv, depthwise_conv = layers.network_factories(self, train=train)
    group_conv = functools.partial(
      layers.GroupConv,
      padding=self.padding,
      dtype=layers.DTYPES[self.dtype],
      implementation=layers.resolve_implementation(self.implementation),
    )
    endpoints = {}
    x = layers.ConvBN(
      functools.partial(
        conv, STEM_CHANNELS[self.width_multiplier], kernel_size=3, strides=2
      ),
      norm,
      nn.relu,
      name='conv1',
    )(images.astype(layers.DTYPES[self.dtype]))
    endpoints['conv1'] = x
    x = nn.max_pool(x, (3, 3), (2, 2), padding=_pool_padding(self.padding))
    endpoints['pool1'] = x
    channels = stage_channels(self.groups, self.width_multiplier)
    for stage, (units, out_channels) in enumerate(
      zip(UNITS_PER_STAGE, channels), 2
    ):
      for unit in range(units):
        x = ShuffleUnit(
          out_channels=out_channels,
          bottleneck_channels=out_channels // BOTTLENECK_DIVISOR,
          groups=self.groups,
          stride=2 if unit == 0 else 1,
          group_first_conv=not (stage == 2 and unit == 0),
          conv=group_conv,
          depthwise_conv=depthwise_conv,
          norm=norm,
          padding=self.padding,
          implementation=self.implementation,
          name=f'stage_{stage}_unit_{unit + 1}',
        )(x)
        endpoints[f'stage_{stage}_unit_{unit + 1}'] = x
    return layers.pooled_classifier(
      x, self.num_classes, self.dropout_rate, train, endpoints
    )
