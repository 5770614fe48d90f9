r"""Imports released MobileNetV2 weights: Keras, TF-slim and PyTorch.

Python API (each returns `(config, variables)`; `variables` applies to the
model that `building.build_model(config)` builds):

  config, variables = importers.from_keras(keras_model)
  config, variables = importers.from_keras_weights(path, width_multiplier=1.0,
                                                   image_size=224)
  config, variables = importers.from_slim_checkpoint(path)   # 1001 classes
  config, variables = importers.from_torch(state_dict)       # torchvision/timm
  importers.save(workdir, config, variables)

The command line is `python -m mnv2_jax.convert` (mnv2_jax/convert.py).

What each release needs, and the converted config sets (docs/paper.md):

  * Keras / TF-slim: TensorFlow 'SAME' padding (0 before, 1 after at stride 2
    on even sizes), BatchNorm epsilon 1e-3, inputs in [-1, 1] with a central
    crop of 87.5% for evaluation ('inception' preprocessing). Keras has 1000
    classes; slim 1001, logit 0 = background (`config.background_class`).
  * PyTorch (torchvision, timm): symmetric padding (1, 1) at stride 2,
    epsilon 1e-5, momentum 0.1 (ours 0.9), 'torchvision' preprocessing (resize
    256, crop 224, ImageNet mean/std).

Every tensor is checked against the model the config builds before anything
is written: a file for another width multiplier, a truncated file or an
unknown layer name fails with the expected and the found names and shapes.
"""

from __future__ import annotations

import os
import re
from typing import Any
from typing import Mapping
from typing import Optional

import jax
import ml_collections
import numpy as np

from mnv2_jax import configuration
from mnv2_jax.models import mobilenet_v2
from mnv2_jax.models.building import build_model
from mnv2_jax.training import checkpointing
from mnv2_jax.training import optimization
from mnv2_jax.training import state as training_state

Variables = dict[str, Any]
# The release grid of width multipliers (Keras, TF-slim; docs/paper.md).
RELEASE_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
NUM_BLOCKS = mobilenet_v2.NUM_BLOCKS
HEAD_LAYER = NUM_BLOCKS + 2  # layer_19, the 1x1 conv to 1280


class ConversionError(ValueError):
  """The weights do not fit the model; nothing was written."""


# --------------------------------------------------------------- the target


def imported_config(
  *, width_multiplier: float, image_size: int, num_classes: int, source: str
) -> ml_collections.ConfigDict:
  """The config of a released model: architecture, BN and preprocessing."""
  config = configuration.base_config()
  config.model.width_multiplier = width_multiplier
  config.image_size = image_size
  config.model.dropout_rate = 0.2
  config.ema_decay = 0.0  # the imported weights are already the ones to use
  if source in ('keras', 'slim'):
    config.model.padding = 'same'
    config.model.batch_norm_epsilon = 1e-3
    config.model.batch_norm_momentum = 0.999 if source == 'keras' else 0.997
    config.preprocessing = 'inception'
  elif source in ('torchvision', 'timm'):
    config.model.padding = 'symmetric'
    config.model.batch_norm_epsilon = 1e-5
    config.model.batch_norm_momentum = 0.9  # torch momentum 0.1
    config.preprocessing = 'torchvision'
  else:
    raise ValueError(f'unknown source {source!r}')
  config.background_class = num_classes == 1001
  config.num_classes = num_classes
  config.dataset.name = 'imagenet2012'
  return config


def _expected_shapes(config) -> dict[str, tuple[int, ...]]:
  """'params/layer_1/conv/kernel' -> shape, for the model `config` builds."""
  model = build_model(config)
  images = jax.ShapeDtypeStruct(
    (1, config.image_size, config.image_size, 3), np.float32
  )
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    flat['/'.join(entry.key for entry in path)] = tuple(leaf.shape)
  return flat


def assemble(
  config, tensors: Mapping[str, np.ndarray], source: str
) -> Variables:
  """Checks `tensors` (our flat names) against the model and nests them.

  Raises:
    ConversionError: a tensor is missing, unexpected or of the wrong shape;
      the message lists them with the expected and the found shapes.
  """
  expected = _expected_shapes(config)
  missing = [k for k in expected if k not in tensors]
  unexpected = [k for k in tensors if k not in expected]
  wrong = [
    f'{k}: expected {expected[k]}, found {tuple(np.shape(v))}'
    for k, v in tensors.items()
    if k in expected and tuple(np.shape(v)) != expected[k]
  ]
  if missing or unexpected or wrong:
    lines = [
      f'The {source} weights do not fit MobileNetV2 '
      f'width_multiplier={config.model.width_multiplier}, '
      f'{config.num_classes} classes.'
    ]
    for title, items in (
      ('shape mismatches', wrong),
      ('missing tensors', missing),
      ('unexpected tensors', unexpected),
    ):
      if items:
        lines.append(
          f'{len(items)} {title}: '
          + '; '.join(items[:6])
          + ('; ...' if len(items) > 6 else '')
        )
    lines.append(
      'Check the width multiplier and number of classes of the '
      'file (or pass them explicitly); nothing was written.'
    )
    raise ConversionError('\n'.join(lines))
  variables: Variables = {}
  for name, value in tensors.items():
    node = variables
    *parents, leaf = name.split('/')
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = np.asarray(value, np.float32)
  return variables


