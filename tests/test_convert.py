"""Weights import (Keras, TF-slim, PyTorch), export, predict: exact parity.

Every reference model gets random weights and random BatchNorm statistics;
nothing is downloaded.
"""

import json
import os
import subprocess
import sys
import warnings

import helpers
import jax
import numpy as np
import pytest
import torch_reference

from mnv2_jax import configuration
from mnv2_jax import convert as convert_cli
from mnv2_jax.data import datasets
from mnv2_jax.data import digits
from mnv2_jax.data import image_files
from mnv2_jax.models.building import build_model
from mnv2_jax.training import optimization
from mnv2_jax.training import state as training_state
from mnv2_jax.training import trainer
from mnv2_jax.training import workdir as workdir_lib
from mnv2_jax.weights import exporters
from mnv2_jax.weights import importers
from mnv2_jax.weights import prediction

keras = pytest.importorskip('keras')
tf = pytest.importorskip('tensorflow')

_JAX_VERSION = tuple(int(part) for part in jax.__version__.split('.')[:2])
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _randomize_keras(keras_model, seed=0):
  rng = np.random.default_rng(seed)
  for layer in keras_model.layers:
    weights = layer.get_weights()
    if not weights:
      continue
    if isinstance(layer, keras.layers.BatchNormalization):
      gamma, beta, mean, var = weights
      weights = [
        rng.uniform(0.5, 1.5, gamma.shape),
        rng.normal(0, 0.1, beta.shape),
        rng.normal(0, 0.1, mean.shape),
        rng.uniform(0.5, 1.5, var.shape),
      ]
    else:
      weights = [w + rng.normal(0, 0.01, w.shape) for w in weights]
    layer.set_weights([w.astype(np.float32) for w in weights])
  return keras_model


def _keras_mobilenet(alpha, size, include_top=True, seed=0):
  return _randomize_keras(
    keras.applications.MobileNetV2(
      input_shape=(size, size, 3),
      alpha=alpha,
      weights=None,
      include_top=include_top,
      classifier_activation=None,
    ),
    seed,
  )


def _images(size, batch=2, seed=1):
  return (
    np.random.default_rng(seed)
    .uniform(-1, 1, (batch, size, size, 3))
    .astype(np.float32)
  )


def _apply(config, variables, images):
  model = build_model(config)
  return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)


def _assert_close(ours, reference, rtol=1e-4):
  scale = np.max(np.abs(reference))
  np.testing.assert_array_less(
    np.max(np.abs(np.asarray(ours) - reference)), rtol * scale
  )


# Keras endpoint -> ours (the release's numbering of Table 2: layer_2..18 are blocks).
KERAS_ENDPOINTS = {
  'block_13_expand_relu': 'layer_15/expansion_output',
  'block_15_add': 'layer_17/output',
  'out_relu': 'layer_19',
}


@pytest.mark.parametrize(
  'alpha,size', [(0.35, 224), (1.0, 224), (1.4, 224), (1.0, 128)]
)
def test_keras_parity_logits_and_endpoints(alpha, size):
  keras_model = _keras_mobilenet(alpha, size)
  config, variables = importers.from_keras(keras_model)
  assert config.model.width_multiplier == alpha
  assert config.image_size == size and config.num_classes == 1000
  assert (config.model.padding, config.preprocessing) == ('same', 'inception')
  x = _images(size)
  probe = keras.Model(
    keras_model.inputs,
    [keras_model.output]
    + [keras_model.get_layer(n).output for n in KERAS_ENDPOINTS],
  )
  reference = [
    t.numpy() if hasattr(t, 'numpy') else np.asarray(t)
    for t in probe(x, training=False)
  ]
  logits, endpoints = _apply(config, variables, x)
  _assert_close(logits, reference[0])
  for ours, expected in zip(KERAS_ENDPOINTS.values(), reference[1:]):
    _assert_close(endpoints[ours], expected)


