"""MobileNetV2 (Sandler et al., CVPR 2018) in Flax linen.

The architecture is data: `MOBILENET_V2_BLOCKS` is the paper's Table 2 and one
build loop (`MobileNetV2.__call__`) applies the width multiplier, the expansion
ratio, the output stride and the release's endpoint numbering:

  layer_1            3x3 conv, stride 2, 32·α channels ("Conv" in the release)
  layer_2..layer_18  the 17 inverted-residual blocks of Table 2
  layer_19           1x1 conv to 1280 channels (kept at 1280 for α < 1)

Every block publishes `layer_N/expansion_output` (t > 1), `layer_N/depthwise_output`
and `layer_N/output` (alias `layer_N`) as in the TF-slim release, e.g.
`layer_15/expansion_output` feeds SSDLite and `layer_18/output` feeds DeepLab.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any
from typing import Optional
from typing import Sequence
from typing import Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax import choices
from mnv2_jax.models import layers

Array = jax.Array

BOTTLENECK_ACTIVATIONS = choices.BOTTLENECK_ACTIVATIONS
RESIDUAL_PLACEMENTS = choices.RESIDUAL_PLACEMENTS
OUTPUT_STRIDES = choices.OUTPUT_STRIDES
DTYPES = layers.DTYPES


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One row of paper Table 2: n repeats of a bottleneck, the first strided."""

  expansion: int  # t
  channels: int  # c, before the width multiplier
  repeats: int  # n
  stride: int  # s, of the first block of the row only


# Paper Table 2, the bottleneck rows.
MOBILENET_V2_BLOCKS: tuple[BlockSpec, ...] = (
  BlockSpec(expansion=1, channels=16, repeats=1, stride=1),
  BlockSpec(expansion=6, channels=24, repeats=2, stride=2),
  BlockSpec(expansion=6, channels=32, repeats=3, stride=2),
  BlockSpec(expansion=6, channels=64, repeats=4, stride=2),
  BlockSpec(expansion=6, channels=96, repeats=3, stride=1),
  BlockSpec(expansion=6, channels=160, repeats=3, stride=2),
  BlockSpec(expansion=6, channels=320, repeats=1, stride=1),
)
STEM_CHANNELS = 32
STEM_STRIDE = 2
LAST_CONV_CHANNELS = 1280
NUM_BLOCKS = sum(spec.repeats for spec in MOBILENET_V2_BLOCKS)  # 17


def make_divisible(
  value: float, divisor: int = 8, min_value: Optional[int] = None
) -> int:
  """Rounds a channel count to a multiple of `divisor` as the TF release does.

  Rounds to the nearest multiple, never below `min_value` (default `divisor`),
  and never more than 10% below `value` (the TF-slim release; docs/paper.md).
  """
  min_value = divisor if min_value is None else min_value
  rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


def last_conv_channels(width_multiplier: float) -> int:
  """1280 for α <= 1 (kept wide, as the release), round(1280·α) above."""
  if width_multiplier > 1.0:
    return make_divisible(LAST_CONV_CHANNELS * width_multiplier)
  return LAST_CONV_CHANNELS


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """One inverted-residual block after the build rules have been applied."""

  layer: int  # the release's number: layer_2 ... layer_18
  in_channels: int
  expanded_channels: int  # == in_channels when there is no expansion conv
  has_expansion: bool  # t != 1; with t = 1 the expansion conv is omitted (§1)
  out_channels: int
  stride: int
  dilation: int


def expansion_ratios(
  expansion_ratio: Union[float, Sequence[float]],
) -> tuple[float, ...]:
  """One expansion ratio per block.

  A single number is the paper's "constant expansion rate ... except the first
  block" (§4): the first block keeps t = 1 (Table 2). A sequence gives all 17.
  """
  if isinstance(expansion_ratio, (int, float)):
    return tuple(
      float(spec.expansion if spec.expansion == 1 else expansion_ratio)
      for spec in MOBILENET_V2_BLOCKS
      for _ in range(spec.repeats)
    )
  ratios = tuple(float(t) for t in expansion_ratio)
  if len(ratios) != NUM_BLOCKS:
    raise ValueError(
      f'model.expansion_ratio: a per-block list needs '
      f'{NUM_BLOCKS} values, got {len(ratios)}.'
    )
  return ratios


