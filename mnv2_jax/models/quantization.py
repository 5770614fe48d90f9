"""TFLite's int8 simulated in the forward pass, and the consistency term.

`python -m mnv2_jax.export --quantize int8` quantizes a float network after
training: weights to int8 per output channel (symmetric, [-127, 127]) with
the BatchNorms folded in, and every tensor an op writes to int8 with one
scale and zero point per tensor (asymmetric, 256 levels), calibrated on
images (Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", the scheme TFLite implements).
A network whose activations fill one scale per tensor unevenly loses more to
that rounding (docs/model.md: ShuffleNet and NASNet-A). Training with the
rounding in the forward pass (Jacob et al. §3) lets the weights adapt to it:

* `fake_quantize_params` rounds every kernel to its int8 grid per output
  channel. A kernel's last axis is its output channel in every layer here
  (HWIO, depthwise [k, k, 1, C], Dense [in, out]), and folding a BatchNorm
  scales each output channel by one number, which commutes with rounding
  per channel, so rounding the unfolded kernel is rounding the folded one.
* `simulated_int8()` rounds the output of every module (a block's
  output: its first, with its endpoints) to 256 levels between the tensor's
  batch minimum and maximum (widened to hold 0, as TFLite's ranges are),
  and the image going in. The exceptions are the convolutions that a
  BatchNorm follows: the converter folds the BatchNorm into them, so their
  outputs are never int8 tensors. In every network here a BatchNorm follows
  each `Conv` and `GroupConv`, and each `DepthwiseConv` of a `ConvBN`; a
  depthwise convolution elsewhere (NASNet-A's separable convolutions,
  depthwise then pointwise) writes an int8 tensor. For the same reason a
  `ConvBN`'s BatchNorm is not rounded on its own when an activation
  follows it; the `ConvBN`'s output is rounded instead. Operations outside
  modules (a NASNet-A cell's sums of pairs, pools) are not rounded; the
  pooled features are, as the output of the classifier's `nn.Dropout`
  (an identity in inference), as TFLite's MEAN writes int8.
  Where the simulation is milder than TFLite: NASNet-A's factorized
  reduction concatenates two convolutions before its BatchNorm, which the
  converter may not fold, and a concatenation in TFLite gives its inputs
  one scale (SSDLite's heads); neither is simulated.

Rounding has no useful derivative; both use the straight-through estimator
(Bengio et al. 2013; Jacob et al. §3): the forward pass sees the rounded
value, the backward pass the identity. Ranges carry no gradient.

Whose range rounds an image (`config.quantization_ranges`): the whole
batch's ('batch', the default), so that nothing is clipped, or the other
images' in the batch ('others'). The export rounds each image with ranges
calibrated on other images, and clips an image beyond them; 'others' lets
the term see that clipping, with derivative 0 where a value is clipped (as
TensorFlow's fake quantization has it).

Training the rounded network alone (Jacob et al.'s quantization-aware
training) fits the int8 network to the labels; it does not keep the float
network near it, and the export's check (`exporters.export`) compares the
two. `consistency` is what `config.quantization_consistency` adds to the
loss instead: the mean squared difference between the float outputs and
the simulated int8 ones, relative to the float outputs' mean square. Under
the straight-through estimator each rounding error is a constant added to
its tensor, so the term's gradient is how much the weights amplify those
errors on their way to the output, which training then reduces. On the
48-pixel proxy, 12 epochs of it at weight 300 take the trained ShuffleNet
0.5x's int8 drift from 14.63% to 2.85-4.71% over three seeds, ShuffleNet
1.5x's from 8.41% to 3.42% and NASNet-A's from 14.56% to 6.51%, and cost
ShuffleNet 0.5x and NASNet-A some float top-1 against the same fine-tuning
without it. The others' ranges (above) gave 4.90% and 6.77% (docs/model.md,
experiments/int8_consistency.py).
"""

