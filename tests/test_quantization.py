"""int8 simulated in the forward pass (models/quantization.py): the rounding
of activations and kernels, its straight-through gradient, which tensors it
rounds, and training with the int8 consistency term."""

import functools

import flax.linen as nn
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnv2_jax import configuration
from mnv2_jax import tasks
from mnv2_jax.models import initializers
from mnv2_jax.models import layers
from mnv2_jax.models import nasnet
from mnv2_jax.models import quantization
from mnv2_jax.models import shufflenet
from mnv2_jax.training import optimization
from mnv2_jax.training import state as training_state
from mnv2_jax.training import trainer


def test_activation_rounding_is_256_levels_holding_zero():
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 16)) * 3.0 + 1.0
  rounded = np.asarray(quantization.fake_quantize_activation(x))
  low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
  step = (high - low) / 255
  assert len(np.unique(rounded)) <= 256
  # Nearest level: within half a step (and float32 rounding of the level).
  assert np.max(np.abs(rounded - np.asarray(x))) <= step / 2 * (1 + 1e-4)
  # 0 is a level: an exact zero (ReLU's) stays exactly zero.
  with_zero = x.at[0, 0, 0, 0].set(0.0)
  assert quantization.fake_quantize_activation(with_zero)[0, 0, 0, 0] == 0.0
  # All positive: the range is widened to [0, max], as TFLite's are, so
  # every value is a whole number of steps of max / 255.
  positive = jnp.abs(x) + 1.0
  steps = np.asarray(quantization.fake_quantize_activation(positive)) / (
    float(positive.max()) / 255
  )
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)


def test_other_images_ranges_clip_an_image_beyond_them():
  x = jax.random.normal(jax.random.key(4), (4, 6, 6, 3))
  # Image 2 holds the batch's largest and smallest values by far.
  x = x.at[2, 0, 0, 0].set(10.0).at[2, 1, 1, 1].set(-9.0)
  rounded = np.asarray(quantization.fake_quantize_activation(x, 'others'))
  others = np.asarray(x)[[0, 1, 3]]
  # Each image is rounded on the levels the other three images' range sets
  # (as an exported model rounds a held image on the calibration images'
  # ranges), so image 2 is clipped to theirs, within half a step.
  step = (others.max() - others.min()) / 255
  assert rounded[2].max() <= others.max() + step / 2
  assert rounded[2].min() >= others.min() - step / 2
  # The other images' range is the whole batch's: image 2's extremes, on
  # the batch's levels (the same as 'batch' ranges give them).
  batch = np.asarray(quantization.fake_quantize_activation(x, 'batch'))
  np.testing.assert_allclose(rounded[[0, 1, 3]], batch[[0, 1, 3]], atol=1e-6)
  # A clipped value has no gradient; every other passes straight through.
  grad = np.asarray(
    jax.grad(
      lambda v: jnp.sum(quantization.fake_quantize_activation(v, 'others'))
    )(x)
  )
  assert grad[2, 0, 0, 0] == 0.0 and grad[2, 1, 1, 1] == 0.0
  clipped = (np.asarray(x) > others.max()) | (np.asarray(x) < others.min())
  clipped[[0, 1, 3]] = False
  np.testing.assert_array_equal(grad, np.where(clipped, 0.0, 1.0))
  # A value on a range's end is not clipped: ReLU's zeros, where the range
  # starts at 0, keep their gradient.
  relu = jax.nn.relu(x)
  grad = jax.grad(
    lambda v: jnp.sum(quantization.fake_quantize_activation(v, 'others'))
  )(relu)
  assert float(jnp.min(relu[0])) == 0.0
  np.testing.assert_array_equal(grad[0], np.ones_like(grad[0]))


def test_kernel_rounding_is_per_output_channel_and_commutes_with_scaling():
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 8, 5))
  rounded = np.asarray(quantization.fake_quantize_kernel(kernel))
  scale = np.max(np.abs(np.asarray(kernel)), axis=(0, 1, 2)) / 127
  levels = rounded / scale
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
  assert np.max(np.abs(levels)) <= 127 + 1e-3
  # Folding a BatchNorm multiplies each output channel by one number; the
  # rounding of the folded kernel is the folded rounding (the reason the
  # unfolded kernel can be rounded in training).
  per_channel = jnp.asarray([0.5, -2.0, 3.0, 1e-2, 7.0])
  np.testing.assert_allclose(
    quantization.fake_quantize_kernel(kernel * per_channel),
    rounded * np.asarray(per_channel),
    rtol=1e-5,
    atol=1e-7,
  )


def test_rounding_passes_the_gradient_straight_through():
  x = jax.random.normal(jax.random.key(2), (2, 4, 4, 3))
  weights = jax.random.normal(jax.random.key(3), x.shape)
  for rounding in (
    quantization.fake_quantize_activation,
    quantization.fake_quantize_kernel,
  ):
    grad = jax.grad(lambda v, f=rounding: jnp.sum(f(v) * weights))(x)
    np.testing.assert_array_equal(grad, weights)


def _distinct_values_by_module(module, images):
  """Each submodule's output in `simulated_int8`: {(class, path): number of
  distinct values}."""
  variables = module.init(jax.random.key(0), images)

  def outputs_by_module(variables, images):
    captured = {}

    def record(next_fun, args, kwargs, context):
      outputs = next_fun(*args, **kwargs)
      if context.method_name == '__call__' and isinstance(outputs, jax.Array):
        key = (type(context.module).__name__, '/'.join(context.module.path))
        captured[key] = outputs
      return outputs

    # Entered first, the recorder sees the outputs after the rounding.
    with nn.intercept_methods(record), quantization.simulated_int8():
      module.apply(variables, images)
    return captured

  captured = jax.jit(outputs_by_module)(variables, images)
  return {key: len(np.unique(np.asarray(v))) for key, v in captured.items()}