def _conv_bn(ours: str, kernel: np.ndarray, bn: tuple) -> dict[str, Any]:
  """Our names for one conv + BN; bn = (scale, bias, mean, var)."""
  scale, bias, mean, var = bn
  return {
    f'params/{ours}/conv/kernel': kernel,
    f'params/{ours}/bn/scale': scale,
    f'params/{ours}/bn/bias': bias,
    f'batch_stats/{ours}/bn/mean': mean,
    f'batch_stats/{ours}/bn/var': var,
  }


def _block_units(block: int) -> tuple[str, ...]:
  """The conv units of block b (0-based): the first has no expansion."""
  return (
    ('depthwise', 'project')
    if block == 0
    else ('expand', 'depthwise', 'project')
  )


def _depthwise_from_hwc1(kernel: np.ndarray) -> np.ndarray:
  """TF's depthwise kernel [k, k, C, 1] -> ours [k, k, 1, C]."""
  return np.transpose(kernel, (0, 1, 3, 2))


def _torch_conv(kernel: np.ndarray) -> np.ndarray:
  """PyTorch [O, I, kh, kw] (depthwise: [C, 1, k, k]) -> HWIO ([k, k, 1, C])."""
  return np.transpose(kernel, (2, 3, 1, 0))


def detect_width_multiplier(channels: Mapping[str, int], source: str) -> float:
  """The release-grid α whose channel counts are `channels`.

  `channels` holds 'stem', 'head' and 'block_{b}' (projection outputs) as
  found in the weights.
  """
  for alpha in RELEASE_WIDTHS:
    blocks = mobilenet_v2.block_configs(alpha)
    wanted = {
      'stem': mobilenet_v2.make_divisible(mobilenet_v2.STEM_CHANNELS * alpha),
      'head': mobilenet_v2.last_conv_channels(alpha),
    }
    wanted.update(
      {f'block_{b}': blocks[b].out_channels for b in range(NUM_BLOCKS)}
    )
    if all(wanted.get(k) == v for k, v in channels.items()):
      return alpha
  raise ConversionError(
    f'The {source} weights have channel counts {dict(channels)}, which match '
    f'no width multiplier of the release grid {RELEASE_WIDTHS}. Pass '
    '--width_multiplier explicitly; nothing was written.'
  )


# -------------------------------------------------------------------- Keras


def _keras_block_prefix(block: int) -> str:
  return 'expanded_conv' if block == 0 else f'block_{block}'


def _keras_layer_weights(keras_model, name: str) -> list[np.ndarray]:
  try:
    layer = keras_model.get_layer(name)
  except ValueError as error:
    raise ConversionError(
      f'The Keras model has no layer {name!r}: it is not a '
      'keras.applications.MobileNetV2 (layer names differ). Nothing was '
      'written.'
    ) from error
  return [np.asarray(w) for w in layer.get_weights()]


