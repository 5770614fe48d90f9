"""The fast CPU depthwise convolution must compute exactly the grouped one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax import layers


@pytest.mark.parametrize('padding_mode', ['same', 'symmetric'])
@pytest.mark.parametrize('size,stride,dilation', [
    (8, 1, 1), (7, 1, 1), (8, 2, 1), (7, 2, 1), (9, 1, 2), (10, 1, 4)])
def test_shifted_depthwise_matches_grouped(size, stride, dilation,
                                           padding_mode):
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 16))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 16))
  padding = layers.conv_padding(x.shape[1:3], 3, stride, dilation,
                                padding_mode)

  def loss(conv, x, kernel):
    y = conv(x, kernel, stride, dilation, padding)
    # A fixed random cotangent so every output element matters.
    w = jax.random.normal(jax.random.key(2), y.shape)
    return jnp.sum(y * w), y

  (_, y_ref), g_ref = jax.value_and_grad(
      lambda *a: loss(layers.depthwise_conv_grouped, *a),
      argnums=(0, 1), has_aux=True)(x, kernel)
  (_, y), g = jax.value_and_grad(
      lambda *a: loss(layers.depthwise_conv_shifted, *a),
      argnums=(0, 1), has_aux=True)(x, kernel)
  assert y.shape == y_ref.shape
  # Same products summed in another order: float32 rounding only.
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(g[0], g_ref[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(g[1], g_ref[1], rtol=1e-5, atol=1e-4)


def test_same_padding_is_tensorflow_same():
  # TF 'SAME' at stride 2 on an even size pads 0 before, 1 after (PAPER.md §2).
  assert layers.conv_padding((224, 224), 3, 2, 1, 'same') == ((0, 1), (0, 1))
  assert layers.conv_padding((7, 7), 3, 2, 1, 'same') == ((1, 1), (1, 1))
  assert layers.conv_padding((14, 14), 3, 1, 2, 'same') == ((2, 2), (2, 2))
  # PyTorch pads (1, 1) whatever the stride.
  assert layers.conv_padding((224, 224), 3, 2, 1, 'symmetric') == (
      (1, 1), (1, 1))


def test_depthwise_module_implementations_share_parameters():
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 8))
  shifted = layers.DepthwiseConv(strides=2, implementation='shifted')
  grouped = layers.DepthwiseConv(strides=2, implementation='grouped')
  variables = shifted.init(jax.random.key(1), x)
  assert variables['params']['kernel'].shape == (3, 3, 1, 8)
  np.testing.assert_allclose(shifted.apply(variables, x),
                             grouped.apply(variables, x), rtol=1e-5, atol=1e-5)


def test_auto_implementation_is_shifted_on_cpu():
  assert jax.default_backend() == 'cpu'
  assert layers.resolve_depthwise_implementation('auto') == 'shifted'
  with pytest.raises(ValueError, match='depthwise_implementation'):
    layers.resolve_depthwise_implementation('fast')


def test_pointwise_conv_is_a_matrix_product():
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 8))
  conv = layers.Conv(features=4)
  variables = conv.init(jax.random.key(1), x)
  kernel = variables['params']['kernel']
  np.testing.assert_allclose(conv.apply(variables, x),
                             jnp.einsum('nhwc,cd->nhwd', x, kernel[0, 0]),
                             rtol=1e-5, atol=1e-5)