from __future__ import annotations

import contextlib
from typing import Any
from typing import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mnv2_jax import choices
from mnv2_jax.models import layers

ACTIVATION_LEVELS = 256  # int8 tensors: one scale and zero point each
KERNEL_LIMIT = 127  # int8 weights: symmetric, per output channel


def _straight_through(value: jax.Array, rounded: jax.Array) -> jax.Array:
  """`rounded` forward, the identity backward."""
  return value + lax.stop_gradient(rounded - value)


def _leave_one_out_max(per_image: jax.Array) -> jax.Array:
  """For each image, the largest of the other images' values."""
  top, index = lax.top_k(per_image, 2)
  return jnp.where(jnp.arange(per_image.shape[0]) == index[0], top[1], top[0])


def fake_quantize_activation(
  value: jax.Array, ranges: str = 'batch'
) -> jax.Array:
  """`value` rounded to 256 levels between a minimum and a maximum
  (widened to hold 0, so that 0 is exact), one scale for the tensor.

  `ranges` says whose minimum and maximum: 'batch', the whole batch's,
  so that nothing is clipped; 'others', for each image the other images'
  in the batch (the first axis is the batch), as the export rounds a held
  image with ranges that other images set, so that an image beyond them is
  clipped. A clipped value has derivative 0 (TensorFlow's fake
  quantization, Jacob et al. §3), the others 1. With one image, or a
  tensor without a batch axis, 'others' is the tensor's own range."""
  # In float32: bfloat16's 8 bits of mantissa cannot tell 256 levels apart.
  exact = value.astype(jnp.float32)
  if ranges == 'others' and exact.ndim > 1 and exact.shape[0] > 1:
    axes = tuple(range(1, exact.ndim))
    shape = (-1,) + (1,) * (exact.ndim - 1)
    high = _leave_one_out_max(jnp.max(exact, axis=axes)).reshape(shape)
    low = -_leave_one_out_max(-jnp.min(exact, axis=axes)).reshape(shape)
    clipping = True
  elif ranges in choices.QUANTIZATION_RANGES:
    high, low = jnp.max(exact), jnp.min(exact)
    clipping = False
  else:
    raise ValueError(
      f'ranges must be one of {choices.QUANTIZATION_RANGES}, got {ranges!r}.'
    )
  low = lax.stop_gradient(jnp.minimum(low, 0.0))
  high = lax.stop_gradient(jnp.maximum(high, 0.0))
  scale = jnp.maximum(high - low, 1e-8) / (ACTIVATION_LEVELS - 1)
  zero_point = jnp.round(-low / scale)
  levels = jnp.clip(
    jnp.round(exact / scale) + zero_point, 0, ACTIVATION_LEVELS - 1
  )
  rounded = (levels - zero_point) * scale
  if clipping:
    # The straight-through estimator for the rounding only: a value beyond
    # the levels gets no gradient, one on or within them all of it.
    inside = (exact >= -zero_point * scale) & (
      exact <= (ACTIVATION_LEVELS - 1 - zero_point) * scale
    )
    exact = jnp.where(inside, exact, lax.stop_gradient(exact))
  return _straight_through(exact, rounded).astype(value.dtype)


def fake_quantize_kernel(kernel: jax.Array) -> jax.Array:
  """`kernel` rounded to int8 per output channel (its last axis),
  symmetric: [-127, 127] times the channel's largest magnitude / 127."""
  axes = tuple(range(kernel.ndim - 1))
  largest = jnp.max(jnp.abs(kernel), axis=axes, keepdims=True)
  scale = lax.stop_gradient(jnp.maximum(largest, 1e-12) / KERNEL_LIMIT)
  levels = jnp.clip(jnp.round(kernel / scale), -KERNEL_LIMIT, KERNEL_LIMIT)
  return _straight_through(kernel, levels * scale)


