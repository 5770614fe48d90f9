"""Building blocks: padding rules, convolutions, BatchNorm, Conv-BN-activation.

Every layer has two formulations that compute the same function, chosen per
backend by `implementation` ('auto' picks by `jax.default_backend()`):

* ``xla`` (GPU, TPU, and export to TensorFlow/TFLite): XLA's convolution ops
  (``lax.conv_general_dilated``, depthwise as a grouped convolution with
  ``feature_group_count`` equal to the channel count) and BatchNorm
  differentiated by autodiff, i.e. the ops of a plain Flax network
  (``nn.Conv`` + ``nn.BatchNorm``), which cuDNN, XLA:GPU's fusions and the TPU
  compiler are built for. Nothing here is hand-differentiated.
* ``cpu``: formulations XLA:CPU runs fast, with hand-written gradients:
  depthwise convolution as the sum of k·k shifted (strided, dilated) slices of
  the padded input (XLA:CPU's grouped convolution is 5-30x slower forward and
  worse backward: JAX #23713, Flax #4207, XLA #34273), 1x1 convolutions as
  matrix products, the 3x3 stem as one matrix product over im2col patches,
  and BatchNorm + ReLU6 with a backward pass that reads its input twice.

Both take the same parameters (a depthwise kernel is ``[k, k, 1, C]``, Flax's
layout for a grouped ``nn.Conv``) and the same explicit padding, so a
checkpoint does not depend on the backend it was trained on. They agree to
float32 rounding in values and gradients (tests/test_layers.py forces each one
on the CPU and compares it with plain Flax).
"""

from __future__ import annotations

import functools
from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mnv2_jax import choices
from mnv2_jax.models import initializers

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]

PADDING_MODES = choices.PADDING_MODES
# config.model.dtype -> the computation dtype (parameters stay float32).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
IMPLEMENTATIONS = choices.IMPLEMENTATIONS
POOLING_SCOPE = 'average_pool'  # layers.average_pool's convolution


