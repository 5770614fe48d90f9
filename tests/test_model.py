"""MobileNetV2 architecture: shapes, channels, parameter counts, variants."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax.models import mobilenet_v2
from mnv2_jax.tasks import inference


def _shapes(model, size, batch=1):
  """Output and endpoint shapes without computing anything."""
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  return variables, jax.eval_shape(model.apply, variables, images)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
  'alpha,trainable,with_statistics',
  [
    # Trainable parameters with 1000 classes; Keras, timm and torchvision
    # give the same numbers (docs/paper.md).
    (0.35, 1_677_128, 1_691_208),
    (1.0, 3_504_872, 3_538_984),
    (1.4, 6_108_776, 6_156_712),
  ],
)
def test_parameter_counts_match_peers(alpha, trainable, with_statistics):
  variables, _ = _shapes(
    mobilenet_v2.MobileNetV2(num_classes=1000, width_multiplier=alpha), 224
  )
  assert _count(variables['params']) == trainable
  assert _count(variables) == with_statistics


@pytest.mark.parametrize(
  'size,final', [(224, 7), (192, 6), (160, 5), (128, 4), (96, 3)]
)  # Table 2 / PAPER §2
def test_final_feature_map_size(size, final):
  _, (logits, endpoints) = _shapes(
    mobilenet_v2.MobileNetV2(num_classes=10), size
  )
  assert logits.shape == (1, 10)
  assert endpoints['layer_19'].shape == (1, final, final, 1280)
  assert endpoints['layer_18/output'].shape == (1, final, final, 320)


@pytest.mark.parametrize('output_stride', [32, 16, 8])
def test_output_stride(output_stride):
  model = mobilenet_v2.MobileNetV2(num_classes=0, output_stride=output_stride)
  _, (features, endpoints) = _shapes(model, 224)
  side = 224 // output_stride
  assert endpoints['layer_18/output'].shape == (1, side, side, 320)
  assert features.shape == (1, 1280)
  # Atrous rates replace the removed strides (DeepLab convention): the layer
  # whose stride is removed keeps the previous rate.
  blocks = mobilenet_v2.block_configs(output_stride=output_stride)
  dilations = {b.layer: b.dilation for b in blocks}
  if output_stride == 16:
    assert dilations[15] == 1 and dilations[16] == 2 and dilations[18] == 2
  if output_stride == 8:
    assert dilations[8] == 1 and dilations[9] == 2
    assert dilations[15] == 2 and dilations[16] == 4


def test_release_endpoints_at_ssdlite_resolution():
  _, (_, endpoints) = _shapes(mobilenet_v2.MobileNetV2(num_classes=91), 320)
  # SSDLite's first feature map: expansion of layer 15, stride 16, 576 ch
  # (paper §6.2).
  assert endpoints['layer_15/expansion_output'].shape == (1, 20, 20, 576)
  assert endpoints['layer_19'].shape == (1, 10, 10, 1280)
  assert 'layer_2/expansion_output' not in endpoints  # t = 1: no expansion
  assert endpoints['layer_2/depthwise_output'].shape == (1, 160, 160, 32)


@pytest.mark.parametrize(
  'alpha,channels',
  [
    # Stem, the 7 bottleneck rows, last conv: TF release / Keras rounding
    # (the same rounding gives all 22 published parameter counts, test_stats).
    (0.35, [16, 8, 8, 16, 24, 32, 56, 112, 1280]),
    (0.5, [16, 8, 16, 16, 32, 48, 80, 160, 1280]),
    (0.75, [24, 16, 24, 24, 48, 72, 120, 240, 1280]),
    (1.0, [32, 16, 24, 32, 64, 96, 160, 320, 1280]),
    (1.3, [40, 24, 32, 40, 80, 128, 208, 416, 1664]),
    (1.4, [48, 24, 32, 48, 88, 136, 224, 448, 1792]),
  ],
)
def test_channels_per_width_multiplier(alpha, channels):
  variables, _ = _shapes(
    mobilenet_v2.MobileNetV2(num_classes=10, width_multiplier=alpha), 96
  )
  params = variables['params']
  first_of_row = [2, 3, 5, 8, 12, 15, 18]
  got = [params['layer_1']['conv']['kernel'].shape[-1]]
  got += [
    params[f'layer_{i}']['project']['conv']['kernel'].shape[-1]
    for i in first_of_row
  ]
  got.append(params['layer_19']['conv']['kernel'].shape[-1])
  assert got == channels


def test_make_divisible():
  assert mobilenet_v2.make_divisible(32 * 0.35) == 16  # 8 would be >10% below
  assert mobilenet_v2.make_divisible(16 * 0.35) == 8
  assert mobilenet_v2.make_divisible(1) == 8  # minimum 8
  assert mobilenet_v2.make_divisible(1280 * 1.4) == 1792


def test_expansion_ratio_constant_and_per_block():
  blocks = mobilenet_v2.block_configs(expansion_ratio=4)
  assert blocks[0].expanded_channels == 32 and not blocks[0].has_expansion
  assert blocks[1].expanded_channels == 16 * 4
  per_block = (1,) + (6,) * 8 + (3,) * 8
  blocks = mobilenet_v2.block_configs(expansion_ratio=per_block)
  assert [b.expanded_channels // b.in_channels for b in blocks[1:]] == [
    6
  ] * 8 + [3] * 8
  with pytest.raises(ValueError, match='17 values'):
    mobilenet_v2.block_configs(expansion_ratio=(6, 6))


def _init(model, x, seed=0):
  # Compiled: op-by-op dispatch of a whole network is far slower on CPU.
  return jax.jit(model.init)(jax.random.key(seed), x)


def _run(model, variables, x, **kwargs):
  return jax.jit(functools.partial(model.apply, **kwargs))(variables, x)


# One small model's variables serve every variant below: activation, residual
# placement, padding, dtype, output stride and dropout change the function,
# not the parameters.
SMALL = functools.partial(
  mobilenet_v2.MobileNetV2, num_classes=10, width_multiplier=0.35
)


@pytest.fixture(scope='module')
def small_variables():
  return _init(SMALL(), jnp.zeros((1, 64, 64, 3)))


def _images(seed=0, size=64, batch=2):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


def test_ablation_variants_change_the_function_not_the_parameters(
  small_variables,
):
  x = _images()
  reference = _run(SMALL(), small_variables, x)[0]
  for variant in [
    dict(bottleneck_activation='relu6'),
    dict(residual='expansion'),
    dict(residual='none'),
  ]:
    model = SMALL(**variant)
    variant_vars = jax.eval_shape(model.init, jax.random.key(0), x)
    assert _count(variant_vars) == _count(small_variables), variant
    out = _run(model, small_variables, x)[0]
    assert not np.allclose(out, reference, atol=1e-6), variant


def test_linear_bottleneck_output_can_be_negative(small_variables):
  # No activation on the projection (paper §3.2): bottlenecks take any sign;
  # with the relu6 ablation they are clipped to [0, 6].
  x = _images()
  for activation, has_negative in [('linear', True), ('relu6', False)]:
    model = SMALL(bottleneck_activation=activation, residual='none')
    _, endpoints = _run(model, small_variables, x)
    assert bool(jnp.any(endpoints['layer_4/output'] < 0)) == has_negative


def test_symmetric_padding_differs_at_stride_two(small_variables):
  x = _images()
  _, same = _run(SMALL(), small_variables, x)
  _, symmetric = _run(SMALL(padding='symmetric'), small_variables, x)
  assert same['layer_1'].shape == symmetric['layer_1'].shape
  assert not np.allclose(same['layer_1'], symmetric['layer_1'])


def test_bfloat16_compute_float32_parameters(small_variables):
  x = _images()
  logits, endpoints = _run(SMALL(dtype='bfloat16'), small_variables, x)
  assert endpoints['layer_10/output'].dtype == jnp.bfloat16
  assert logits.dtype == jnp.float32
  reference = _run(SMALL(), small_variables, x)[0]
  # bfloat16 keeps 8 significant bits: rounding to nearest leaves a relative
  # error of at most u = 2^-8, u/sqrt(3) RMS. Each layer rounds about three
  # times (its input and its kernel to bfloat16, its output). At
  # initialisation (He-scaled kernels, BatchNorm statistics 0 and 1) every
  # layer has gain ~1, and independent errors add in quadrature: over R
  # roundings the relative RMS error is about u·sqrt(R/3) = u·sqrt(layers),
  # 0.028 for this model's 53 (52 convolutions and the classifier).
  # Measured on the logits: 0.017-0.018 (0.029-0.037 at layer_18). Allowed: twice the estimate. It must also
  # exceed one rounding, or the computation was not bfloat16. (Trained
  # statistics change the gains: with BatchNorm statistics perturbed by up to
  # e^±0.5 the logits' error was 0.027-0.082.)
  layers = sum(
    'kernel' in jax.tree_util.keystr(path)
    for path, _ in jax.tree_util.tree_flatten_with_path(
      small_variables['params']
    )[0]
  )
  assert layers == 53
  u = 2.0**-8
  expected_error = u * np.sqrt(layers)
  error = np.sqrt(np.mean((np.asarray(logits) - reference) ** 2))
  relative_error = error / np.sqrt(np.mean(np.asarray(reference) ** 2))
  assert u / np.sqrt(3) < relative_error < 2 * expected_error, (
    relative_error,
    expected_error,
  )


def test_fast_depthwise_network_equals_grouped_network(small_variables):
  x = _images()
  for output_stride in (32, 8):
    fast = _run(
      SMALL(output_stride=output_stride, implementation='cpu'),
      small_variables,
      x,
    )
    grouped = _run(
      SMALL(output_stride=output_stride, implementation='xla'),
      small_variables,
      x,
    )
    np.testing.assert_allclose(fast[0], grouped[0], rtol=1e-4, atol=1e-4)


def test_microbatched_inference_keeps_order_and_values(small_variables):
  model = SMALL()
  x = _images(batch=8, size=32)

  def logits(images):
    return model.apply(small_variables, images, train=False)[0]

  whole = jax.jit(logits)(x)
  for microbatch in (1, 2, 4):
    split = jax.jit(
      lambda images, m=microbatch: inference.apply_in_microbatches(
        logits, images, m
      )
    )(x)
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-5)
  # Example i comes back at position i, also for pytree outputs.
  index = jnp.arange(12.0)
  out = inference.apply_in_microbatches(
    lambda v: {'same': v, 'twice': 2 * v}, index, 3
  )
  np.testing.assert_array_equal(out['same'], index)
  np.testing.assert_array_equal(out['twice'], 2 * index)
  # A micro-batch size that does not divide the batch: the whole batch at once.
  assert inference.apply_in_microbatches(lambda v: v[:1], index, 5).shape == (
    1,
  )


def test_inference_microbatch_per_backend():
  expected = 4 if jax.default_backend() == 'cpu' else 0
  assert inference.resolve_inference_microbatch(-1) == expected
  assert inference.resolve_inference_microbatch(0) == 0
  assert inference.resolve_inference_microbatch(8) == 8


def test_dropout_only_in_training(small_variables):
  x = _images(batch=4)
  model = SMALL(dropout_rate=0.5)
  np.testing.assert_array_equal(
    _run(model, small_variables, x)[0], _run(model, small_variables, x)[0]
  )
  train = jax.jit(
    lambda v, x, rng: model.apply(
      v, x, train=True, mutable=['batch_stats'], rngs={'dropout': rng}
    )[0][0]
  )
  assert not np.allclose(
    train(small_variables, x, jax.random.key(1)),
    train(small_variables, x, jax.random.key(2)),
  )


def test_parameters_are_float32(small_variables):
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(small_variables))


def test_shortcut_placement():
  blocks = mobilenet_v2.block_configs()
  bottleneck = [
    b.layer for b in blocks if mobilenet_v2.has_identity_shortcut(b)
  ]
  # Table 2: every repeat after the first of a row (stride 1, k = k').
  assert bottleneck == [4, 6, 7, 9, 10, 11, 13, 14, 16, 17]
  # Figure 6b variant: the same joints, moved onto the wide tensors around
  # each joined bottleneck, i.e. into the following block's expansion.
  assert mobilenet_v2.expansion_shortcut_layers(blocks) == (
    5,
    7,
    8,
    10,
    11,
    12,
    14,
    15,
    17,
    18,
  )
  # Per-block t with mismatched widths: no shortcut where widths differ.
  mixed = mobilenet_v2.block_configs(expansion_ratio=(1,) + (6,) * 8 + (3,) * 8)
  # Layer 10 (t = 6) follows a t = 6 block; layer 11 (t = 3) does not match.
  assert 10 in mobilenet_v2.expansion_shortcut_layers(mixed)
  assert 11 not in mobilenet_v2.expansion_shortcut_layers(mixed)
  model = mobilenet_v2.MobileNetV2(
    num_classes=10,
    residual='expansion',
    expansion_ratio=(1,) + (6,) * 8 + (3,) * 8,
  )
  _shapes(model, 64)  # builds without a shape error


def _perturbed(variables, seed=3):
  """BatchNorm statistics and affine parameters far from a fresh model's
  (mean 0, variance 1, scale 1, bias 0), as a trained network's are. The
  kernels stay as initialised: shifting them all up saturates every ReLU6,
  and a network whose outputs no longer depend on the input hides any
  difference."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  perturbed = []
  for (path, leaf), key in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    noise = jax.random.uniform(key, leaf.shape, minval=-0.5, maxval=0.5)
    if 'kernel' in name:
      perturbed.append(leaf)
    elif "'var'" in name or "'scale'" in name:
      perturbed.append(leaf * jnp.exp(noise))  # stays positive
    else:
      perturbed.append(leaf + noise)
  return jax.tree.unflatten(tree, perturbed)


