"""Host initialisation: every variable drawn with NumPy from its module's
declared distribution, nothing compiled."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax import configuration
from mnv2_jax.models import initializers
from mnv2_jax.models import mobilenet_v2
from mnv2_jax.models.building import build_model


def _networks():
  detection = configuration.base_config()
  detection.task = 'detection'
  detection.dataset.name = 'scenes'
  detection.num_classes = 10
  detection.model.width_multiplier = 0.35
  segmentation = configuration.base_config()
  segmentation.task = 'segmentation'
  segmentation.dataset.name = 'scenes'
  segmentation.num_classes = 11
  segmentation.model.width_multiplier = 0.35
  segmentation.model.output_stride = 16
  segmentation.segmentation.aspp = True
  return {
    'MobileNetV2': (
      mobilenet_v2.MobileNetV2(num_classes=10, width_multiplier=0.35),
      32,
    ),
    'SSDLite': (build_model(detection), 64),
    'Mobile DeepLabv3 + ASPP': (build_model(segmentation), 33),
  }


@pytest.mark.parametrize(
  'name', ['MobileNetV2', 'SSDLite', 'Mobile DeepLabv3 + ASPP']
)
def test_host_variables_have_model_inits_structure(name):
  model, size = _networks()[name]
  shape = (1, size, size, 3)
  host = initializers.host_variables(model, shape, seed=0, train=False)
  traced = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False)
  )
  assert jax.tree.structure(host) == jax.tree.structure(traced)
  for value, expected in zip(jax.tree.leaves(host), jax.tree.leaves(traced)):
    assert isinstance(value, np.ndarray)
    assert value.shape == expected.shape and value.dtype == expected.dtype


def test_each_variable_has_its_declared_distribution():
  model = mobilenet_v2.MobileNetV2(num_classes=1000, width_multiplier=1.0)
  variables = initializers.host_variables(
    model, (1, 32, 32, 3), seed=0, train=False
  )
  params, stats = variables['params'], variables['batch_stats']
  checks = {
    # kernel, its initializer's variance scale, fan-in
    'expansion 1x1 (He)': (
      params['layer_10']['expand']['conv']['kernel'],
      2.0,
      64,
    ),
    'depthwise 3x3': (
      params['layer_10']['depthwise']['conv']['kernel'],
      1.0,
      9,
    ),
    'stem 3x3 (He)': (params['layer_1']['conv']['kernel'], 2.0, 27),
    'classifier (LeCun)': (params['classifier']['kernel'], 1.0, 1280),
  }
  for name, (kernel, scale, fan_in) in checks.items():
    std = np.sqrt(scale / fan_in)
    # Truncated at two standard deviations of the untruncated normal.
    assert np.max(np.abs(kernel)) <= 2 * std / 0.8796256610342398 + 1e-6, name
    assert abs(np.std(kernel) / std - 1) < 0.05, (name, np.std(kernel) / std)
    assert abs(np.mean(kernel)) < 0.05 * std, name
  np.testing.assert_array_equal(params['layer_10']['expand']['bn']['scale'], 1)
  np.testing.assert_array_equal(params['layer_10']['expand']['bn']['bias'], 0)
  np.testing.assert_array_equal(params['classifier']['bias'], 0)
  np.testing.assert_array_equal(stats['layer_10']['expand']['bn']['mean'], 0)
  np.testing.assert_array_equal(stats['layer_10']['expand']['bn']['var'], 1)


def test_flax_and_host_draw_the_same_distribution():
  shape = (1, 1, 96, 576)
  for initializer in (initializers.HE_NORMAL, initializers.LECUN_NORMAL):
    on_device = np.asarray(initializer(jax.random.key(0), shape))
    on_host = initializer.sample(np.random.default_rng(0), shape, np.float32)
    expected = np.sqrt(initializer.scale / 96)
    for values in (on_device, on_host):
      assert abs(np.std(values) / expected - 1) < 0.02
      assert np.max(np.abs(values)) <= 2 * expected / 0.8796256610342398 + 1e-6


def test_values_depend_only_on_seed_and_path():
  small = mobilenet_v2.MobileNetV2(num_classes=10, width_multiplier=0.35)
  other_head = mobilenet_v2.MobileNetV2(num_classes=7, width_multiplier=0.35)
  first = initializers.host_variables(small, (1, 32, 32, 3), 0, train=False)
  again = initializers.host_variables(small, (1, 32, 32, 3), 0, train=False)
  jax.tree.map(np.testing.assert_array_equal, first, again)
  # Another classifier leaves the backbone's values unchanged.
  other = initializers.host_variables(
    other_head, (1, 32, 32, 3), 0, train=False
  )
  np.testing.assert_array_equal(
    first['params']['layer_7']['expand']['conv']['kernel'],
    other['params']['layer_7']['expand']['conv']['kernel'],
  )
  reseeded = initializers.host_variables(small, (1, 32, 32, 3), 1, train=False)
  assert not np.array_equal(
    first['params']['layer_7']['expand']['conv']['kernel'],
    reseeded['params']['layer_7']['expand']['conv']['kernel'],
  )


def test_a_variable_without_an_initializer_is_named():

  class Head(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3, name='plain_dense')(x)  # Flax's own initializers

  with pytest.raises(TypeError, match=r'plain_dense.*kernel'):
    initializers.host_variables(Head(), (1, 4), seed=0)