def test_keras_weights_file_and_its_errors(tmp_path):
  keras_model = _keras_mobilenet(0.35, 96, include_top=False)
  path = str(tmp_path / 'mnv2_0.35_no_top.weights.h5')
  keras_model.save_weights(path)
  config, variables = importers.from_keras_weights(
    path, width_multiplier=0.35, image_size=96, include_top=False
  )
  assert config.num_classes == 0 and 'classifier' not in variables['params']
  x = _images(96)
  features = _apply(config, variables, x)[1]['layer_19']
  _assert_close(features, keras_model(x, training=False).numpy())
  with pytest.raises(importers.ConversionError, match='another alpha'):
    importers.from_keras_weights(
      path, width_multiplier=1.0, image_size=96, include_top=False
    )
  truncated = str(tmp_path / 'truncated.weights.h5')
  with open(path, 'rb') as src, open(truncated, 'wb') as dst:
    dst.write(src.read()[:5000])
  with pytest.raises(importers.ConversionError, match='truncated'):
    importers.from_keras_weights(
      truncated, width_multiplier=0.35, image_size=96, include_top=False
    )
  other = keras.applications.MobileNet(
    input_shape=(96, 96, 3), alpha=0.25, weights=None
  )
  with pytest.raises(importers.ConversionError, match="no layer 'Conv1'"):
    importers.from_keras(other)


# The TF-slim checkpoint names of each Keras layer (slim's mobilenet_v2 scopes).
def _slim_names_of_keras_layers():
  names = {
    'Conv1': 'Conv',
    'bn_Conv1': 'Conv/BatchNorm',
    'Conv_1': 'Conv_1',
    'Conv_1_bn': 'Conv_1/BatchNorm',
  }
  for b in range(17):
    keras_prefix = 'expanded_conv' if b == 0 else f'block_{b}'
    slim_scope = 'expanded_conv' if b == 0 else f'expanded_conv_{b}'
    for unit in ('expand', 'depthwise', 'project'):
      names[f'{keras_prefix}_{unit}'] = f'{slim_scope}/{unit}'
      names[f'{keras_prefix}_{unit}_BN'] = f'{slim_scope}/{unit}/BatchNorm'
  return names


def _write_slim_checkpoint(keras_model, prefix, ema_noise):
  """A TF1 checkpoint with slim's names holding the Keras model's weights,
  a 1001st 'background' logit, and moving averages (the values to use) next
  to raw weights off by `ema_noise`."""
  rng = np.random.default_rng(3)
  tensors = {}
  for keras_name, scope in _slim_names_of_keras_layers().items():
    try:
      weights = keras_model.get_layer(keras_name).get_weights()
    except ValueError:
      continue  # no expand conv in the first block
    if keras_name.endswith(('_BN', '_bn')) or keras_name == 'bn_Conv1':
      for value, var in zip(
        weights, ('gamma', 'beta', 'moving_mean', 'moving_variance')
      ):
        tensors[f'{scope}/{var}'] = value
    elif keras_name.endswith('depthwise'):
      tensors[f'{scope}/depthwise_weights'] = weights[0]
    else:
      tensors[f'{scope}/weights'] = weights[0]
  kernel, bias = keras_model.get_layer('predictions').get_weights()
  tensors['Logits/Conv2d_1c_1x1/weights'] = np.concatenate(
    [rng.normal(0, 0.01, (kernel.shape[0], 1)), kernel], 1
  )[None, None]
  tensors['Logits/Conv2d_1c_1x1/biases'] = np.concatenate([[-5.0], bias])
  with tf.Graph().as_default():
    saved = {}
    for i, (name, value) in enumerate(tensors.items()):
      value = np.asarray(value, np.float32)
      # Raw weights off by the noise; only the moving averages reproduce the
      # model.
      saved[f'MobilenetV2/{name}'] = tf.compat.v1.Variable(
        value + ema_noise, name=f'raw_{i}'
      )
      saved[f'MobilenetV2/{name}/ExponentialMovingAverage'] = (
        tf.compat.v1.Variable(value, name=f'ema_{i}')
      )
    saver = tf.compat.v1.train.Saver(saved)
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      saver.save(session, prefix)