def _assert_depends_on_input(endpoint, name):
  # Different images give different features: nothing saturated whole.
  spread = np.abs(endpoint - endpoint[:1]).max()
  assert spread > 0.01 * np.abs(endpoint).max(), f'{name} is input-independent'


@pytest.mark.parametrize('splits', [4, 7, 64])
def test_split_inference_equals_unsplit(small_variables, splits):
  # Paper §5.1: F(x) = Σ_i (A_i ∘ N ∘ B_i)(x) is the same function. 7
  # divides none of the expanded widths of α = 0.35 (16·6 = 96, 24·6 = 144,
  # ...) nor the stem's 16 channels, 64 leaves slices of one or two channels.
  variables = _perturbed(small_variables)
  x = _images(size=32)
  expected, expected_endpoints = _run(SMALL(), variables, x)
  outputs, endpoints = _run(SMALL(inference_splits=splits), variables, x)
  for name in ['layer_2', 'layer_3', 'layer_10', 'layer_18', 'global_pool']:
    _assert_depends_on_input(expected_endpoints[name], name)
    difference = np.abs(endpoints[name] - expected_endpoints[name]).max()
    assert difference <= 1e-5 * np.abs(expected_endpoints[name]).max(), name
  np.testing.assert_allclose(
    outputs, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
  )
  # The expanded tensors are never materialised whole, so not published.
  assert 'layer_3/expansion_output' not in endpoints
  assert 'layer_3/expansion_output' in expected_endpoints