def fake_quantize_params(params: Any) -> Any:
  """`params` with every convolution and dense kernel rounded to int8 per
  output channel; biases, BatchNorm scales and offsets as they are (the
  converter keeps biases in int32)."""

  def visit(path, leaf):
    name = getattr(path[-1], 'key', None)
    return fake_quantize_kernel(leaf) if name == 'kernel' else leaf

  return jax.tree_util.tree_map_with_path(visit, params)


def _is_float_array(value: Any) -> bool:
  return isinstance(value, jax.Array) and jnp.issubdtype(
    value.dtype, jnp.floating
  )


def _rounded_in_int8(module: nn.Module) -> bool:
  """Whether TFLite's int8 model holds `module`'s output as an int8
  tensor (see the module docstring)."""
  parent = module.parent
  if isinstance(module, (layers.Conv, layers.GroupConv)):
    return False
  if isinstance(module, layers.DepthwiseConv):
    return not isinstance(parent, layers.ConvBN)
  if isinstance(module, layers.BatchNorm) and isinstance(parent, layers.ConvBN):
    return parent.activation is None or parent.activation is jax.nn.relu6
  return True


def _interceptor(ranges: str):
  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    if module.parent is None or not isinstance(module.parent, nn.Module):
      # The network itself: its input image is quantized (float in, int8
      # inside); its outputs are its last layers' outputs, rounded there.
      args = tuple(
        fake_quantize_activation(a, ranges) if _is_float_array(a) else a
        for a in args
      )
      return next_fun(*args, **kwargs)
    outputs = next_fun(*args, **kwargs)
    if not _rounded_in_int8(module):
      return outputs
    if _is_float_array(outputs):
      return fake_quantize_activation(outputs, ranges)
    if isinstance(outputs, tuple) and outputs and _is_float_array(outputs[0]):
      # A block's (output, endpoints).
      return (fake_quantize_activation(outputs[0], ranges), *outputs[1:])
    return outputs

  return intercept


@contextlib.contextmanager
def simulated_int8(ranges: str = 'batch') -> Iterator[None]:
  """Within it, every `apply` rounds activations as int8 TFLite does (the
  module docstring; `ranges` as `fake_quantize_activation` takes it); pair
  it with `fake_quantize_params`."""
  with nn.intercept_methods(_interceptor(ranges)):
    yield


def simulated_apply(
  model: nn.Module, variables: dict, *args, ranges: str = 'batch', **kwargs
):
  """`model.apply(variables, ...)` as the int8 model computes it: kernels
  rounded per output channel, activations per tensor."""
  rounded = {**variables, 'params': fake_quantize_params(variables['params'])}
  with simulated_int8(ranges):
    return model.apply(rounded, *args, **kwargs)


def consistency(float_outputs: tuple, int8_outputs: tuple) -> jax.Array:
  """The mean squared difference of each of a model's outputs (a
  classifier's logits; a detector's box encodings and class logits) over
  the float output's own mean square, summed over the outputs. The
  endpoints (a dict) are not compared.

  Relative, so that scaling the outputs leaves it unchanged: the absolute
  difference can be lowered by shrinking the logits, and NASNet-A's did
  shrink by a third under it, so that its drift relative to them rose
  (docs/model.md). The denominator keeps its gradient; that is what takes
  away the reward for shrinking."""
  if not isinstance(float_outputs, tuple):
    raise TypeError(
      "consistency() compares a model's tuple of outputs, got "
      f'{type(float_outputs).__name__}.'
    )
  total = 0.0
  for exact, rounded in zip(float_outputs, int8_outputs):
    if isinstance(exact, dict):
      continue
    exact = exact.astype(jnp.float32)
    difference = jnp.mean(jnp.square(rounded.astype(jnp.float32) - exact))
    # The floor only guards an all-zero output (0 / 0).
    total = total + difference / jnp.maximum(jnp.mean(jnp.square(exact)), 1e-12)
  return total