def from_keras(keras_model) -> tuple[ml_collections.ConfigDict, Variables]:
  """Converts a `keras.applications.MobileNetV2` (any α, size, with or without
  the top; logits = the 'predictions' layer before its softmax)."""

  def weights(name):
    return _keras_layer_weights(keras_model, name)

  def bn(name):
    gamma, beta, mean, var = weights(name)
    return gamma, beta, mean, var

  names = {layer.name for layer in keras_model.layers}
  has_top = 'predictions' in names
  channels = {
    'stem': weights('Conv1')[0].shape[-1],
    'head': weights('Conv_1')[0].shape[-1],
  }
  for b in range(NUM_BLOCKS):
    channels[f'block_{b}'] = weights(f'{_keras_block_prefix(b)}_project')[
      0
    ].shape[-1]
  match = re.match(r'mobilenetv2_(\d+\.\d+)_', keras_model.name)
  alpha = (
    float(match.group(1))
    if match
    else detect_width_multiplier(channels, 'Keras')
  )
  size = keras_model.input_shape[1] or 224
  num_classes = weights('predictions')[0].shape[-1] if has_top else 0

  tensors = _conv_bn('layer_1', weights('Conv1')[0], bn('bn_Conv1'))
  for b in range(NUM_BLOCKS):
    prefix = _keras_block_prefix(b)
    for unit in _block_units(b):
      kernel = weights(f'{prefix}_{unit}')[0]
      if unit == 'depthwise':
        kernel = _depthwise_from_hwc1(kernel)
      tensors.update(
        _conv_bn(f'layer_{b + 2}/{unit}', kernel, bn(f'{prefix}_{unit}_BN'))
      )
  tensors.update(
    _conv_bn(f'layer_{HEAD_LAYER}', weights('Conv_1')[0], bn('Conv_1_bn'))
  )
  if has_top:
    kernel, bias = weights('predictions')
    tensors['params/classifier/kernel'] = kernel
    tensors['params/classifier/bias'] = bias
  config = imported_config(
    width_multiplier=alpha,
    image_size=size,
    num_classes=num_classes,
    source='keras',
  )
  return config, assemble(config, tensors, 'Keras')


def from_keras_weights(
  path: str,
  *,
  width_multiplier: float = 1.0,
  image_size: int = 224,
  include_top: bool = True,
  num_classes: int = 1000,
) -> tuple[ml_collections.ConfigDict, Variables]:
  """Loads a Keras MobileNetV2 weights file (.h5 / .weights.h5) and converts
  it; the architecture is rebuilt by Keras from the given α and size."""
  if not os.path.exists(path):
    raise ConversionError(f'No weights file at {path}.')
  import keras  # noqa: PLC0415 (TensorFlow: only for Keras files)

  keras_model = keras.applications.MobileNetV2(
    input_shape=(image_size, image_size, 3),
    alpha=width_multiplier,
    include_top=include_top,
    weights=None,
    classes=num_classes,
    classifier_activation=None,
  )
  try:
    keras_model.load_weights(path)
  except Exception as error:  # h5py and Keras raise many types
    # Keras' message can hold whole weight arrays: keep its first sentences.
    reason = ' '.join(str(error).split())[:400]
    raise ConversionError(
      f'Could not load {path} into keras MobileNetV2(alpha='
      f'{width_multiplier}, input {image_size}x{image_size}, include_top='
      f'{include_top}): {type(error).__name__}: {reason}\nThe file is '
      'truncated, or it was saved for another alpha / top: the release '
      'names them mobilenet_v2_weights_tf_dim_ordering_tf_kernels_'
      '<alpha>_<size>[_no_top].h5. Nothing was written.'
    ) from error
  return from_keras(keras_model)


# ------------------------------------------------------------------ TF-slim


SLIM_SCOPE = 'MobilenetV2'
EMA_SUFFIX = '/ExponentialMovingAverage'


def _slim_block_scope(block: int) -> str:
  return 'expanded_conv' if block == 0 else f'expanded_conv_{block}'


def from_slim_checkpoint(
  path: str, *, use_moving_average: bool = True, image_size: int = 224
) -> tuple[ml_collections.ConfigDict, Variables]:
  """Converts a TF-slim MobileNetV2 checkpoint (1001 classes, background 0).

  With `use_moving_average` the weights' exponential moving averages are
  taken where the checkpoint has them (the release evaluates those).
  """
  import tensorflow as tf  # noqa: PLC0415 (only for TF-slim checkpoints)

  try:
    reader = tf.train.load_checkpoint(path)
  except Exception as error:
    raise ConversionError(
      f'Could not read a TF checkpoint at {path}: {type(error).__name__}: '
      f'{error}\nPass the prefix (e.g. mobilenet_v2_1.0_224.ckpt, next to '
      'its .index and .data files). Nothing was written.'
    ) from error
  available = reader.get_variable_to_shape_map()

  def read(name):
    full = f'{SLIM_SCOPE}/{name}'
    if use_moving_average and full + EMA_SUFFIX in available:
      return reader.get_tensor(full + EMA_SUFFIX)
    if full not in available:
      raise ConversionError(
        f'The checkpoint {path} has no variable {full!r} (it has '
        f'{len(available)} variables, e.g. {sorted(available)[:3]}); it is '
        'not a TF-slim MobileNetV2 checkpoint. Nothing was written.'
      )
    return reader.get_tensor(full)

  def bn(scope):
    return tuple(
      read(f'{scope}/BatchNorm/{v}')
      for v in ('gamma', 'beta', 'moving_mean', 'moving_variance')
    )

  channels = {
    'stem': read('Conv/weights').shape[-1],
    'head': read('Conv_1/weights').shape[-1],
  }
  for b in range(NUM_BLOCKS):
    channels[f'block_{b}'] = read(
      f'{_slim_block_scope(b)}/project/weights'
    ).shape[-1]
  alpha = detect_width_multiplier(channels, 'TF-slim')

  tensors = _conv_bn('layer_1', read('Conv/weights'), bn('Conv'))
  for b in range(NUM_BLOCKS):
    scope = _slim_block_scope(b)
    for unit in _block_units(b):
      if unit == 'depthwise':
        kernel = _depthwise_from_hwc1(
          read(f'{scope}/depthwise/depthwise_weights')
        )
      else:
        kernel = read(f'{scope}/{unit}/weights')
      tensors.update(
        _conv_bn(f'layer_{b + 2}/{unit}', kernel, bn(f'{scope}/{unit}'))
      )
  tensors.update(
    _conv_bn(f'layer_{HEAD_LAYER}', read('Conv_1/weights'), bn('Conv_1'))
  )
  logits = read('Logits/Conv2d_1c_1x1/weights')  # [1, 1, 1280, 1001]
  tensors['params/classifier/kernel'] = logits.reshape(logits.shape[-2:])
  tensors['params/classifier/bias'] = read('Logits/Conv2d_1c_1x1/biases')
  config = imported_config(
    width_multiplier=alpha,
    image_size=image_size,
    num_classes=logits.shape[-1],
    source='slim',
  )
  return config, assemble(config, tensors, 'TF-slim')