def test_slim_checkpoint_1001_classes_with_moving_averages(tmp_path):
  keras_model = _keras_mobilenet(0.5, 96)
  prefix = str(tmp_path / 'mobilenet_v2_0.5_96.ckpt')
  _write_slim_checkpoint(keras_model, prefix, ema_noise=0.05)
  config, variables = importers.from_slim_checkpoint(prefix, image_size=96)
  assert config.num_classes == 1001 and config.background_class
  assert config.model.width_multiplier == 0.5
  x = _images(96)
  logits = np.asarray(_apply(config, variables, x)[0])
  _assert_close(logits[:, 1:], keras_model(x, training=False).numpy())
  raw = importers.from_slim_checkpoint(
    prefix, image_size=96, use_moving_average=False
  )[1]
  assert not np.allclose(
    raw['params']['layer_1']['conv']['kernel'],
    variables['params']['layer_1']['conv']['kernel'],
  )
  with pytest.raises(importers.ConversionError, match='Could not read'):
    importers.from_slim_checkpoint(str(tmp_path / 'missing.ckpt'))


def test_background_class_shifts_labels():
  config = configuration.base_config()
  config.dataset.name = 'digits'
  config.image_size = 32
  plain = next(datasets.eval_batches(config, per_host_batch_size=8))
  config.background_class = True
  config.num_classes = 11
  configuration.validate(config)
  shifted = next(datasets.eval_batches(config, per_host_batch_size=8))
  np.testing.assert_array_equal(shifted['label'], plain['label'] + 1)


@pytest.fixture(scope='module')
def torch():
  return pytest.importorskip('torch')


