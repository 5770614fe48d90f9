"""Building blocks: padding rules, depthwise convolution, Conv-BN-activation.

Depthwise convolution has two implementations that compute the same function:

* ``grouped``: ``lax.conv_general_dilated`` with ``feature_group_count`` equal to
  the channel count. This is what cuDNN and the TPU compiler are built for.
* ``shifted``: the sum of k·k shifted (strided, dilated) slices of the padded
  input, each multiplied by one tap of the kernel. XLA fuses it into a single
  loop on CPU, where its grouped convolution is 5-30x slower forward and worse
  backward (JAX #23713, Flax #4207, XLA #34273; see benchmarks/).

Both take the same kernel parameter (shape ``[k, k, 1, C]``, Flax's layout for a
grouped ``nn.Conv``) and the same explicit padding, so a checkpoint does not
depend on the backend it was trained on. They agree to float32 rounding in
values and gradients (tests/test_layers.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]

PADDING_MODES = ('same', 'symmetric')
DEPTHWISE_IMPLEMENTATIONS = ('auto', 'shifted', 'grouped')


def _padding_1d(size: int, kernel: int, stride: int, dilation: int,
                mode: str) -> tuple[int, int]:
  """Padding (before, after) of one spatial dimension."""
  effective_kernel = (kernel - 1) * dilation + 1
  if mode == 'same':
    # TensorFlow 'SAME': output size ceil(size / stride); for a stride-2 3x3
    # conv on an even size this pads 0 before and 1 after (PAPER.md §2).
    output_size = -(-size // stride)
    total = max((output_size - 1) * stride + effective_kernel - size, 0)
    return total // 2, total - total // 2
  if mode == 'symmetric':
    # PyTorch ports pad (k-1)/2 on both sides whatever the stride.
    half = (effective_kernel - 1) // 2
    return half, half
  raise ValueError(f'padding must be one of {PADDING_MODES}, got {mode!r}.')


def conv_padding(spatial_shape: Sequence[int], kernel_size: int, stride: int,
                 dilation: int, mode: str) -> Padding:
  """Explicit padding of a square-kernel conv for an input of `spatial_shape`."""
  height, width = spatial_shape
  return (_padding_1d(height, kernel_size, stride, dilation, mode),
          _padding_1d(width, kernel_size, stride, dilation, mode))


def depthwise_conv_grouped(inputs: Array, kernel: Array, stride: int,
                           dilation: int, padding: Padding) -> Array:
  """Depthwise conv as a grouped convolution. `kernel` is [k, k, 1, C]."""
  return lax.conv_general_dilated(
      inputs, kernel, window_strides=(stride, stride), padding=padding,
      rhs_dilation=(dilation, dilation),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=inputs.shape[-1])


def depthwise_conv_shifted(inputs: Array, kernel: Array, stride: int,
                           dilation: int, padding: Padding) -> Array:
  """Depthwise conv as a sum of shifted slices; fuses into one loop under XLA.

  Output position (i, j) reads padded input (i·s + p·d, j·s + q·d) for each tap
  (p, q), exactly the window of `depthwise_conv_grouped`.
  """
  kernel_h, kernel_w = kernel.shape[:2]
  padded = jnp.pad(inputs, ((0, 0), padding[0], padding[1], (0, 0)))
  batch, height, width, channels = padded.shape
  out_h = (height - (kernel_h - 1) * dilation - 1) // stride + 1
  out_w = (width - (kernel_w - 1) * dilation - 1) // stride + 1
  taps = kernel.reshape(kernel_h, kernel_w, channels)
  output = None
  for p in range(kernel_h):
    for q in range(kernel_w):
      top, left = p * dilation, q * dilation
      window = lax.slice(
          padded, (0, top, left, 0),
          (batch, top + (out_h - 1) * stride + 1,
           left + (out_w - 1) * stride + 1, channels),
          (1, stride, stride, 1))
      term = window * taps[p, q]
      output = term if output is None else output + term
  return output


def resolve_depthwise_implementation(implementation: str) -> str:
  """'auto' picks 'shifted' on CPU and 'grouped' on GPU/TPU."""
  if implementation not in DEPTHWISE_IMPLEMENTATIONS:
    raise ValueError(
        f'depthwise_implementation must be one of {DEPTHWISE_IMPLEMENTATIONS}, '
        f'got {implementation!r}.')
  if implementation == 'auto':
    return 'shifted' if jax.default_backend() == 'cpu' else 'grouped'
  return implementation


class DepthwiseConv(nn.Module):
  """k x k depthwise convolution without bias (a BatchNorm follows).

  Attributes:
    kernel_size: spatial size of the square kernel.
    strides: stride of both spatial dimensions.
    dilation: atrous rate (output stride 16/8 replaces strides by rates).
    padding: 'same' (TensorFlow) or 'symmetric' (PyTorch).
    implementation: 'auto', 'shifted' or 'grouped' (see module docstring).
    dtype: computation dtype; parameters stay `param_dtype`.
  """
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  padding: str = 'same'
  implementation: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = nn.initializers.variance_scaling(
      1.0, 'fan_in', 'truncated_normal')

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    channels = inputs.shape[-1]
    kernel = self.param('kernel', self.kernel_init,
                        (self.kernel_size, self.kernel_size, 1, channels),
                        self.param_dtype)
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    padding = conv_padding(inputs.shape[1:3], self.kernel_size, self.strides,
                           self.dilation, self.padding)
    if resolve_depthwise_implementation(self.implementation) == 'shifted':
      conv = depthwise_conv_shifted
    else:
      conv = depthwise_conv_grouped
    return conv(inputs, kernel, self.strides, self.dilation, padding)


class Conv(nn.Module):
  """Regular k x k convolution without bias (a BatchNorm follows).

  A 1x1 convolution is computed as a matrix product over the channel axis,
  which XLA maps onto its GEMM kernels on every backend.
  """
  features: int
  kernel_size: int = 1
  strides: int = 1
  padding: str = 'same'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = nn.initializers.variance_scaling(
      2.0, 'fan_in', 'truncated_normal')

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kernel = self.param(
        'kernel', self.kernel_init,
        (self.kernel_size, self.kernel_size, inputs.shape[-1], self.features),
        self.param_dtype)
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    if self.kernel_size == 1 and self.strides == 1:
      return lax.dot_general(inputs, kernel[0, 0],
                             (((inputs.ndim - 1,), (0,)), ((), ())))
    padding = conv_padding(inputs.shape[1:3], self.kernel_size, self.strides,
                           1, self.padding)
    return lax.conv_general_dilated(
        inputs, kernel, window_strides=(self.strides, self.strides),
        padding=padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class ConvBN(nn.Module):
  """A convolution, BatchNorm ("BN after every layer", paper §6.1), activation.

  Attributes:
    conv: a module factory taking no arguments (a `functools.partial` of
      `Conv` or `DepthwiseConv`); built here under the name 'conv'.
    norm: a BatchNorm factory (a `functools.partial` of `nn.BatchNorm` with
      momentum, epsilon and `use_running_average` bound); built as 'bn'.
    activation: applied after the norm; None for the linear bottleneck.
  """
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  activation: Optional[Callable[[Array], Array]] = None

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    x = self.conv(name='conv')(inputs)
    x = self.norm(name='bn')(x)
    if self.activation is not None:
      x = self.activation(x)
    return x


def batch_norm(*, train: bool, momentum: float, epsilon: float,
               dtype: Any) -> Callable[..., nn.Module]:
  """BatchNorm factory. In training, statistics are over the whole global batch.

  Under `jit` with the batch sharded over a mesh, the mean and variance are
  reductions over the global batch axis, so XLA inserts the cross-device
  all-reduce: statistics are synchronised across all devices and hosts.
  """
  return functools.partial(nn.BatchNorm, use_running_average=not train,
                           momentum=momentum, epsilon=epsilon, dtype=dtype)