def block_configs(
  width_multiplier: float = 1.0,
  expansion_ratio: Union[float, Sequence[float]] = 6,
  output_stride: int = 32,
) -> tuple[BlockConfig, ...]:
  """Applies width multiplier, expansion ratio and output stride to Table 2.

  Output stride follows the DeepLab convention: once the running stride reaches
  `output_stride`, later strides become 1 and the atrous rate grows by the
  stride instead; the layer whose stride was removed keeps the previous rate.
  """
  if output_stride not in OUTPUT_STRIDES:
    raise ValueError(
      f'model.output_stride must be one of {OUTPUT_STRIDES}, '
      f'got {output_stride}.'
    )
  ratios = expansion_ratios(expansion_ratio)
  in_channels = make_divisible(STEM_CHANNELS * width_multiplier)
  current_stride, rate = STEM_STRIDE, 1
  configs = []
  for spec in MOBILENET_V2_BLOCKS:
    out_channels = make_divisible(spec.channels * width_multiplier)
    for repeat in range(spec.repeats):
      stride = spec.stride if repeat == 0 else 1
      if stride > 1 and current_stride == output_stride:
        layer_stride, dilation, rate = 1, rate, rate * stride
      else:
        layer_stride, dilation = stride, rate
        current_stride *= stride
      t = ratios[len(configs)]
      expanded = in_channels if t == 1 else make_divisible(in_channels * t)
      configs.append(
        BlockConfig(
          layer=len(configs) + 2,
          in_channels=in_channels,
          expanded_channels=expanded,
          has_expansion=t != 1,
          out_channels=out_channels,
          stride=layer_stride,
          dilation=dilation,
        )
      )
      in_channels = out_channels
  return tuple(configs)


class InvertedResidual(nn.Module):
  """The inverted residual with linear bottleneck (paper Table 1, Figure 3b).

  1x1 expansion + BN + ReLU6 -> 3x3 depthwise + BN + ReLU6 -> 1x1 projection
  + BN, with no activation: a ReLU on the low-dimensional bottleneck destroys
  information (paper §3.2, Figure 6a).

  Attributes:
    block: channel counts, stride and dilation of this block.
    inference_splits: > 1 computes the block (inference only) as a sum over
      that many channel slices of the expanded tensor (paper §5.1, see
      `split_inverted_residual`); the variables are the same.
    bottleneck_activation: 'linear' (the paper) or 'relu6' (Figure 6a).
    residual: 'bottleneck' shortcut between the thin bottlenecks (the paper),
      'expansion' between the expanded tensors (Figure 6b) or 'none'.
    conv, depthwise_conv, norm: module factories (see `layers.ConvBN`).
  """

  block: BlockConfig
  bottleneck_activation: str
  residual: str
  conv: Any
  depthwise_conv: Any
  norm: Any
  inference_splits: int = 1

  @nn.compact
  def __call__(
    self, inputs: Array, expansion_shortcut: Optional[Array] = None
  ) -> tuple[Array, dict[str, Array]]:
    """Applies the block.

    Args:
      inputs: [N, H, W, in_channels].
      expansion_shortcut: for residual='expansion', the previous block's
        depthwise output (same shape as this block's expansion output), added
        to this block's expansion output: a classical residual between the wide
        tensors, spanning the previous projection and this expansion.

    Returns:
      The block output and its endpoints.
    """
    block = self.block
    endpoints = {}
    if self.inference_splits > 1 and not self.is_initializing():
      # Paper §5.1: the expanded tensor is never materialised whole, so its
      # endpoints do not exist; only the block output is published.
      x = split_inverted_residual(
        self.variables,
        inputs,
        block,
        self.inference_splits,
        bottleneck_activation=self.bottleneck_activation,
        residual=self.residual,
        epsilon=self.norm.keywords['epsilon'],
        padding=self.depthwise_conv.keywords['padding'],
        implementation=self.depthwise_conv.keywords['implementation'],
      )
      endpoints['output'] = x
      return x, endpoints
    x = inputs
    if block.has_expansion:
      x = layers.ConvBN(
        functools.partial(self.conv, block.expanded_channels),
        self.norm,
        nn.relu6,
        name='expand',
      )(x)
      if expansion_shortcut is not None:
        x = x + expansion_shortcut
      endpoints['expansion_output'] = x
    x = layers.ConvBN(
      functools.partial(
        self.depthwise_conv, strides=block.stride, dilation=block.dilation
      ),
      self.norm,
      nn.relu6,
      name='depthwise',
    )(x)
    endpoints['depthwise_output'] = x
    activation = nn.relu6 if self.bottleneck_activation == 'relu6' else None
    x = layers.ConvBN(
      functools.partial(self.conv, block.out_channels),
      self.norm,
      activation,
      name='project',
    )(x)
    if self.residual == 'bottleneck' and has_identity_shortcut(block):
      # Shortcut between the bottlenecks (paper §3.3): only where shapes match.
      x = x + inputs
    endpoints['output'] = x
    return x, endpoints