def test_simulation_rounds_the_tensors_that_tflite_holds_in_int8():
  norm, conv, depthwise_conv = _factories()
  group_conv = functools.partial(layers.GroupConv, implementation='xla')
  images = jax.random.normal(jax.random.key(4), (2, 16, 16, 24))
  unit = shufflenet.ShuffleUnit(
    24, 12, 3, 1, True, group_conv, depthwise_conv, norm
  )
  seen = _distinct_values_by_module(unit, images)
  # Inside a ConvBN the convolution's output is folded into the BatchNorm
  # (float in the int8 model, thousands of values); the ConvBN's output is
  # an int8 tensor.
  for name in ('compress', 'depthwise', 'expand'):
    assert seen[('ConvBN', name)] <= 256
    assert (
      seen[
        (('GroupConv', 'DepthwiseConv')[name == 'depthwise'], f'{name}/conv')
      ]
      > 256
    )
  stack = nasnet.SeparableStack(24, 3, 1, conv, depthwise_conv, norm)
  seen = _distinct_values_by_module(stack, images)
  # NASNet-A's separable convolution: the depthwise half writes an int8
  # tensor, the pointwise half feeds a BatchNorm.
  for repeat in (1, 2):
    assert seen[('DepthwiseConv', f'depthwise_{repeat}')] <= 256
    assert seen[('Conv', f'pointwise_{repeat}')] > 256
    assert seen[('BatchNorm', f'bn_{repeat}')] <= 256


def _factories():
  return layers.module_factories(
    train=False,
    momentum=0.99,
    epsilon=1e-3,
    padding='same',
    dtype=jnp.float32,
    implementation='xla',
  )


def test_consistency_term_has_a_gradient():
  norm, conv, depthwise_conv = _factories()
  stack = nasnet.SeparableStack(24, 3, 1, conv, depthwise_conv, norm)
  images = jax.random.normal(jax.random.key(5), (2, 16, 16, 24))
  variables = stack.init(jax.random.key(0), images)

  def term(params):
    weights = {**variables, 'params': params}
    exact = stack.apply(weights, images)
    rounded = quantization.simulated_apply(stack, weights, images)
    return quantization.consistency((exact,), (rounded,))

  value, grads = jax.jit(jax.value_and_grad(term))(variables['params'])
  # Each rounding error is a constant to the straight-through gradient;
  # how the weights carry it to the output is not.
  assert float(value) > 0
  assert float(optax.tree.norm(grads)) > 0


def test_consistency_is_relative_to_the_outputs_own_size():
  logits = jax.random.normal(jax.random.key(1), (6, 10))
  rounded = logits + 0.05 * jax.random.normal(jax.random.key(2), (6, 10))
  value = quantization.consistency((logits,), (rounded,))
  expected = np.mean((rounded - logits) ** 2) / np.mean(logits**2)
  np.testing.assert_allclose(value, expected, rtol=1e-5)

  # Scaling the outputs neither changes it nor has a gradient: training
  # cannot lower it by shrinking the logits (docs/model.md, NASNet-A).
  def scaled(scale):
    return quantization.consistency((scale * logits,), (scale * rounded,))

  np.testing.assert_allclose(scaled(0.3), value, rtol=1e-5)
  assert abs(float(jax.grad(scaled)(1.0))) < 1e-4 * float(value)
  # A detector's two outputs each against their own size; endpoints skipped.
  boxes = 100.0 * logits
  pair = quantization.consistency(
    (boxes, logits, {'feature': logits}),
    (100.0 * rounded, rounded, {'feature': 0 * logits}),
  )
  np.testing.assert_allclose(pair, 2 * expected, rtol=1e-5)


def test_training_step_adds_the_consistency_term():
  config = helpers.tiny_digits_config(quantization_consistency=10.0)
  configuration.validate(config)
  task = tasks.build_task(config)
  _, learning_rate, optimizer = optimization.build(config, 1000)
  variables = initializers.host_variables(
    task.model, training_state.model_input_shape(config), 0, train=False
  )
  state = training_state.create_train_state(config, variables, optimizer)
  images = jax.random.uniform(
    jax.random.key(5), (8, config.image_size, config.image_size, 3), minval=-1
  )
  step = functools.partial(
    trainer.train_step,
    model=task.model,
    task=task,
    optimizer=optimizer,
    config=config,
    learning_rate=learning_rate,
  )
  batch = {'image': images, 'label': jnp.arange(8) % 10}
  _, metrics = jax.jit(step)(state, batch, jax.random.key(0))
  assert 0 < float(metrics['int8_consistency']) < np.inf
  # The weight enters the update, not only the logged metric: the traced
  # steps at two weights differ (traced, not compiled again).
  traced = {}
  for weight in (10.0, 1.0):
    config.quantization_consistency = weight
    program = jax.make_jaxpr(functools.partial(step, config=config))
    traced[weight] = str(program(state, batch, jax.random.key(0)))
  assert traced[10.0] != traced[1.0]
  # The ranges reach the simulation: with the other images' ranges the
  # image holding a tensor's extreme is clipped, and the rest are rounded
  # on that range without it, so the term changes (up or down).
  config.quantization_consistency = 10.0
  config.quantization_ranges = 'others'
  configuration.validate(config)
  _, clipped = jax.jit(functools.partial(step, config=config))(
    state, batch, jax.random.key(0)
  )
  assert float(clipped['int8_consistency']) != float(
    metrics['int8_consistency']
  )
