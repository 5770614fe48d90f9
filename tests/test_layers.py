"""Both formulations of the layers ('cpu', 'xla') compute plain Flax's
function: values, gradients and BatchNorm statistics, each forced on the CPU.
"""

import functools

import flax.linen as nn
import flax_reference  # tests/flax_reference.py
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax.models import initializers
from mnv2_jax.models import layers
from mnv2_jax.models import mobilenet_v2


@pytest.mark.parametrize('padding_mode', ['same', 'symmetric'])
@pytest.mark.parametrize(
  'size,stride,dilation',
  [(8, 1, 1), (7, 1, 1), (8, 2, 1), (7, 2, 1), (9, 1, 2), (10, 1, 4)],
)
def test_shifted_depthwise_matches_grouped(
  size, stride, dilation, padding_mode
):
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 16))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 16))
  padding = layers.conv_padding(x.shape[1:3], 3, stride, dilation, padding_mode)

  def loss(conv, x, kernel):
    y = conv(x, kernel, stride, dilation, padding)
    # A fixed random cotangent so every output element matters.
    w = jax.random.normal(jax.random.key(2), y.shape)
    return jnp.sum(y * w), y

  (_, y_ref), g_ref = jax.value_and_grad(
    lambda *a: loss(layers.depthwise_conv_grouped, *a),
    argnums=(0, 1),
    has_aux=True,
  )(x, kernel)
  (_, y), g = jax.value_and_grad(
    lambda *a: loss(layers.depthwise_conv_shifted, *a),
    argnums=(0, 1),
    has_aux=True,
  )(x, kernel)
  assert y.shape == y_ref.shape
  # Same products summed in another order: float32 rounding only.
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(g[0], g_ref[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(g[1], g_ref[1], rtol=1e-5, atol=1e-4)


def test_shifted_depthwise_bfloat16_gradients_accumulate_in_float32():
  # bfloat16 activations: the kernel gradient sums a whole batch's products;
  # in bfloat16 that sum was 7-12% off the float32 one (8 x 56 x 56 x 16).
  # Accumulated in float32 it is as close as the grouped convolution's
  # (measured 0.3%; bfloat16 inputs carry 2^-8 relative rounding).
  x = jax.random.normal(jax.random.key(0), (8, 56, 56, 16))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 16))
  padding = layers.conv_padding(x.shape[1:3], 3, 1, 1, 'same')
  cotangent = jax.random.normal(jax.random.key(2), x.shape)

  def kernel_grad(conv, dtype):
    return jax.grad(
      lambda k: jnp.sum(
        conv(x.astype(dtype), k.astype(dtype), 1, 1, padding).astype(
          jnp.float32
        )
        * cotangent
      )
    )(kernel)

  exact = kernel_grad(layers.depthwise_conv_grouped, jnp.float32)
  for conv in (layers.depthwise_conv_shifted, layers.depthwise_conv_grouped):
    assert _relative_error(kernel_grad(conv, jnp.bfloat16), exact) < 0.01


def test_same_padding_is_tensorflow_same():
  # TF 'SAME' at stride 2 on an even size pads 0 before, 1 after (the TF-slim release; docs/paper.md).
  assert layers.conv_padding((224, 224), 3, 2, 1, 'same') == ((0, 1), (0, 1))
  assert layers.conv_padding((7, 7), 3, 2, 1, 'same') == ((1, 1), (1, 1))
  assert layers.conv_padding((14, 14), 3, 1, 2, 'same') == ((2, 2), (2, 2))
  # PyTorch pads (1, 1) whatever the stride.
  assert layers.conv_padding((224, 224), 3, 2, 1, 'symmetric') == (
    (1, 1),
    (1, 1),
  )


def test_depthwise_module_implementations_share_parameters():
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 8))
  shifted = layers.DepthwiseConv(strides=2, implementation='cpu')
  grouped = layers.DepthwiseConv(strides=2, implementation='xla')
  variables = shifted.init(jax.random.key(1), x)
  assert variables['params']['kernel'].shape == (3, 3, 1, 8)
  np.testing.assert_allclose(
    shifted.apply(variables, x),
    grouped.apply(variables, x),
    rtol=1e-5,
    atol=1e-5,
  )