def _padding_1d(
  size: int, kernel: int, stride: int, dilation: int, mode: str
) -> tuple[int, int]:
  """Padding (before, after) of one spatial dimension."""
  effective_kernel = (kernel - 1) * dilation + 1
  if mode == 'same':
    # TensorFlow 'SAME': output size ceil(size / stride); for a stride-2 3x3
    # conv on an even size this pads 0 before and 1 after (the TF-slim release; docs/paper.md).
    output_size = -(-size // stride)
    total = max((output_size - 1) * stride + effective_kernel - size, 0)
    return total // 2, total - total // 2
  if mode == 'symmetric':
    # PyTorch ports pad (k-1)/2 on both sides whatever the stride.
    half = (effective_kernel - 1) // 2
    return half, half
  if mode == 'valid':  # no padding (NASNet's stem convolution)
    return 0, 0
  raise ValueError(f'padding must be one of {PADDING_MODES}, got {mode!r}.')


def conv_padding(
  spatial_shape: Sequence[int],
  kernel_size: int,
  stride: int,
  dilation: int,
  mode: str,
) -> Padding:
  """Explicit padding of a square-kernel conv for an input of `spatial_shape`."""
  height, width = spatial_shape
  return (
    _padding_1d(height, kernel_size, stride, dilation, mode),
    _padding_1d(width, kernel_size, stride, dilation, mode),
  )


def depthwise_conv_grouped(
  inputs: Array, kernel: Array, stride: int, dilation: int, padding: Padding
) -> Array:
  """Depthwise conv as a grouped convolution. `kernel` is [k, k, 1, C]."""
  return lax.conv_general_dilated(
    inputs,
    kernel,
    window_strides=(stride, stride),
    padding=padding,
    rhs_dilation=(dilation, dilation),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    feature_group_count=inputs.shape[-1],
  )


def _shifted_taps_sum(
  padded: Array, taps: Array, stride: int, dilation: int
) -> Array:
  """sum over taps (p, q) of taps[p, q] * padded[:, i·s + p·d, j·s + q·d, :]."""
  kernel_h, kernel_w = taps.shape[:2]
  _, height, width, _ = padded.shape
  out_h = (height - (kernel_h - 1) * dilation - 1) // stride + 1
  out_w = (width - (kernel_w - 1) * dilation - 1) // stride + 1
  output = None
  for p in range(kernel_h):
    for q in range(kernel_w):
      term = (
        _window(padded, p * dilation, q * dilation, out_h, out_w, stride)
        * taps[p, q]
      )
      output = term if output is None else output + term
  return output


def _window(
  padded: Array, top: int, left: int, out_h: int, out_w: int, stride: int
) -> Array:
  """padded[:, top + i·s, left + j·s, :] for i < out_h, j < out_w."""
  batch, _, _, channels = padded.shape
  return lax.slice(
    padded,
    (0, top, left, 0),
    (
      batch,
      top + (out_h - 1) * stride + 1,
      left + (out_w - 1) * stride + 1,
      channels,
    ),
    (1, stride, stride, 1),
  )


def _pad_spatial(inputs: Array, padding, interior: int = 0) -> Array:
  (top, bottom), (left, right) = padding
  zero = jnp.zeros((), inputs.dtype)
  return lax.pad(
    inputs,
    zero,
    ((0, 0, 0), (top, bottom, interior), (left, right, interior), (0, 0, 0)),
  )


def _shifted_image_grads(
  image: Array,
  output_grad: Array,
  taps: Array,
  stride: int,
  dilation: int,
  padding: Padding,
) -> tuple[Array, Array]:
  """Input and tap gradients for one image ([1, H, W, C], [1, Ho, Wo, C]).

  Input gradient: the transposed convolution. The output gradient is dilated
  by the stride (zeros between rows and columns), padded so that every input
  position sees the taps that read it, and correlated with the flipped taps at
  stride 1. Tap gradient: for each tap, the sum over space of its input window
  times the output gradient.
  """
  kernel_h, kernel_w = taps.shape[:2]
  _, out_h, out_w, _ = output_grad.shape
  grad_padding = []
  for size, out_size, kernel_size, (before, _) in zip(
    image.shape[1:3], (out_h, out_w), (kernel_h, kernel_w), padding
  ):
    reach = (kernel_size - 1) * dilation
    low = reach - before
    high = size + reach - (out_size - 1) * stride - 1 - low
    grad_padding.append((low, high))
  image_grad = _shifted_taps_sum(
    _pad_spatial(output_grad, grad_padding, interior=stride - 1),
    taps[::-1, ::-1],
    1,
    dilation,
  )
  padded = _pad_spatial(image, padding)
  # One variadic reduction: a single pass over the image and the gradient
  # accumulates all k·k taps, in float32 also for bfloat16 activations (a
  # sum over a whole image in bfloat16 loses several percent).
  accumulation = jnp.promote_types(output_grad.dtype, jnp.float32)
  products = tuple(
    _window(padded, p * dilation, q * dilation, out_h, out_w, stride).astype(
      accumulation
    )
    * output_grad.astype(accumulation)
    for p in range(kernel_h)
    for q in range(kernel_w)
  )
  zero = jnp.zeros((), accumulation)
  tap_grads = jnp.stack(
    lax.reduce(
      products,
      (zero,) * len(products),
      lambda xs, ys: tuple(x + y for x, y in zip(xs, ys)),
      (0, 1, 2),
    )
  )
  return image_grad, tap_grads.reshape(taps.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_conv_shifted(
  inputs: Array, kernel: Array, stride: int, dilation: int, padding: Padding
) -> Array:
  """Depthwise conv as a sum of shifted slices; fuses into one loop under XLA.

  Output position (i, j) reads padded input (i·s + p·d, j·s + q·d) for each tap
  (p, q), exactly the window of `depthwise_conv_grouped`.

  The gradient is written by hand (`_shifted_backward`) and runs one image at
  a time: left to autodiff, XLA keeps all k·k shifted windows of the whole
  batch alive for the kernel gradient, which cost more than the rest of the
  training step's convolutions together; and one image's activations fit in
  the CPU caches where a batch's do not, which makes the backward's shifted
  reads 3-4x faster. (The forward stays batched so that XLA fuses the
  BatchNorm and ReLU6 before it into the same loop.)
  """
  kernel_h, kernel_w = kernel.shape[:2]
  taps = kernel.reshape(kernel_h, kernel_w, inputs.shape[-1])
  return _shifted_taps_sum(
    _pad_spatial(inputs, padding), taps, stride, dilation
  )


def _shifted_forward(inputs, kernel, stride, dilation, padding):
  output = depthwise_conv_shifted.fun(inputs, kernel, stride, dilation, padding)
  return output, (inputs, kernel)


def _shifted_backward(stride, dilation, padding, residuals, output_grad):
  """Gradients of `depthwise_conv_shifted`: one image at a time, the kernel
  gradient summed over the batch as it goes."""
  inputs, kernel = residuals
  kernel_h, kernel_w = kernel.shape[:2]
  taps = kernel.reshape(kernel_h, kernel_w, inputs.shape[-1])

  def accumulate(taps_grad, image_and_grad):
    image, grad = image_and_grad
    image_grad, image_taps_grad = _shifted_image_grads(
      image[None], grad[None], taps, stride, dilation, padding
    )
    return taps_grad + image_taps_grad, image_grad[0]

  accumulation = jnp.promote_types(kernel.dtype, jnp.float32)
  taps_grad, input_grad = lax.scan(
    accumulate, jnp.zeros(taps.shape, accumulation), (inputs, output_grad)
  )
  return input_grad, taps_grad.reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv_shifted.defvjp(_shifted_forward, _shifted_backward)


@jax.custom_vjp
def pointwise_conv(inputs: Array, kernel: Array) -> Array:
  """1x1 convolution as a matrix product over the channel axis.

  `kernel` is [C_in, C_out]. The gradient is written by hand only to control
  the memory layout on CPU: autodiff's kernel gradient contracts the batch and
  spatial axes, for which XLA transposes the output gradient and fuses the
  whole BatchNorm backward into that transpose, an order that reads memory
  badly (several times slower than the matrix products). The barrier makes the
  output gradient a plain array first.
  """
  return lax.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())))