# ------------------------------------------------------------------ PyTorch


# timm's MobileNetV2: blocks.<stage>.<index>; stage lengths of Table 2.
TIMM_STAGE_LENGTHS = tuple(
  spec.repeats for spec in mobilenet_v2.MOBILENET_V2_BLOCKS
)


def _torchvision_names(block: int) -> dict[str, tuple[str, str]]:
  """unit -> (conv weight, BN prefix) in torchvision's mobilenet_v2."""
  base = f'features.{block + 1}.conv'
  if block == 0:
    return {
      'depthwise': (f'{base}.0.0.weight', f'{base}.0.1'),
      'project': (f'{base}.1.weight', f'{base}.2'),
    }
  return {
    'expand': (f'{base}.0.0.weight', f'{base}.0.1'),
    'depthwise': (f'{base}.1.0.weight', f'{base}.1.1'),
    'project': (f'{base}.2.weight', f'{base}.3'),
  }


def _timm_names(block: int) -> dict[str, tuple[str, str]]:
  stage = int(
    np.searchsorted(np.cumsum(TIMM_STAGE_LENGTHS), block, side='right')
  )
  index = block - int(np.sum(TIMM_STAGE_LENGTHS[:stage]))
  base = f'blocks.{stage}.{index}'
  if block == 0:  # timm's DepthwiseSeparableConv
    return {
      'depthwise': (f'{base}.conv_dw.weight', f'{base}.bn1'),
      'project': (f'{base}.conv_pw.weight', f'{base}.bn2'),
    }
  return {
    'expand': (f'{base}.conv_pw.weight', f'{base}.bn1'),
    'depthwise': (f'{base}.conv_dw.weight', f'{base}.bn2'),
    'project': (f'{base}.conv_pwl.weight', f'{base}.bn3'),
  }


TORCH_LAYOUTS = {
  'torchvision': dict(
    stem=('features.0.0.weight', 'features.0.1'),
    head=('features.18.0.weight', 'features.18.1'),
    classifier='classifier.1',
    blocks=_torchvision_names,
  ),
  'timm': dict(
    stem=('conv_stem.weight', 'bn1'),
    head=('conv_head.weight', 'bn2'),
    classifier='classifier',
    blocks=_timm_names,
  ),
}


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch.Tensor
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