def test_auto_implementation_per_backend():
  assert jax.default_backend() == 'cpu'
  assert layers.resolve_implementation('auto') == 'cpu'
  assert layers.resolve_implementation('auto', backend='gpu') == 'xla'
  assert layers.resolve_implementation('auto', backend='tpu') == 'xla'
  assert layers.resolve_implementation('xla') == 'xla'
  with pytest.raises(ValueError, match='model.implementation'):
    layers.resolve_implementation('fast')


def test_pointwise_conv_is_a_matrix_product():
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 8))
  conv = layers.Conv(features=4, implementation='cpu')
  variables = conv.init(jax.random.key(1), x)
  kernel = variables['params']['kernel']
  np.testing.assert_allclose(
    conv.apply(variables, x),
    jnp.einsum('nhwc,cd->nhwd', x, kernel[0, 0]),
    rtol=1e-5,
    atol=1e-5,
  )


def _values_and_grads(fn, *args):
  """fn(*args), and the gradients of a fixed random projection of it."""

  def loss(*a):
    y = fn(*a)
    w = jax.random.normal(jax.random.key(7), y.shape, y.dtype)
    return jnp.sum(y * w), y

  (_, y), grads = jax.value_and_grad(
    loss, argnums=tuple(range(len(args))), has_aux=True
  )(*args)
  return y, grads


def test_pointwise_conv_gradients_match_autodiff():
  x = jax.random.normal(jax.random.key(0), (3, 6, 5, 8))
  kernel = jax.random.normal(jax.random.key(1), (8, 12))
  y, grads = _values_and_grads(layers.pointwise_conv, x, kernel)
  y_ref, grads_ref = _values_and_grads(
    lambda x, k: jnp.einsum('nhwc,cd->nhwd', x, k), x, kernel
  )
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('padding_mode', ['same', 'symmetric'])
@pytest.mark.parametrize('size,stride', [(16, 2), (15, 2), (9, 1)])
def test_conv_as_patches_matches_convolution(size, stride, padding_mode):
  # The CPU stem: 3x3 conv over 3 channels as one matrix product of patches.
  x = jax.random.normal(jax.random.key(0), (2, size, size + 2, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 16))
  padding = layers.conv_padding(x.shape[1:3], 3, stride, 1, padding_mode)

  def reference(x, kernel):
    return jax.lax.conv_general_dilated(
      x,
      kernel,
      (stride, stride),
      padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )

  y, grads = _values_and_grads(
    lambda x, k: layers.conv_as_patches(x, k, stride, padding), x, kernel
  )
  y_ref, grads_ref = _values_and_grads(reference, x, kernel)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('implementation', ['cpu', 'xla'])
@pytest.mark.parametrize('relu6', [False, True])
def test_batch_norm_matches_flax_in_training(relu6, implementation):
  # Values, gradients (input, scale, bias) and running-average updates equal
  # flax.linen.BatchNorm followed by jax.nn.relu6.
  x = 3.0 * jax.random.normal(jax.random.key(0), (4, 5, 6, 8)) + 1.5
  ours = layers.BatchNorm(
    use_running_average=False,
    momentum=0.9,
    epsilon=1e-3,
    relu6=relu6,
    implementation=implementation,
  )
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3)
  variables = flax_bn.init(jax.random.key(1), x)
  params = {
    'scale': 3.0 + 0.3 * jax.random.normal(jax.random.key(2), (8,)),
    'bias': 0.2 * jax.random.normal(jax.random.key(3), (8,)),
  }
  stats = {'mean': jnp.full((8,), 0.3), 'var': jnp.full((8,), 2.0)}
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == (
    jax.tree.map(jnp.shape, variables)
  )

  def run(module, activation):
    def fn(x, scale, bias):
      y, updates = module.apply(
        {'params': {'scale': scale, 'bias': bias}, 'batch_stats': stats},
        x,
        mutable=['batch_stats'],
      )
      return activation(y), updates['batch_stats']

    y, grads = _values_and_grads(
      lambda *a: fn(*a)[0], x, params['scale'], params['bias']
    )
    return y, grads, fn(x, params['scale'], params['bias'])[1]

  y, grads, updates = run(ours, lambda y: y)
  y_ref, grads_ref, updates_ref = run(
    flax_bn, jax.nn.relu6 if relu6 else (lambda y: y)
  )
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)
  for key in ('mean', 'var'):
    np.testing.assert_allclose(updates[key], updates_ref[key], rtol=1e-5)
  if relu6:  # the clipping is exercised on both sides
    assert float(jnp.mean(y == 0)) > 0.05 and float(jnp.max(y)) == 6.0