def _pointwise_forward(inputs, kernel):
  return pointwise_conv.fun(inputs, kernel), (inputs, kernel)


def _pointwise_backward(residuals, output_grad):
  inputs, kernel = residuals
  output_grad = lax.optimization_barrier(output_grad)
  input_grad = lax.dot_general(
    output_grad, kernel, (((output_grad.ndim - 1,), (1,)), ((), ()))
  )
  rows_in = inputs.reshape(-1, inputs.shape[-1])
  rows_grad = output_grad.reshape(-1, output_grad.shape[-1])
  kernel_grad = lax.dot_general(rows_in, rows_grad, (((0,), (0,)), ((), ())))
  return input_grad, kernel_grad


pointwise_conv.defvjp(_pointwise_forward, _pointwise_backward)


def resolve_implementation(
  implementation: str, backend: Optional[str] = None
) -> str:
  """'auto' is 'cpu' on the CPU backend and 'xla' on GPU and TPU."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f'model.implementation must be one of {IMPLEMENTATIONS}, got '
      f'{implementation!r}.'
    )
  if implementation == 'auto':
    backend = jax.default_backend() if backend is None else backend
    return 'cpu' if backend == 'cpu' else 'xla'
  return implementation


def depthwise_conv(implementation: str) -> Callable[..., Array]:
  """The depthwise convolution of a formulation ('auto', 'cpu' or 'xla')."""
  if resolve_implementation(implementation) == 'cpu':
    return depthwise_conv_shifted
  return depthwise_conv_grouped


class DepthwiseConv(nn.Module):
  """k x k depthwise convolution without bias (a BatchNorm follows).

  Attributes:
    kernel_size: spatial size of the square kernel.
    strides: stride of both spatial dimensions.
    dilation: atrous rate (output stride 16/8 replaces strides by rates).
    padding: 'same' (TensorFlow) or 'symmetric' (PyTorch).
    implementation: 'auto', 'cpu' (shifted slices) or 'xla' (grouped
      convolution); see the module docstring.
    dtype: computation dtype; parameters stay `param_dtype`.
  """

  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  padding: str = 'same'
  implementation: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = initializers.DEPTHWISE

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    channels = inputs.shape[-1]
    kernel = self.param(
      'kernel',
      self.kernel_init,
      (self.kernel_size, self.kernel_size, 1, channels),
      self.param_dtype,
    )
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    padding = conv_padding(
      inputs.shape[1:3],
      self.kernel_size,
      self.strides,
      self.dilation,
      self.padding,
    )
    conv = depthwise_conv(self.implementation)
    return conv(inputs, kernel, self.strides, self.dilation, padding)


def conv_as_patches(
  inputs: Array, kernel: Array, stride: int, padding: Padding
) -> Array:
  """A k x k convolution as one matrix product over k·k·C_in patches.

  Used on CPU for the 3x3 stem (3 input channels), where XLA's convolution and
  especially its kernel gradient run far below matrix-product speed. The patch
  of output (i, j) lists padded input (i·s + p, j·s + q, c) in (p, q, c) order,
  the row-major order of the HWIO kernel, so the kernel is only reshaped.
  """
  kernel_h, kernel_w, in_channels, out_channels = kernel.shape
  padded = _pad_spatial(inputs, padding)
  out_h = (padded.shape[1] - kernel_h) // stride + 1
  out_w = (padded.shape[2] - kernel_w) // stride + 1
  patches = jnp.concatenate(
    [
      _window(padded, p, q, out_h, out_w, stride)
      for p in range(kernel_h)
      for q in range(kernel_w)
    ],
    axis=-1,
  )
  return pointwise_conv(
    patches, kernel.reshape(kernel_h * kernel_w * in_channels, out_channels)
  )


class Conv(nn.Module):
  """Regular k x k convolution without bias (a BatchNorm follows).

  With the 'xla' formulation (GPU/TPU, and export to TensorFlow/TFLite, where
  it becomes CONV_2D) every convolution is `lax.conv_general_dilated`. With
  'cpu', a 1x1 convolution is a matrix product over the channel axis and a
  k x k one a matrix product over im2col patches, which XLA:CPU runs at GEMM
  speed. An atrous (`dilation` > 1) convolution, DeepLab's ASPP (paper §6.3),
  is always XLA's dilated convolution.
  """

  features: int
  kernel_size: int = 1
  strides: int = 1
  dilation: int = 1
  padding: str = 'same'
  implementation: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = initializers.HE_NORMAL

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kernel = self.param(
      'kernel',
      self.kernel_init,
      (self.kernel_size, self.kernel_size, inputs.shape[-1], self.features),
      self.param_dtype,
    )
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    cpu = resolve_implementation(self.implementation) == 'cpu'
    if cpu and self.kernel_size == 1 and self.strides == 1:
      return pointwise_conv(inputs, kernel[0, 0])
    padding = conv_padding(
      inputs.shape[1:3],
      self.kernel_size,
      self.strides,
      self.dilation,
      self.padding,
    )
    if cpu and self.dilation == 1:
      return conv_as_patches(inputs, kernel, self.strides, padding)
    return lax.conv_general_dilated(
      inputs,
      kernel,
      window_strides=(self.strides, self.strides),
      padding=padding,
      rhs_dilation=(self.dilation, self.dilation),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )


def _valid_counts_1d(
  size: int, window: int, stride: int, padding: tuple[int, int]
) -> np.ndarray:
  """How many positions of each output's window lie inside the input."""
  output_size = (size + sum(padding) - window) // stride + 1
  starts = np.arange(output_size) * stride - padding[0]
  return np.minimum(starts + window, size) - np.maximum(starts, 0)