def test_split_inference_at_output_stride_8_and_with_relu6(small_variables):
  variables = _perturbed(small_variables)
  x = _images(size=64)
  for kwargs in [
    dict(output_stride=8),
    # Without shortcuts and with ReLU6 bottlenecks the features lose the
    # input with depth (the ablations of paper §6.4, Figure 6): at 64x64
    # layer_18 still differs by 1.5% of its range from image to image, at
    # 32x32 by 0.04%.
    dict(bottleneck_activation='relu6', residual='none'),
  ]:
    expected = _run(SMALL(**kwargs), variables, x)[1]
    split = _run(SMALL(inference_splits=3, **kwargs), variables, x)[1]
    for name in ['layer_6', 'layer_14', 'layer_18']:
      _assert_depends_on_input(expected[name], f'{kwargs} {name}')
      np.testing.assert_allclose(
        split[name],
        expected[name],
        rtol=0,
        atol=1e-5 * np.abs(expected[name]).max(),
        err_msg=f'{kwargs} {name}',
      )


def test_split_inference_is_inference_only(small_variables):
  # Training computes the unsplit blocks (BatchNorm needs batch statistics of
  # the whole expanded tensor); the expansion shortcut cannot be split.
  x = _images()
  _, endpoints = _run(
    SMALL(inference_splits=4),
    small_variables,
    x,
    train=True,
    mutable=['batch_stats'],
    rngs={'dropout': jax.random.key(0)},
  )[0]
  assert 'layer_3/expansion_output' in endpoints
  with pytest.raises(ValueError, match="residual 'bottleneck' or 'none'"):
    _run(SMALL(inference_splits=2, residual='expansion'), small_variables, x)