def test_batch_norm_matches_flax_in_inference():
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, 4))
  variables = {
    'params': {'scale': jnp.arange(1.0, 5.0), 'bias': jnp.arange(4.0)},
    'batch_stats': {'mean': jnp.full((4,), 0.5), 'var': jnp.full((4,), 3.0)},
  }
  ours = layers.BatchNorm(use_running_average=True, epsilon=1e-3)
  flax_bn = nn.BatchNorm(use_running_average=True, epsilon=1e-3)
  expected = flax_bn.apply(variables, x)
  # Four elementwise operations ((x - mean) * rsqrt(var + eps) * scale +
  # bias), rounded in another order; an absolute term for outputs that
  # cancel to near zero.
  np.testing.assert_allclose(
    ours.apply(variables, x),
    expected,
    rtol=4 * helpers.FLOAT32_EPS,
    atol=helpers.elementwise_atol(4, float(np.abs(expected).max())),
  )


# One layer of each kind MobileNetV2 has: (kernel, stride, dilation, groups,
# input channels, output channels).
_CONV_BN_LAYERS = {
  'stem 3x3 stride 2': (3, 2, 1, 1, 3, 16),
  'expansion 1x1': (1, 1, 1, 1, 8, 48),
  'depthwise 3x3': (3, 1, 1, 48, 48, 48),
  'depthwise 3x3 stride 2': (3, 2, 1, 48, 48, 48),
  'depthwise 3x3 rate 2 (output stride 16/8)': (3, 1, 2, 48, 48, 48),
  'atrous 3x3 rate 2 (ASPP)': (3, 1, 2, 1, 8, 16),
}


def _relative_error(value, reference):
  value, reference = (
    np.asarray(value, np.float64),
    np.asarray(reference, np.float64),
  )
  return np.linalg.norm(value - reference) / max(
    np.linalg.norm(reference), 1e-30
  )


@pytest.mark.parametrize('implementation', ['cpu', 'xla'])
@pytest.mark.parametrize('layer', list(_CONV_BN_LAYERS))
def test_conv_bn_relu6_formulations_match_plain_flax(layer, implementation):
  # A whole ConvBN layer in training mode against nn.Conv + nn.BatchNorm +
  # relu6 with the same variables: outputs, the gradients of the input and
  # of every parameter, and the BatchNorm statistics' updates.
  kernel, stride, dilation, groups, channels_in, channels_out = _CONV_BN_LAYERS[
    layer
  ]
  x = 2.0 * jax.random.normal(jax.random.key(0), (3, 9, 10, channels_in))
  if groups == 1:
    conv = functools.partial(
      layers.Conv,
      channels_out,
      kernel_size=kernel,
      strides=stride,
      dilation=dilation,
      implementation=implementation,
    )
  else:
    conv = functools.partial(
      layers.DepthwiseConv,
      kernel_size=kernel,
      strides=stride,
      dilation=dilation,
      implementation=implementation,
    )
  norm = layers.batch_norm(
    train=True,
    momentum=0.9,
    epsilon=1e-3,
    dtype=jnp.float32,
    implementation=implementation,
  )
  ours = layers.ConvBN(conv, norm, jax.nn.relu6)
  reference = flax_reference.ConvBN(
    channels_out,
    kernel_size=kernel,
    strides=stride,
    dilation=dilation,
    groups=groups,
    train=True,
    momentum=0.9,
    epsilon=1e-3,
  )
  variables = initializers.host_variables(ours, x.shape, seed=3)
  # Scales and shifts that make ReLU6 clip at both ends.
  variables['params']['bn']['scale'] = np.linspace(
    1.5, 3.5, channels_out, dtype=np.float32
  )
  variables['params']['bn']['bias'] = np.linspace(
    -0.5, 0.5, channels_out, dtype=np.float32
  )
  assert jax.tree.map(np.shape, variables) == jax.tree.map(
    np.shape, jax.eval_shape(reference.init, jax.random.key(0), x)
  )

  def run(module):
    def fn(x, params):
      y, updates = module.apply(
        {'params': params, 'batch_stats': variables['batch_stats']},
        x,
        mutable=['batch_stats'],
      )
      return y, updates['batch_stats']

    y, grads = _values_and_grads(lambda *a: fn(*a)[0], x, variables['params'])
    return y, grads, fn(x, variables['params'])[1]

  y, grads, stats = jax.jit(lambda: run(ours))()
  y_ref, grads_ref, stats_ref = jax.jit(lambda: run(reference))()
  assert y.shape == y_ref.shape
  assert float(jnp.mean(y == 0)) > 0.05 and float(jnp.max(y)) == 6.0
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for path, g, g_ref in zip(
    [
      jax.tree_util.keystr(p)
      for p, _ in jax.tree_util.tree_flatten_with_path(grads)[0]
    ],
    jax.tree.leaves(grads),
    jax.tree.leaves(grads_ref),
  ):
    assert _relative_error(g, g_ref) < 1e-5, path
  for s, s_ref in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_ref)):
    np.testing.assert_allclose(s, s_ref, rtol=1e-5, atol=1e-6)