def average_pool(
  inputs: Array,
  window: int,
  stride: int,
  padding: str = 'same',
  implementation: str = 'auto',
) -> Array:
  """A window x window average over the positions inside the input (the
  padding is not counted, as TensorFlow's 'SAME' average pool; ShuffleNet's
  and NASNet's pools), NHWC.

  'cpu': XLA's windowed reduction (`nn.avg_pool`). 'xla' (GPU, TPU, export):
  a depthwise convolution with a constant kernel of ones, divided by each
  output position's constant count: the same sums, and in an int8 TFLite
  export a convolution keeps its own output scale, where TFLite's int8
  AVERAGE_POOL_2D must keep its input's; a concatenation after the pool (a
  ShuffleNet shortcut) then narrowed the input's range and clipped it
  (docs/model.md).
  """
  pads = conv_padding(inputs.shape[1:3], window, stride, 1, padding)
  if resolve_implementation(implementation) == 'cpu':
    return nn.avg_pool(
      inputs,
      (window, window),
      (stride, stride),
      padding=pads,
      count_include_pad=False,
    )
  channels = inputs.shape[-1]
  kernel = jnp.ones((window, window, 1, channels), inputs.dtype)
  # Under this name, statistics.count_multiply_adds leaves it out: pooling,
  # not a layer's multiply-adds.
  with jax.named_scope(POOLING_SCOPE):
    sums = lax.conv_general_dilated(
      inputs,
      kernel,
      window_strides=(stride, stride),
      padding=pads,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=channels,
    )
  rows, columns = (
    _valid_counts_1d(size, window, stride, pad)
    for size, pad in zip(inputs.shape[1:3], pads, strict=True)
  )
  inverse = 1.0 / np.outer(rows, columns)[None, :, :, None]
  return sums * jnp.asarray(inverse, sums.dtype)