def has_identity_shortcut(block: BlockConfig) -> bool:
  """Residual connections join blocks with stride 1 and k = k' (Table 1)."""
  return block.stride == 1 and block.in_channels == block.out_channels


def folded_batch_norm(
  layer, layer_stats, epsilon: float
) -> tuple[Array, Array]:
  """A ConvBN's inference BatchNorm as y = x * scale + shift: `layer` and
  `layer_stats` are the ConvBN's params and batch_stats."""
  scale = layer['bn']['scale'] * jax.lax.rsqrt(
    layer_stats['bn']['var'] + epsilon
  )
  return scale, layer['bn']['bias'] - layer_stats['bn']['mean'] * scale


def _split_weights(variables, block, epsilon, stem_variables) -> dict:
  """The kernels (1x1 ones as matrices) and folded BatchNorms that split
  inference reads a slice at a time."""
  params, stats = variables['params'], variables['batch_stats']
  weights = {}
  stages = [('depthwise', params['depthwise'], stats['depthwise'])]
  if block.has_expansion:
    stages.append(('expand', params['expand'], stats['expand']))
    weights['expand_kernel'] = params['expand']['conv']['kernel'][0, 0]
  if stem_variables is not None:
    stem_params = stem_variables['params']
    stages.append(('stem', stem_params, stem_variables['batch_stats']))
    weights['stem_kernel'] = stem_params['conv']['kernel']  # [3, 3, 3, C]
  for name, layer, layer_stats in stages:
    weights[f'{name}_scale'], weights[f'{name}_shift'] = folded_batch_norm(
      layer, layer_stats, epsilon
    )
  weights['depthwise_kernel'] = params['depthwise']['conv']['kernel']
  weights['project_kernel'] = params['project']['conv']['kernel'][0, 0]
  return weights