def test_torchvision_parity(torch):
  model, description, fallback = torch_reference.torchvision_or_reference(
    torch, 1000, 1.0
  )
  if fallback:
    # Visible in the test summary: the parity is then with the layout copy.
    warnings.warn(
      f'{fallback}: PyTorch parity checked against {description}',
      stacklevel=1,
    )
  print(f'PyTorch parity against {description}')
  module = torch_reference.randomize(torch, model).eval()
  config, variables = importers.from_torch(module.state_dict())
  assert config.model.width_multiplier == 1.0
  assert (
    config.model.padding,
    config.model.batch_norm_epsilon,
    config.preprocessing,
  ) == ('symmetric', 1e-5, 'torchvision')
  x = _images(224)
  with torch.no_grad():
    reference = module(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  _assert_close(_apply(config, variables, x)[0], reference)


def _timm_name(name):
  """torchvision key -> timm key (timm's efficientnet-style layout)."""
  parts = name.split('.')
  if parts[:2] == ['features', '0']:
    return {'0': 'conv_stem', '1': 'bn1'}[parts[2]] + '.' + parts[-1]
  if parts[:2] == ['features', '18']:
    return {'0': 'conv_head', '1': 'bn2'}[parts[2]] + '.' + parts[-1]
  if parts[0] == 'classifier':
    return 'classifier.' + parts[-1]
  block = int(parts[1]) - 1
  stage_ends = np.cumsum([1, 2, 3, 4, 3, 3, 1])
  stage = int(np.searchsorted(stage_ends, block, side='right'))
  index = block - ([0] + list(stage_ends))[stage]
  position = '.'.join(parts[3:-1])
  if block == 0:
    unit = {'0.0': 'conv_dw', '0.1': 'bn1', '1': 'conv_pw', '2': 'bn2'}[
      position
    ]
  else:
    unit = {
      '0.0': 'conv_pw',
      '0.1': 'bn1',
      '1.0': 'conv_dw',
      '1.1': 'bn2',
      '2': 'conv_pwl',
      '3': 'bn3',
    }[position]
  return f'blocks.{stage}.{index}.{unit}.{parts[-1]}'


def test_timm_layout_and_errors(torch):
  module = torch_reference.randomize(
    torch, torch_reference.mobilenet_v2(torch, 10, 0.5), seed=2
  ).eval()
  timm_state = {_timm_name(k): v for k, v in module.state_dict().items()}
  config, variables = importers.from_torch(timm_state, image_size=64)
  assert config.model.width_multiplier == 0.5 and config.num_classes == 10
  x = _images(64)
  with torch.no_grad():
    reference = module(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  _assert_close(_apply(config, variables, x)[0], reference)
  with pytest.raises(importers.ConversionError, match='shape mismatches'):
    importers.from_torch(timm_state, width_multiplier=1.0, image_size=64)
  with pytest.raises(importers.ConversionError, match='no place'):
    importers.from_torch({**timm_state, 'extra.weight': np.zeros(3)})
  with pytest.raises(importers.ConversionError, match='neither torchvision'):
    importers.from_torch({'fc.weight': np.zeros((2, 2))})


def test_saved_import_restores_for_eval_and_initialises_a_run(tmp_path):
  workdir = str(tmp_path / 'imported')
  config, variables = helpers.random_digits_workdir(workdir)
  with pytest.raises(importers.ConversionError, match='already holds'):
    importers.save(workdir, config, variables)
  # What `main --config <workdir>/config.py --config.mode=eval` runs.
  loaded = configuration.load_file(os.path.join(workdir, 'config.py'))
  assert loaded.model.width_multiplier == 0.35 and loaded.num_classes == 10
  loaded.mode = 'eval'
  results = trainer.train_and_evaluate(loaded, workdir)
  assert results['num_examples'] == 360
  # The restored weights are the saved ones: the same top-1 as applying them.
  images, labels = digits.load_split('test', 32)
  logits = np.asarray(_apply(loaded, variables, images)[0])
  assert round(results['top1'] * 360) == int(
    np.sum(logits.argmax(-1) == labels)
  )
  # init_from into a model with another number of classes: all but the
  # classifier is copied.
  other = configuration.base_config()
  other.model.width_multiplier = 0.35
  other.image_size = 32
  other_model = build_model(other, 1000)
  fresh = helpers.random_like(
    jax.eval_shape(
      lambda: training_state.create_train_state(
        other,
        training_state.abstract_variables(other, other_model),
        optimization.create_optimizer(other, lambda c: 0.1),
      )
    ),
    seed=1,
  )
  initialised, report = training_state.initialize_from(fresh, workdir)
  assert 'classifier' in report and "'kernel']" in report
  np.testing.assert_array_equal(
    initialised.params['layer_5']['expand']['conv']['kernel'],
    variables['params']['layer_5']['expand']['conv']['kernel'],
  )
  assert initialised.params['classifier']['kernel'].shape == (1280, 1000)


def test_class_names_for_imagenet_and_digits():
  config = configuration.base_config()
  names = image_files.class_names(config)
  assert len(names) == 1000 and names[1].startswith('goldfish')
  config.background_class, config.num_classes = True, 1001
  names = image_files.class_names(config)
  assert names[0] == 'background' and names[2].startswith('goldfish')
  config.dataset.name, config.num_classes = 'digits', 10
  assert image_files.class_names(config)[7] == 'digit 7'


def test_torchvision_eval_preprocessing_geometry_and_normalisation():
  from mnv2_jax.data import image_classification

  image = np.full((300, 400, 3), (200, 100, 50), np.uint8)
  encoded = tf.io.encode_png(image)
  out = image_classification.preprocess_for_eval(
    encoded, 224, 0.875, 'torchvision'
  ).numpy()
  assert out.shape == (224, 224, 3)
  expected = (
    np.array([200, 100, 50]) / 255.0 - image_classification.TORCHVISION_MEAN
  ) / (image_classification.TORCHVISION_STD)
  np.testing.assert_allclose(out[112, 112], expected, rtol=1e-5)


def test_export_tflite_savedmodel_and_predict(tmp_path):
  workdir = str(tmp_path / 'tiny')
  helpers.random_digits_workdir(workdir)
  check = dict(num_check_images=60, num_calibration_images=50)
  result = exporters.export(workdir, 'tflite', **check)
  assert result['bytes'] > 100_000 and result['num_images'] == 60
  # Acceptance: the float TFLite model agrees with JAX within 1e-4.
  assert result['max_rel_diff'] < 1e-4 and result['random_max_rel_diff'] < 1e-4
  if _JAX_VERSION < (0, 11):
    saved = exporters.export(workdir, 'savedmodel', **check)
    assert saved['max_rel_diff'] < 1e-4 and saved['random_max_rel_diff'] < 1e-4
  else:  # TensorFlow 2.21 cannot read jax 0.11's StableHLO: said, not written
    with pytest.raises(
      exporters.ExportError, match='cannot run the savedmodel'
    ):
      exporters.export(workdir, 'savedmodel', **check)
    assert not os.path.exists(os.path.join(workdir, 'export', 'model'))
  quantized = exporters.export(workdir, 'tflite', quantize='int8', **check)
  assert quantized['bytes'] < 0.5 * result['bytes']
  assert quantized['calibration_images'] == 50
  assert 'calibration_images' not in result  # float: nothing calibrated
  interpreter = tf.lite.Interpreter(model_path=quantized['path'])
  kinds = {d['dtype'] for d in interpreter.get_tensor_details()}
  assert np.int8 in kinds
  with pytest.raises(ValueError, match='needs --format tflite'):
    exporters.export(workdir, 'savedmodel', quantize='int8')
  # predict: digit names, probabilities summing to <= 1; a corrupt file is
  # reported by name.
  image = tmp_path / 'digit.png'
  image.write_bytes(tf.io.encode_png(np.zeros((20, 20, 1), np.uint8)).numpy())
  corrupt = tmp_path / 'corrupt.jpg'
  corrupt.write_bytes(b'\xff\xd8\xff not a jpeg')
  results = dict(prediction.predict(workdir, [str(image), str(corrupt)]))
  top5 = results[str(image)]
  assert len(top5) == 5 and all(n.startswith('digit ') for n, _ in top5)
  assert 0 < sum(p for _, p in top5) <= 1 + 1e-6
  assert 'corrupt.jpg: not a readable image' in results[str(corrupt)]


def test_convert_cli_reports_errors_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'out'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'mnv2_jax.convert',
      'keras',
      '--weights',
      str(tmp_path / 'missing.h5'),
      '--workdir',
      str(workdir),
    ],
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    check=False,
  )
  assert result.returncode == 2
  assert 'No weights file' in result.stderr
  assert not workdir.exists()