def grouped_pointwise_conv(inputs: Array, kernel: Array, groups: int) -> Array:
  """A 1x1 convolution of `groups` groups as one batched matrix product.

  `kernel` is Flax's grouped layout [1, 1, C_in / g, C_out]: group i reads
  input channels [i·C_in/g, (i+1)·C_in/g) and writes output channels
  [i·C_out/g, (i+1)·C_out/g). XLA:CPU runs a grouped convolution far below
  matrix-product speed (as for the depthwise one); a batched matmul over the
  group axis is the same sums (ShuffleNet's pointwise group convolutions).
  """
  *batch, in_channels = inputs.shape
  per_group_in, out_channels = kernel.shape[2], kernel.shape[3]
  per_group_out = out_channels // groups
  grouped = inputs.reshape(*batch, groups, per_group_in)
  weights = kernel[0, 0].reshape(per_group_in, groups, per_group_out)
  outputs = jnp.einsum('...gi,igo->...go', grouped, weights)
  return outputs.reshape(*batch, out_channels)


class GroupConv(nn.Module):
  """A k x k convolution of `groups` groups, without bias (a BatchNorm
  follows): ShuffleNet's pointwise group convolution (Zhang et al. 2017).

  The kernel is Flax's [k, k, C_in / groups, C_out], so the parameters equal
  `nn.Conv(feature_group_count=groups)`'s. With the 'cpu' formulation a 1x1
  one is `grouped_pointwise_conv`; otherwise XLA's grouped convolution.
  """

  features: int
  groups: int
  kernel_size: int = 1
  strides: int = 1
  padding: str = 'same'
  implementation: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = initializers.HE_NORMAL

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    in_channels = inputs.shape[-1]
    if in_channels % self.groups or self.features % self.groups:
      raise ValueError(
        f'A group convolution of {self.groups} groups needs input and '
        f'output channels divisible by {self.groups}; got {in_channels} '
        f'and {self.features}.'
      )
    kernel = self.param(
      'kernel',
      self.kernel_init,
      (
        self.kernel_size,
        self.kernel_size,
        in_channels // self.groups,
        self.features,
      ),
      self.param_dtype,
    )
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    cpu = resolve_implementation(self.implementation) == 'cpu'
    if cpu and self.kernel_size == 1 and self.strides == 1:
      return grouped_pointwise_conv(inputs, kernel, self.groups)
    padding = conv_padding(
      inputs.shape[1:3], self.kernel_size, self.strides, 1, self.padding
    )
    return lax.conv_general_dilated(
      inputs,
      kernel,
      window_strides=(self.strides, self.strides),
      padding=padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=self.groups,
    )


def channel_shuffle(inputs: Array, groups: int) -> Array:
  """ShuffleNet's channel shuffle (Zhang et al. 2017, Figure 1): the
  channels as [groups, C / groups], transposed and flattened, so that the
  next group convolution's groups each read from every previous group."""
  *batch, channels = inputs.shape
  shaped = inputs.reshape(*batch, groups, channels // groups)
  return jnp.swapaxes(shaped, -1, -2).reshape(*batch, channels)


def _relu6_mask(z: Array) -> Array:
  # jax.nn.relu6's derivative: 1 strictly inside (0, 6), 0 elsewhere.
  return (z > 0) & (z < 6)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(
  inputs: Array, scale: Array, bias: Array, epsilon: float, relu6: bool
) -> tuple[Array, Array, Array]:
  """BatchNorm with batch statistics, optionally followed by ReLU6.

  Computes what `flax.linen.BatchNorm(use_running_average=False)` and then
  `jax.nn.relu6` compute: statistics over all axes but the last, in float32,
  variance as E[x²] - E[x]² (biased). Returns (outputs, mean, variance); the
  statistics are for the running averages and must not be differentiated
  (callers wrap them in `lax.stop_gradient`; their cotangents are ignored).

  The gradient is written by hand so that the backward pass keeps only the
  input (which the convolution before it has already written to memory) and
  reads it twice: one pass for the two per-channel sums, one for the input
  gradient. Autodiff keeps the centred input and the activation's output as
  well, three more passes over the batch's largest tensors on CPU.
  """
  outputs, mean, var, _ = _batch_norm_train_forward_impl(
    inputs, scale, bias, epsilon, relu6
  )
  return outputs, mean, var


def _batch_norm_train_forward_impl(inputs, scale, bias, epsilon, relu6):
  axes = tuple(range(inputs.ndim - 1))
  x = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
  mean = jnp.mean(x, axes)
  var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axes) - jnp.square(mean))
  inv = lax.rsqrt(var + epsilon)
  z = (x - mean) * (inv * scale) + bias
  if relu6:
    z = jnp.minimum(jnp.maximum(z, 0.0), 6.0)
  return z.astype(inputs.dtype), mean, var, inv


