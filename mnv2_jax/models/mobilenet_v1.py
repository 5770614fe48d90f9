"""MobileNetV1 (Howard et al., 2017), the paper's first peer (Table 4).

A 3x3 convolution and 13 depthwise-separable layers (a 3x3 depthwise and a
1x1 pointwise convolution, each followed by BatchNorm and ReLU6), global
average pooling and the classifier, as in MobileNetV1's Table 1 and the
TF-slim release (`mobilenet_v1.py`), whose endpoint names this module keeps:

  Conv2d_0                      3x3 conv, stride 2, 32·α channels
  Conv2d_N_depthwise, _pointwise   N = 1..13 (`MOBILENET_V1_LAYERS`)

The width multiplier scales every layer with the release's rounding
(`int(channels · α)`, at least 8 channels; no rounding to multiples of 8, and
unlike MobileNetV2 the last layer is scaled too). The output stride works as
in MobileNetV2 (atrous depthwise convolutions below 32), so the network can
serve as the SSDLite and DeepLab backbone of paper Tables 6 and 7:
`Conv2d_11_pointwise` is at stride 16 and `Conv2d_13_pointwise` at 32
(the setup of Huang et al. 2017 that paper §6.2 follows).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax

from mnv2_jax.models import layers

Array = jax.Array

OUTPUT_STRIDES = (8, 16, 32)
STEM_CHANNELS = 32
STEM_STRIDE = 2
MIN_CHANNELS = 8  # the release's min_depth

# MobileNetV1's Table 1: (stride, pointwise output channels) of the 13
# depthwise-separable layers.
MOBILENET_V1_LAYERS: tuple[tuple[int, int], ...] = (
  (1, 64),
  (2, 128),
  (1, 128),
  (2, 256),
  (1, 256),
  (2, 512),
  (1, 512),
  (1, 512),
  (1, 512),
  (1, 512),
  (1, 512),
  (2, 1024),
  (1, 1024),
)


def scaled_channels(channels: int, width_multiplier: float) -> int:
  """The release's width rounding: int(channels · α), at least 8."""
  return max(int(channels * width_multiplier), MIN_CHANNELS)


@dataclasses.dataclass(frozen=True)
class SeparableConfig:
  """One depthwise-separable layer after width and output stride."""

  index: int  # N of Conv2d_N_depthwise / Conv2d_N_pointwise
  out_channels: int
  stride: int
  dilation: int


def layer_configs(
  width_multiplier: float = 1.0, output_stride: int = 32
) -> tuple[SeparableConfig, ...]:
  """Table 1 with the width multiplier and the output stride applied (the
  DeepLab convention of MobileNetV2's `block_configs`)."""
  if output_stride not in OUTPUT_STRIDES:
    raise ValueError(
      f'model.output_stride must be one of {OUTPUT_STRIDES}, '
      f'got {output_stride}.'
    )
  current_stride, rate, configs = STEM_STRIDE, 1, []
  for index, (stride, channels) in enumerate(MOBILENET_V1_LAYERS, 1):
    if stride > 1 and current_stride == output_stride:
      layer_stride, dilation, rate = 1, rate, rate * stride
    else:
      layer_stride, dilation = stride, rate
      current_stride *= stride
    configs.append(
      SeparableConfig(
        index=index,
        out_channels=scaled_channels(channels, width_multiplier),
        stride=layer_stride,
        dilation=dilation,
      )
    )
  return tuple(configs)


class MobileNetV1(nn.Module):
  """MobileNetV1 classifier/backbone (MobileNetV1's Table 1).

  Attributes:
    num_classes: classifier outputs; 0 builds the backbone without it.
    width_multiplier: α, scales every layer (the release's rounding).
    output_stride: 32, 16 or 8 (atrous depthwise convolutions below 32).
    dropout_rate: dropout before the classifier.
    batch_norm_momentum, batch_norm_epsilon, padding, dtype, implementation:
      as in MobileNetV2 (the same layers and formulations).
  """

  num_classes: int = 1000
  width_multiplier: float = 1.0
  output_stride: int = 32
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
    endpoints = {}
    x = layers.ConvBN(
      functools.partial(
        conv,
        scaled_channels(STEM_CHANNELS, self.width_multiplier),
        kernel_size=3,
        strides=STEM_STRIDE,
      ),
      norm,
      nn.relu6,
      name='Conv2d_0',
    )(images.astype(layers.DTYPES[self.dtype]))
    endpoints['Conv2d_0'] = x
    for layer in layer_configs(self.width_multiplier, self.output_stride):
      name = f'Conv2d_{layer.index}'
      x = layers.ConvBN(
        functools.partial(
          depthwise_conv,
          kernel_size=3,
          strides=layer.stride,
          dilation=layer.dilation,
        ),
        norm,
        nn.relu6,
        name=f'{name}_depthwise',
      )(x)
      endpoints[f'{name}_depthwise'] = x
      x = layers.ConvBN(
        functools.partial(conv, layer.out_channels),
        norm,
        nn.relu6,
        name=f'{name}_pointwise',
      )(x)
      endpoints[f'{name}_pointwise'] = x
    return layers.pooled_classifier(
      x, self.num_classes, self.dropout_rate, train, endpoints
    )