def test_convert_cli_writes_a_workdir_that_computes_the_keras_model(
  tmp_path, capsys
):
  keras_model = _keras_mobilenet(0.35, 96, seed=3)
  weights = str(tmp_path / 'mobilenet_v2_0.35_96.weights.h5')
  keras_model.save_weights(weights)
  workdir = tmp_path / 'converted'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'mnv2_jax.convert',
      'keras',
      '--weights',
      weights,
      '--width_multiplier',
      '0.35',
      '--image_size',
      '96',
      '--workdir',
      str(workdir),
    ],
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Converted Keras weights' in result.stdout
  assert 'width_multiplier=0.35, 1000 classes' in result.stdout
  assert f'--workdir {workdir} --config.mode=eval' in result.stdout
  config, variables, step = workdir_lib.load(str(workdir))
  assert step == 0 and config.image_size == 96
  x = _images(96)
  _assert_close(
    _apply(config, variables, x)[0], keras_model(x, training=False).numpy()
  )
  # A second conversion into the same workdir is refused; nothing changes.
  # (The same command's main, in this process: the subprocess above tested
  # the command line.)
  before = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  capsys.readouterr()
  assert convert_cli.main(result.args[3:]) == 2
  assert 'already holds checkpoints' in capsys.readouterr().err
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == before