def _batch_norm_train_forward(inputs, scale, bias, epsilon, relu6):
  outputs, mean, var, inv = _batch_norm_train_forward_impl(
    inputs, scale, bias, epsilon, relu6
  )
  return (outputs, mean, var), (inputs, scale, bias, mean, inv)


def _batch_norm_train_backward(epsilon, relu6, residuals, cotangents):
  del epsilon
  inputs, scale, bias, mean, inv = residuals
  output_grad = cotangents[0]
  axes = tuple(range(inputs.ndim - 1))
  count = np.prod([inputs.shape[axis] for axis in axes])
  x = inputs.astype(mean.dtype)
  normalized = (x - mean) * inv
  grad = output_grad.astype(mean.dtype)
  if relu6:
    grad = jnp.where(_relu6_mask(normalized * scale + bias), grad, 0.0)
  bias_grad = jnp.sum(grad, axes)
  scale_grad = jnp.sum(grad * normalized, axes)
  input_grad = (inv * scale) * (
    grad - (bias_grad + normalized * scale_grad) / count
  )
  return (
    input_grad.astype(inputs.dtype),
    scale_grad.astype(scale.dtype),
    bias_grad.astype(bias.dtype),
  )


batch_norm_train.defvjp(_batch_norm_train_forward, _batch_norm_train_backward)