def test_network_formulations_match_plain_flax(monkeypatch):
  # The whole network (α 0.35, 32x32) in training mode: the loss's gradient
  # of every parameter, both formulations against plain Flax. In float64:
  # a freshly initialised deep network with BatchNorm over few values per
  # channel amplifies rounding differences from layer to layer (float32 sums
  # in another order, ~1e-7 per layer, reach 6e-5 to 0.16 relative at the
  # first layers' gradients depending on batch, size and XLA version), which
  # would hide a real difference; float64's rounding stays far below 1e-6.
  monkeypatch.setitem(mobilenet_v2.DTYPES, 'float64', jnp.float64)
  config = dict(num_classes=10, width_multiplier=0.35)
  with jax.enable_x64(True):
    reference = flax_reference.MobileNetV2(**config, dtype=jnp.float64)
    images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3), jnp.float64)
    variables = initializers.host_variables(
      mobilenet_v2.MobileNetV2(**config), images.shape, seed=0, train=False
    )
    weights = jnp.arange(1.0, 11.0)

    def gradients(apply):
      def loss(params):
        outputs, _ = apply(
          {'params': params, 'batch_stats': variables['batch_stats']},
          images,
          train=True,
          mutable=['batch_stats'],
        )
        return jnp.sum(outputs[0] * weights)

      return jax.jit(jax.grad(loss))(variables['params'])

    expected = gradients(reference.apply)
    scale = max(float(jnp.linalg.norm(g)) for g in jax.tree.leaves(expected))
    for implementation in ('xla', 'cpu'):
      grads = gradients(
        mobilenet_v2.MobileNetV2(
          **config, dtype='float64', implementation=implementation
        ).apply
      )
      for (path, g), g_ref in zip(
        jax.tree_util.tree_flatten_with_path(grads)[0],
        jax.tree.leaves(expected),
      ):
        # Leaves whose gradient is zero in exact arithmetic (a bias before a
        # BatchNorm in training mode) hold rounding noise: measured against
        # the largest gradient instead. Measured: <= 3e-9.
        error = float(jnp.linalg.norm(g - g_ref))
        reference_norm = max(float(jnp.linalg.norm(g_ref)), 1e-6 * scale)
        assert error / reference_norm < 1e-6, (
          implementation,
          jax.tree_util.keystr(path),
          error / reference_norm,
        )


def test_malloc_restart_only_when_wanted():
  from mnv2_jax.training import allocator

  tuned = allocator.tuned_environment({'PATH': '/bin'})
  if tuned is not None:  # Linux with glibc
    assert tuned['GLIBC_TUNABLES'] == allocator.TUNABLES
    assert tuned['PATH'] == '/bin' and tuned[allocator.SWITCH] == 'tuned'
    # The restarted process does not restart again.
    assert allocator.tuned_environment(tuned) is None
  assert allocator.tuned_environment({allocator.SWITCH: 'default'}) is None
  assert allocator.tuned_environment({'GLIBC_TUNABLES': 'x=1'}) is None