def test_export_cli_int8_agreement_and_result_file(tmp_path):
  workdir = str(tmp_path / 'tiny')
  config, variables = helpers.random_digits_workdir(workdir)
  result_file = tmp_path / 'results' / 'export_int8.json'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'mnv2_jax.export',
      '--workdir',
      workdir,
      '--format',
      'tflite',
      '--quantize',
      'int8',
      '--result_file',
      str(result_file),
    ],
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  with open(result_file) as f:
    recorded = json.load(f)
  assert recorded['command'].startswith('python -m mnv2_jax.export --workdir')
  assert {'machine', 'date', 'versions'} <= set(recorded)
  assert f'top-1 agreement {100 * recorded["top1_agreement"]:.2f}%' in (
    result.stdout
  )
  # The figures are what the file computes: rerun it on the same held images.
  images = exporters.held_images(config, recorded['num_images'])
  exported = exporters.run_exported(recorded['path'], images)
  reference = np.asarray(_apply(config, variables, images)[0])
  agreement = np.mean(exported.argmax(-1) == reference.argmax(-1))
  assert recorded['top1_agreement'] == pytest.approx(agreement)
  relative = np.max(np.abs(exported - reference)) / np.max(np.abs(reference))
  assert recorded['max_rel_diff'] == pytest.approx(relative, rel=1e-3)
  top_two = np.sort(reference, -1)[:, -2:]
  margins = (top_two[:, 1] - top_two[:, 0]) / np.max(np.abs(reference))
  # A margin is a difference of two logits over the largest: float32
  # rounding of the logits moves it by about 1e-6 of the largest logit.
  assert recorded['median_top2_margin'] == pytest.approx(
    np.median(margins), abs=1e-5
  )
  changed_widest = recorded['changed_max_top2_margin']
  assert changed_widest is None or changed_widest <= 2 * relative
  assert 'Top-two logit margin, relative: median image' in result.stdout
  # int8 stays close but is not float: weights and activations each keep 8
  # bits (a step of 1/255 of their range). On this random-weight model the
  # logits moved by 0.75% of their range. It gives all 360 images one class,
  # so top-1 agreement is trivially kept here: the bound is the drift's.
  # Agreement on a trained model: the digits quickstart (docs/weights.md).
  assert 1e-4 < recorded['max_rel_diff'] < 0.05
  assert recorded['top1_agreement'] > 0.95


def test_top2_margins_of_the_changed_images():
  # The largest magnitude, 10, is a negative logit. Top-two gaps over it:
  # 0.1, 0.5, 0.03 and 0.3.
  reference = np.array(
    [[4.0, 3.0, -10.0], [0.0, 6.0, 1.0], [2.0, 1.7, -1.0], [5.0, 0.0, 2.0]]
  )
  # The export changes the first and third images' top-1, not the others'.
  exported = np.array(
    [[3.0, 4.0, -10.0], [0.5, 5.0, 1.0], [1.6, 1.8, -1.0], [4.0, 0.5, 2.0]]
  )
  margins = exporters.top2_margins(exported, reference)
  assert margins['median_top2_margin'] == pytest.approx((0.1 + 0.3) / 2)
  assert margins['changed_max_top2_margin'] == pytest.approx(0.1)
  # A changed answer needs some logit to move by half its gap or more.
  drift = np.max(np.abs(exported - reference)) / 10.0
  assert margins['changed_max_top2_margin'] <= 2 * drift
  unchanged = exporters.top2_margins(reference, reference)
  assert unchanged['changed_max_top2_margin'] is None
  # One class, or a detector's (images, anchors, classes): no margins.
  assert exporters.top2_margins(exported[:, :1], reference[:, :1]) == {}
  assert exporters.top2_margins(exported[:, None], reference[:, None]) == {}


def test_export_calibration_images_is_an_int8_count(tmp_path, capsys):
  from mnv2_jax import export as export_cli

  # Without --quantize int8 there are no ranges to calibrate: one error line.
  with pytest.raises(SystemExit) as exited:
    export_cli.main(['--workdir', str(tmp_path), '--calibration_images', '500'])
  assert exited.value.code == 2
  assert 'add --quantize int8' in capsys.readouterr().err
  # A count below 1 is refused before the workdir is read.
  with pytest.raises(ValueError, match='at least 1, got 0'):
    exporters.export(
      str(tmp_path / 'absent'), 'tflite', 'int8', num_calibration_images=0
    )