def batch_norm_train_autodiff(
  inputs: Array, scale: Array, bias: Array, epsilon: float, relu6: bool
) -> tuple[Array, Array, Array]:
  """`batch_norm_train` for autodiff: the same function, no custom gradient
  (the 'xla' formulation, what `flax.linen.BatchNorm` differentiates)."""
  axes = tuple(range(inputs.ndim - 1))
  x = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
  mean = jnp.mean(x, axes)
  var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axes) - jnp.square(mean))
  z = (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias
  if relu6:
    z = jax.nn.relu6(z)
  return z.astype(inputs.dtype), mean, var


class BatchNorm(nn.Module):
  """BatchNorm over the last axis with an optional fused ReLU6.

  Variables match `flax.linen.BatchNorm` ('params': scale, bias;
  'batch_stats': mean, var), as do the outputs and running-average updates
  (tests/test_layers.py), so checkpoints are interchangeable with it.

  Attributes:
    use_running_average: inference mode (running statistics, no update).
    momentum: running average decay.
    epsilon: added to the variance.
    relu6: apply ReLU6 after the affine transform.
    implementation: 'auto', 'cpu' (hand-written backward) or 'xla'
      (autodiff); see the module docstring.
    dtype: dtype of the outputs (statistics are always float32).
  """

  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-3
  relu6: bool = False
  implementation: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    features = inputs.shape[-1]
    stats_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
    ra_mean = self.variable(
      'batch_stats', 'mean', initializers.ZEROS, None, (features,), stats_dtype
    )
    ra_var = self.variable(
      'batch_stats', 'var', initializers.ONES, None, (features,), stats_dtype
    )
    scale = self.param(
      'scale', initializers.ONES, (features,), self.param_dtype
    )
    bias = self.param('bias', initializers.ZEROS, (features,), self.param_dtype)
    inputs = inputs.astype(self.dtype)
    if self.use_running_average:
      # An affine map per channel, folded into one multiply-add (in float32;
      # one rounding to `dtype` at the end).
      multiplier = lax.rsqrt(ra_var.value + self.epsilon) * scale
      offset = bias - ra_mean.value * multiplier
      z = inputs.astype(stats_dtype) * multiplier + offset
      if self.relu6:
        z = jax.nn.relu6(z)
      return z.astype(self.dtype)
    if resolve_implementation(self.implementation) == 'cpu':
      normalize = batch_norm_train
    else:
      normalize = batch_norm_train_autodiff
    outputs, mean, var = normalize(
      inputs, scale, bias, self.epsilon, self.relu6
    )
    if not self.is_initializing():
      mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return outputs


class ConvBN(nn.Module):
  """A convolution, BatchNorm ("BN after every layer", paper §6.1), activation.

  Attributes:
    conv: a module factory taking no arguments (a `functools.partial` of
      `Conv` or `DepthwiseConv`); built here under the name 'conv'.
    norm: a `BatchNorm` factory (momentum, epsilon and `use_running_average`
      bound, see `batch_norm`); built as 'bn'.
    activation: applied after the norm; None for the linear bottleneck.
      ReLU6 is fused into the norm; any other callable is applied after it.
  """

  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  activation: Optional[Callable[[Array], Array]] = None

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    x = self.conv(name='conv')(inputs)
    fused_relu6 = self.activation is jax.nn.relu6
    x = self.norm(name='bn', relu6=fused_relu6)(x)
    if self.activation is not None and not fused_relu6:
      x = self.activation(x)
    return x


def batch_norm(
  *,
  train: bool,
  momentum: float,
  epsilon: float,
  dtype: Any,
  implementation: str = 'auto',
) -> Callable[..., nn.Module]:
  """BatchNorm factory. In training, statistics are over the whole global batch.

  Under `jit` with the batch sharded over a mesh, the mean and variance are
  reductions over the global batch axis, so XLA inserts the cross-device
  all-reduce: statistics are synchronised across all devices and hosts.
  """
  return functools.partial(
    BatchNorm,
    use_running_average=not train,
    momentum=momentum,
    epsilon=epsilon,
    dtype=dtype,
    implementation=implementation,
  )


def module_factories(
  *,
  train: bool,
  momentum: float,
  epsilon: float,
  padding: str,
  dtype: Any,
  implementation: str,
) -> tuple[Callable[..., nn.Module], ...]:
  """(norm, conv, depthwise_conv) factories for a network's ConvBN layers,
  all in one formulation ('auto', 'cpu' or 'xla', see the module docstring).
  'auto' is resolved here, once, for the backend the model is built on."""
  implementation = resolve_implementation(implementation)
  norm = batch_norm(
    train=train,
    momentum=momentum,
    epsilon=epsilon,
    dtype=dtype,
    implementation=implementation,
  )
  conv = functools.partial(
    Conv, padding=padding, dtype=dtype, implementation=implementation
  )
  depthwise = functools.partial(
    DepthwiseConv, padding=padding, dtype=dtype, implementation=implementation
  )
  return norm, conv, depthwise


def network_factories(
  network, *, train: bool
) -> tuple[Callable[..., nn.Module], ...]:
  """`module_factories` with a network's own layer options: its
  `batch_norm_momentum`, `batch_norm_epsilon`, `padding`, `dtype` (a name in
  DTYPES) and `implementation` (MobileNetV2 and the heads on it share them)."""
  return module_factories(
    train=train,
    momentum=network.batch_norm_momentum,
    epsilon=network.batch_norm_epsilon,
    padding=network.padding,
    dtype=DTYPES[network.dtype],
    implementation=network.implementation,
  )


def pooled_classifier(
  features: Array,
  num_classes: int,
  dropout_rate: float,
  train: bool,
  endpoints: dict[str, Array],
) -> tuple[Array, dict[str, Array]]:
  """Every classifier's end: global average pooling (in float32), dropout and
  a dense layer with bias named 'classifier'. Call inside the network's
  compact method. With `num_classes` 0 it returns the pooled features (a
  backbone without classifier). Adds 'global_pool' and 'logits' to
  `endpoints`."""
  x = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
  endpoints['global_pool'] = x
  if not num_classes:
    return x, endpoints
  x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  logits = nn.Dense(
    num_classes,
    dtype=jnp.float32,
    kernel_init=initializers.LECUN_NORMAL,
    bias_init=initializers.ZEROS,
    name='classifier',
  )(x)
  endpoints['logits'] = logits
  return logits, endpoints
