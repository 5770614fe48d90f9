"""MobileNetV2 written the plain Flax way: nn.Conv (depthwise through
`feature_group_count`), nn.BatchNorm, jax.nn.relu6, autodiff for gradients.

The reference that both formulations of mnv2_jax's layers ('cpu', 'xla') are
tested against (tests/test_layers.py), and the "plain Flax" row of
benchmarks/speed.py. Its modules carry the names of `mobilenet_v2.MobileNetV2`'s
('layer_N/expand/conv', '.../bn', 'classifier'), so the two take the same
variables. The channel counts come from `mobilenet_v2.block_configs` (paper Table 2
with the release's rounding); everything else is stock Flax.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import mobilenet_v2


class ConvBN(nn.Module):
  features: int
  kernel_size: int = 1
  strides: int = 1
  dilation: int = 1
  groups: int = 1
  relu6: bool = True
  train: bool = False
  momentum: float = 0.997
  epsilon: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(
      self.features,
      (self.kernel_size, self.kernel_size),
      strides=self.strides,
      kernel_dilation=self.dilation,
      padding='SAME',
      feature_group_count=self.groups,
      use_bias=False,
      dtype=self.dtype,
      name='conv',
    )(x)
    x = nn.BatchNorm(
      use_running_average=not self.train,
      momentum=self.momentum,
      epsilon=self.epsilon,
      dtype=self.dtype,
      name='bn',
    )(x)
    return jax.nn.relu6(x) if self.relu6 else x


class MobileNetV2(nn.Module):
  """Table 2's network; `width_multiplier`, classes and dtype as mnv2_jax's."""

  num_classes: int = 1000
  width_multiplier: float = 1.0
  batch_norm_momentum: float = 0.997
  batch_norm_epsilon: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    conv_bn = functools.partial(
      ConvBN,
      train=train,
      dtype=self.dtype,
      momentum=self.batch_norm_momentum,
      epsilon=self.batch_norm_epsilon,
    )
    x = images.astype(self.dtype)
    blocks = mobilenet_v2.block_configs(self.width_multiplier)
    x = conv_bn(
      blocks[0].in_channels, kernel_size=3, strides=2, name='layer_1'
    )(x)
    for block in blocks:
      x = InvertedResidual(block, conv_bn, name=f'layer_{block.layer}')(x)
    x = conv_bn(
      mobilenet_v2.last_conv_channels(self.width_multiplier),
      name=f'layer_{len(blocks) + 2}',
    )(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    # (logits, endpoints) as mnv2_jax's model returns, so that the same
    # training step (train.train_step) runs either.
    return nn.Dense(self.num_classes, name='classifier')(x), {}


class InvertedResidual(nn.Module):
  block: mobilenet_v2.BlockConfig
  conv_bn: Any

  @nn.compact
  def __call__(self, inputs):
    block = self.block
    x = inputs
    if block.has_expansion:
      x = self.conv_bn(block.expanded_channels, name='expand')(x)
    x = self.conv_bn(
      block.expanded_channels,
      kernel_size=3,
      strides=block.stride,
      dilation=block.dilation,
      groups=block.expanded_channels,
      name='depthwise',
    )(x)
    x = self.conv_bn(block.out_channels, relu6=False, name='project')(x)
    if mobilenet_v2.has_identity_shortcut(block):
      x = x + inputs
    return x
