"""Mobile DeepLabv3 on MobileNetV2 (paper §6.3, Table 7): the network.

The same head runs on MobileNetV1 and ResNet-101, Table 7's other backbones
(`backbone_architecture`, models/backbones.py, which names the feature map
each one gives the head).

MNetV2* (paper §6.3): the backbone runs at output stride 16 or 8 (later
strides become atrous rates, `mobilenet_v2.block_configs`) and ends at the
320-channel output of the last bottleneck, without the 1x1 conv to 1280. The
head has a 1x1 conv branch and an image-level pooling branch (256 channels
each); with ASPP, three 3x3 atrous branches as well (rates 6, 12, 18 at output
stride 16, doubled at 8). The branches are concatenated, projected by a 1x1
conv to 256 and classified by a 1x1 conv with bias; the logits are upsampled
bilinearly to the input size (align_corners, as DeepLab's 513 = 32·16 + 1
crops assume). The loss, mIoU and Table 7's multi-scale + flip evaluation
are the segmentation task's (tasks/segmentation.py).
"""

from __future__ import annotations

import functools
from typing import Callable
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnv2_jax.models import backbones
from mnv2_jax.models import initializers
from mnv2_jax.models import layers

Array = jax.Array

HEAD_DEPTH = 256
ASPP_RATES_AT_STRIDE_16 = (6, 12, 18)
# Paper §6.3, Table 7: MF = these input scales plus a left-right flip.
EVAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def aspp_rates(output_stride: int) -> tuple[int, ...]:
  """6/12/18 at output stride 16, doubled at 8 (the same field of view)."""
  return tuple(rate * 16 // output_stride for rate in ASPP_RATES_AT_STRIDE_16)


def resize_bilinear(x: Array, size: Sequence[int]) -> Array:
  """Bilinear resize of [N, H, W, C] with aligned corners (TF's
  `resize_bilinear(align_corners=True)`, what DeepLab uses): output pixel i
  samples input position i·(H - 1)/(size - 1), so corners map to corners."""

  def along(x, axis, out):
    n = x.shape[axis]
    if n == out:
      return x
    if n == 1 or out == 1:  # a broadcast, or the first row (its corner)
      return x.take(np.zeros(out, np.int32), axis=axis)
    position = np.arange(out) * (n - 1) / (out - 1)
    low = np.minimum(np.floor(position).astype(np.int32), n - 2)
    weight = (position - low).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = out
    weight = jnp.asarray(weight.reshape(shape), x.dtype)
    return (
      x.take(low, axis=axis) * (1 - weight)
      + x.take(low + 1, axis=axis) * weight
    )

  return along(along(x, 1, size[0]), 2, size[1])


class MobileDeepLabV3(nn.Module):
  """MobileNetV2 (MNetV2*), MobileNetV1 or ResNet-101 + the DeepLabv3 head.

  Attributes:
    num_classes: classes including background (21 for VOC).
    width_multiplier, output_stride: of the backbone (output stride 16 or 8).
    backbone_architecture: one of backbones.SEGMENTATION_BACKBONES.
    aspp: adds the three 3x3 atrous branches.
    dropout_rate: before the classifier (DeepLab: keep probability 0.9).
  """

  num_classes: int = 21
  width_multiplier: float = 1.0
  output_stride: int = 16
  backbone_architecture: str = 'mobilenet_v2'
  aspp: bool = False
  dropout_rate: float = 0.1
  batch_norm_momentum: float = 0.997
  batch_norm_epsilon: float = 1e-3
  padding: str = 'same'
  dtype: str = 'float32'
  implementation: str = 'auto'

  @nn.compact
  def __call__(
    self, images: Array, train: bool = False
  ) -> tuple[Array, dict[str, Array]]:
    """Returns logits [N, H, W, num_classes] at the input size, endpoints."""
    if self.output_stride not in (8, 16):
      raise ValueError(
        'DeepLab runs the backbone at output stride 8 or 16 '
        f'(model.output_stride), got {self.output_stride}.'
      )
    if self.backbone_architecture not in backbones.SEGMENTATION_BACKBONES:
      raise ValueError(
        f'DeepLab runs on {backbones.SEGMENTATION_BACKBONES}, got '
        f'{self.backbone_architecture!r}.'
      )
    options = {'output_stride': self.output_stride}
    if self.backbone_architecture == 'mobilenet_v2':
      options['last_conv'] = False  # MNetV2* (paper §6.3)
    outputs, endpoints = backbones.build(
      self, self.backbone_architecture, **options
    )(images, train=train)
    features = backbones.deeplab_features(
      self.backbone_architecture, outputs, endpoints
    )
    norm, conv, _ = layers.network_factories(self, train=train)

    def branch(name: str, **conv_kwargs) -> Callable[[Array], Array]:
      return layers.ConvBN(
        functools.partial(conv, HEAD_DEPTH, **conv_kwargs),
        norm,
        nn.relu,
        name=name,
      )

    # Image-level features: global average pool, 1x1 conv, then back to the
    # feature map's size (bilinear from 1x1 is a broadcast).
    pooled = jnp.mean(
      features.astype(jnp.float32), axis=(1, 2), keepdims=True
    ).astype(features.dtype)
    pooled = branch('image_pooling')(pooled)
    branches = [
      jnp.broadcast_to(pooled, features.shape[:3] + pooled.shape[3:]),
      branch('aspp_0')(features),
    ]
    if self.aspp:
      for i, rate in enumerate(aspp_rates(self.output_stride)):
        branches.append(
          branch(f'aspp_{i + 1}', kernel_size=3, dilation=rate)(features)
        )
    x = branch('concat_projection')(jnp.concatenate(branches, axis=-1))
    endpoints['concat_projection'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Conv(
      self.num_classes,
      (1, 1),
      dtype=jnp.float32,
      kernel_init=initializers.LECUN_NORMAL,
      bias_init=initializers.ZEROS,
      name='logits',
    )(x.astype(jnp.float32))
    endpoints['logits_at_output_stride'] = logits
    return resize_bilinear(logits, images.shape[1:3]), endpoints


def scaled_size(size: int, scale: float) -> int:
  """DeepLab's `scale_dimension`: (size - 1)·scale + 1, so a 513 crop at
  scale 0.5 is 257 (output stride 16 keeps the corners aligned)."""
  return int((size - 1) * scale + 1)