def _depthwise_input_slice(x, block, weights, take, padding: str) -> Array:
  """The slice `take` of the depthwise stage's input: of the expansion's
  output, of the stem's (the first block when split with the stem), or of
  the block's input (the first block, t = 1)."""
  if block.has_expansion:
    h = jnp.dot(x, take(weights['expand_kernel'], 1))
    scale, shift = (
      take(weights['expand_scale'], 0),
      take(weights['expand_shift'], 0),
    )
  elif 'stem_kernel' in weights:
    h = jax.lax.conv_general_dilated(
      x,
      take(weights['stem_kernel'], 3),
      (STEM_STRIDE, STEM_STRIDE),
      layers.conv_padding(x.shape[1:3], 3, STEM_STRIDE, 1, padding),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    scale, shift = (
      take(weights['stem_scale'], 0),
      take(weights['stem_shift'], 0),
    )
  else:
    return take(x, 3)
  return jax.nn.relu6(h * scale + shift)


def _depthwise_output_slice(
  x, block, weights, i, size: int, padding, depthwise
):
  """Slice i (of `size` channels) of the depthwise stage's output, and the
  function that slices the weights alike."""
  channels = block.expanded_channels
  first = i * size  # the slice's first channel not summed yet
  start = jnp.minimum(first, channels - size)
  take = lambda values, axis: jax.lax.dynamic_slice_in_dim(
    values, start, size, axis
  )
  h = _depthwise_input_slice(x, block, weights, take, padding)
  padding_of_h = layers.conv_padding(
    h.shape[1:3], 3, block.stride, block.dilation, padding
  )
  kernel = take(weights['depthwise_kernel'], 3)
  h = depthwise(h, kernel, block.stride, block.dilation, padding_of_h)
  scale = take(weights['depthwise_scale'], 0)
  h = jax.nn.relu6(h * scale + take(weights['depthwise_shift'], 0))
  return jnp.where(start + jnp.arange(size) >= first, h, 0.0), take


def split_inverted_residual(
  variables,
  inputs: Array,
  block: BlockConfig,
  splits: int,
  *,
  bottleneck_activation: str,
  residual: str,
  epsilon: float,
  padding: str,
  implementation: str,
  stem_variables=None,
) -> Array:
  """Memory-efficient inference of one inverted residual (paper §5.1).

  The block is F(x) = [A ∘ N ∘ B](x) with B the expansion (1x1 conv + BN +
  ReLU6; the identity in the first block, which has no expansion), N the
  per-channel depthwise 3x3 + BN + ReLU6 and A the linear 1x1 projection.
  B and N act on each expanded channel alone, so splitting the t·k expanded
  channels into `splits` slices gives
      F(x) = BN_A( Σ_i A_i(N_i(B_i(x))) ),
  the projection's BatchNorm (affine at inference) applied once to the sum.
  The slices run in a `lax.fori_loop` that reads each slice's weights in
  place (`dynamic_slice`, no re-laid-out copy of the weights), so only one
  slice of the expanded tensor is alive at a time. The result equals the
  unsplit block up to the order of the float sums (tests/test_model.py).

  Args:
    variables: the block's {'params', 'batch_stats'}, as `InvertedResidual`
      makes them ('expand', 'depthwise', 'project').
    inputs: [N, H, W, in_channels].
    block: the block's configuration.
    splits: number of slices (t in §5.1; not the expansion ratio).
    bottleneck_activation, residual: as `InvertedResidual` ('expansion'
      needs the previous block's whole expanded tensor: not here).
    epsilon: BatchNorm epsilon; padding, implementation: as `layers`.
    stem_variables: for the first block (no expansion) only: the 3x3
      stride-2 stem's (layer_1). `inputs` are then the images, and the stem
      and the first block are one operation, as Table 3 counts them.

  Returns:
    The block output [N, H', W', out_channels].
  """
  assert stem_variables is None or not (
    block.has_expansion or has_identity_shortcut(block)
  )
  weights = _split_weights(variables, block, epsilon, stem_variables)
  channels = block.expanded_channels
  splits = min(splits, channels)
  # Slices of ceil(channels / splits); the last starts early, and the
  # channels it shares with the one before are masked out: each is summed once.
  size = -(-channels // splits)
  x = inputs.astype(jnp.float32)
  depthwise = layers.depthwise_conv(implementation)
  depthwise_output = lambda i: _depthwise_output_slice(
    x, block, weights, i, size, padding, depthwise
  )

  def accumulate(i, projected):
    h, take = depthwise_output(i)
    return projected + jnp.dot(h, take(weights['project_kernel'], 0))

  out_shape = jax.eval_shape(lambda: depthwise_output(0)[0]).shape
  projected = jnp.zeros(out_shape[:3] + (block.out_channels,), jnp.float32)
  projected = jax.lax.fori_loop(0, splits, accumulate, projected)
  project_scale, project_shift = folded_batch_norm(
    variables['params']['project'], variables['batch_stats']['project'], epsilon
  )
  y = projected * project_scale + project_shift
  if bottleneck_activation == 'relu6':
    y = jax.nn.relu6(y)
  if residual == 'bottleneck' and has_identity_shortcut(block):
    y = y + inputs
  return y.astype(inputs.dtype)


def expansion_shortcut_layers(blocks: Sequence[BlockConfig]) -> tuple[int, ...]:
  """Layers whose expansion output receives the previous block's depthwise
  output under residual='expansion' (Figure 6b).

  Wherever the paper's design joins two bottlenecks (previous block with
  stride 1 and k = k'), this variant joins the wide tensors around that thin
  bottleneck instead: the previous block's depthwise output and this block's
  expansion output. The shortcut needs both tensors to have the same width,
  so blocks without an expansion conv (t = 1) or with a different expanded
  width (per-block t) get none.
  """
  layers_with_shortcut = []
  for previous, block in zip(blocks[:-1], blocks[1:]):
    if (
      has_identity_shortcut(previous)
      and block.has_expansion
      and previous.expanded_channels == block.expanded_channels
    ):
      layers_with_shortcut.append(block.layer)
  return tuple(layers_with_shortcut)


class MobileNetV2(nn.Module):
  """MobileNetV2 classifier/backbone (paper Table 2).

  Attributes:
    num_classes: classifier outputs; 0 builds the backbone without classifier.
    width_multiplier: α, scales every layer (rounded to multiples of 8).
    expansion_ratio: t, one number (all blocks but the first) or 17 values.
    bottleneck_activation: 'linear' | 'relu6' (Figure 6a ablation).
    residual: 'bottleneck' | 'expansion' | 'none' (Figure 6b ablation).
    output_stride: 32, 16 or 8 (atrous convolution below 32).
    dropout_rate: dropout before the classifier.
    last_conv: False ends the network at the 320-channel output of the last
      bottleneck, without the 1x1 conv to 1280 or the classifier (DeepLab's
      MNetV2*, paper §6.3); the features returned are that output.
    batch_norm_momentum, batch_norm_epsilon: BatchNorm moving-average decay
      and epsilon (TF release 0.997 / 1e-3; PyTorch 0.9 / 1e-5).
    padding: 'same' (TF) or 'symmetric' (PyTorch-trained weights).
    dtype: computation dtype name; parameters are always float32.
    implementation: the layers' formulation, 'auto' | 'cpu' | 'xla' (see
      layers.py): hand-differentiated formulations tuned for XLA:CPU, or
      XLA's convolution ops and autodiff (GPU, TPU, export).
    inference_splits: memory-efficient inference (paper §5.1): every block
      with an expansion computes its expanded tensor in this many channel
      slices; only the blocks' outputs are then published as endpoints.
      Ignored in training.
  """

  num_classes: int = 1000
  width_multiplier: float = 1.0
  expansion_ratio: Union[float, Sequence[float]] = 6
  bottleneck_activation: str = 'linear'
  residual: str = 'bottleneck'
  output_stride: int = 32
  dropout_rate: float = 0.0
  last_conv: bool = True
  batch_norm_momentum: float = 0.997
  batch_norm_epsilon: float = 1e-3
  padding: str = 'same'
  dtype: str = 'float32'
  implementation: str = 'auto'
  inference_splits: int = 1

  @nn.compact
  def __call__(
    self, images: Array, train: bool = False
  ) -> tuple[Array, dict[str, Array]]:
    """Returns logits [N, num_classes] (features if num_classes == 0), endpoints."""
    if self.inference_splits > 1 and self.residual == 'expansion':
      raise ValueError(
        "inference_splits > 1 needs residual 'bottleneck' or 'none': the "
        "'expansion' shortcut adds the previous block's whole expanded "
        'tensor, which split inference never materialises.'
      )
    dtype = DTYPES[self.dtype]
    norm, conv, depthwise_conv = layers.network_factories(self, train=train)
    endpoints = {}
    blocks = block_configs(
      self.width_multiplier, self.expansion_ratio, self.output_stride
    )
    if (
      self.inference_splits > 1
      and not train
      and not self.is_initializing()
      and not blocks[0].has_expansion
    ):
      x = self._split_stem_and_first_block(images.astype(dtype), blocks[0])
      x = x.astype(dtype)
      endpoints['layer_2'] = endpoints['layer_2/output'] = x
      blocks_to_build = blocks[1:]
    else:
      x = layers.ConvBN(
        functools.partial(
          conv,
          make_divisible(STEM_CHANNELS * self.width_multiplier),
          kernel_size=3,
          strides=STEM_STRIDE,
        ),
        norm,
        nn.relu6,
        name='layer_1',
      )(images.astype(dtype))
      endpoints['layer_1'] = endpoints['layer_1/output'] = x
      blocks_to_build = blocks

    expansion_shortcuts = (
      expansion_shortcut_layers(blocks) if self.residual == 'expansion' else ()
    )
    previous_wide = None
    for block in blocks_to_build:
      shortcut = previous_wide if block.layer in expansion_shortcuts else None
      x, block_endpoints = InvertedResidual(
        block,
        self.bottleneck_activation,
        self.residual,
        conv,
        depthwise_conv,
        norm,
        inference_splits=1 if train else self.inference_splits,
        name=f'layer_{block.layer}',
      )(x, shortcut)
      for key, value in block_endpoints.items():
        endpoints[f'layer_{block.layer}/{key}'] = value
      endpoints[f'layer_{block.layer}'] = x
      previous_wide = block_endpoints.get('depthwise_output')

    if not self.last_conv:
      return x, endpoints
    last = len(blocks) + 2  # layer_19
    x = layers.ConvBN(
      functools.partial(conv, last_conv_channels(self.width_multiplier)),
      norm,
      nn.relu6,
      name=f'layer_{last}',
    )(x)
    endpoints[f'layer_{last}'] = endpoints[f'layer_{last}/output'] = x

    # Global average pooling over whatever resolution arrives (Table 2's 7x7
    # at 224), computed in float32.
    return layers.pooled_classifier(
      x, self.num_classes, self.dropout_rate, train, endpoints
    )

  def _split_stem_and_first_block(self, images: Array, block: BlockConfig):
    """§5.1 / Table 3: the stem and the first block as one operation, the
    stem's output channels computed a slice at a time as well (inference
    with `inference_splits`; the variables exist already)."""
    of_layer = lambda name: {
      collection: values[name]
      for collection, values in self.variables.items()
      if name in values
    }
    return split_inverted_residual(
      of_layer('layer_2'),
      images,
      block,
      self.inference_splits,
      bottleneck_activation=self.bottleneck_activation,
      residual=self.residual,
      epsilon=self.batch_norm_epsilon,
      padding=self.padding,
      implementation=self.implementation,
      stem_variables=of_layer('layer_1'),
    )