def from_torch(
  state_dict: Mapping[str, Any],
  *,
  width_multiplier: Optional[float] = None,
  image_size: int = 224,
) -> tuple[ml_collections.ConfigDict, Variables]:
  """Converts a torchvision or timm MobileNetV2 state dict (tensors or
  arrays; the layout is recognised from the names)."""
  state = {
    k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')
  }
  if 'features.0.0.weight' in state:
    source = 'torchvision'
  elif 'conv_stem.weight' in state:
    source = 'timm'
  else:
    raise ConversionError(
      "The state dict is neither torchvision's mobilenet_v2 (it has no "
      "'features.0.0.weight') nor timm's mobilenetv2 (no "
      f"'conv_stem.weight'); its first keys are {list(state)[:4]}. "
      'Nothing was written.'
    )
  layout = TORCH_LAYOUTS[source]
  used = set()

  def get(name):
    if name not in state:
      raise ConversionError(
        f'The {source} state dict has no {name!r}. Nothing was written.'
      )
    used.add(name)
    return _to_numpy(state[name])

  def conv_bn(ours, weight_name, bn_prefix):
    bn = tuple(
      get(f'{bn_prefix}.{v}')
      for v in ('weight', 'bias', 'running_mean', 'running_var')
    )
    return _conv_bn(ours, _torch_conv(get(weight_name)), bn)

  tensors = conv_bn('layer_1', *layout['stem'])
  channels = {
    'stem': state[layout['stem'][0]].shape[0],
    'head': state[layout['head'][0]].shape[0],
  }
  for b in range(NUM_BLOCKS):
    for unit, names in layout['blocks'](b).items():
      tensors.update(conv_bn(f'layer_{b + 2}/{unit}', *names))
    channels[f'block_{b}'] = state[layout['blocks'](b)['project'][0]].shape[0]
  tensors.update(conv_bn(f'layer_{HEAD_LAYER}', *layout['head']))
  classifier = layout['classifier']
  num_classes = 0
  if f'{classifier}.weight' in state:
    weight = get(f'{classifier}.weight')  # [classes, features]
    tensors['params/classifier/kernel'] = weight.T
    tensors['params/classifier/bias'] = get(f'{classifier}.bias')
    num_classes = weight.shape[0]
  unused = sorted(set(state) - used)
  if unused:
    raise ConversionError(
      f'{len(unused)} tensors of the {source} state dict have no place in '
      f'MobileNetV2: {unused[:6]}. Nothing was written.'
    )
  alpha = width_multiplier or detect_width_multiplier(channels, source)
  config = imported_config(
    width_multiplier=alpha,
    image_size=image_size,
    num_classes=num_classes,
    source=source,
  )
  return config, assemble(config, tensors, source)


# --------------------------------------------------------------------- save


CONFIG_PY = '''"""Config of weights imported by `python -m mnv2_jax.convert` ({source}).

  python -m mnv2_jax.main --config {workdir}/config.py --workdir {workdir} \\
      --config.mode=eval --config.dataset.data_dir=<your TFDS dir>
"""

import os

from mnv2_jax import configuration


def get_config():
  here = os.path.dirname(os.path.abspath(__file__))
  return configuration.from_json(os.path.join(here, 'config.json'))
'''


def save(
  workdir: str,
  config: ml_collections.ConfigDict,
  variables: Variables,
  *,
  source: str = 'imported',
) -> str:
  """Writes `variables` as step 0 of `<workdir>/checkpoints`, with
  config.json and config.py, in the format `main` reads (a full train state,
  fresh optimizer slots), so that `--config.mode=eval` and
  `--config.init_from=<workdir>` take it. Refuses a workdir that already has
  checkpoints. Returns the checkpoint directory."""
  configuration.validate(config)
  directory = checkpointing.checkpoint_dir(workdir)
  if os.path.isdir(directory) and os.listdir(directory):
    raise ConversionError(
      f'{directory} already holds checkpoints; choose a new --workdir '
      '(nothing was overwritten).'
    )
  # The optimizer's slots do not depend on the learning-rate values.
  optimizer = optimization.create_optimizer(config, lambda count: 0.0)
  state = training_state.create_train_state(
    config, jax.tree.map(np.asarray, dict(variables)), optimizer
  )
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, 'config.py'), 'w') as f:
    f.write(CONFIG_PY.format(source=source, workdir=os.path.abspath(workdir)))
  manager = checkpointing.create_manager(workdir)
  try:
    checkpointing.save(manager, 0, state, force=True)
    manager.wait_until_finished()
  finally:
    manager.close()
  return directory


def read_torch_state_dict(path: str) -> Mapping[str, Any]:
  """A torchvision/timm state dict (or a training checkpoint holding one)
  from a file, on the CPU. Raises ConversionError naming the file."""
  import torch  # noqa: PLC0415 (optional and heavy: only for PyTorch files)

  if not os.path.exists(path):
    raise ConversionError(f'No state dict at {path}.')
  try:
    state_dict = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as error:
    raise ConversionError(
      f'Could not read {path} with torch.load: '
      f'{type(error).__name__}: {error}\nThe file is truncated or not a '
      'state dict. Nothing was written.'
    ) from error
  if 'state_dict' in state_dict and isinstance(state_dict['state_dict'], dict):
    state_dict = state_dict['state_dict']  # a training checkpoint
  return state_dict
