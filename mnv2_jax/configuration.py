"""The shared base config and its validation.

Every file in configs/ starts from `base_config()`, or from another file of
configs/ (`load_beside`), and changes what its experiment changes: the
recipes live there, not here. `validate()` runs before anything is built, so a wrong value
fails at once with the field, the allowed values and an example fix, not hours
into a run.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Any
from typing import Optional
from typing import Sequence

import ml_collections

from mnv2_jax import choices
from mnv2_jax import config_checks as checks
from mnv2_jax.data import registry
from mnv2_jax.models import options as model_options

TASKS = ('classification', 'detection', 'segmentation')
OPTIMIZERS = ('rmsprop', 'sgd', 'adam')
LR_SCHEDULES = ('exponential', 'cosine', 'poly')
MODES = ('train', 'eval')
# config.model.depthwise_implementation (before 0.2) -> model.implementation.
RENAMED_IMPLEMENTATIONS = {'auto': 'auto', 'shifted': 'cpu', 'grouped': 'xla'}


def base_config() -> ml_collections.ConfigDict:
  """The paper's ImageNet recipe (§6.1); experiments override from here."""
  config = ml_collections.ConfigDict()
  config.mode = 'train'  # 'train' or 'eval' (evaluates the latest checkpoint)
  config.seed = 0
  # 'classification' (MobileNetV2, paper §6.1), 'detection' (SSDLite, §6.2)
  # or 'segmentation' (Mobile DeepLabv3, §6.3).
  config.task = 'classification'

  config.dataset = _dataset_section()
  config.num_classes = 1000
  config.image_size = 224
  config.eval_crop_fraction = 0.875  # released recipe: central crop 87.5%
  # Input scaling and evaluation geometry of ImageNet-style images (imagenet.py):
  # 'inception' ([-1, 1]; central crop, then resize: TF-slim, Keras, the
  # paper) or 'torchvision' (resize to 256, crop 224; ImageNet mean/std).
  config.preprocessing = 'inception'
  # TF-slim releases have 1001 logits, logit 0 = 'background'; with True the
  # dataset's label k is logit k + 1 and num_classes counts the background.
  config.background_class = False
  # A workdir (ours, or written by `python -m mnv2_jax.convert`) whose latest
  # checkpoint initialises the weights of a new run; layers whose shapes
  # differ (e.g. another number of classes) keep their fresh initialisation.
  config.init_from = ''
  # JAX's persistent compilation cache (compilation_cache.py): 'auto' (a
  # user-level directory, or $MNV2_JAX_COMPILATION_CACHE), a path, or ''/'off'.
  config.compilation_cache_dir = 'auto'

  config.model = _model_section()
  _add_training(config)
  config.detection = _detection_section()
  config.segmentation = _segmentation_section()
  config.log_every_steps = 100
  config.eval_every_epochs = 10.0
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3
  return config


def _dataset_section() -> ml_collections.ConfigDict:
  """Which data, and how it is read."""
  section = ml_collections.ConfigDict()
  section.name = 'imagenet2012'
  section.data_dir = ml_collections.FieldReference(None, field_type=str)
  section.manual_dir = ml_collections.FieldReference(None, field_type=str)
  section.train_split = 'train'
  # Evaluated during training and at the end (settings are chosen on it).
  section.eval_split = 'validation'
  # If set, scored once, after training, and written as its own split: the
  # built-in sets hold out a test split; ImageNet's is the validation set.
  section.test_split = ''
  section.shuffle_buffer_size = 16_384
  # How ImageNet's training batches leave the host: 'float32' (normalised
  # there) or 'uint8' (a quarter of the bytes; normalised on the device).
  section.train_image_dtype = 'float32'
  section.seed = 0  # the built-in scenes: which generated set
  return section


def _model_section() -> ml_collections.ConfigDict:
  """The network (config.model)."""
  section = ml_collections.ConfigDict()
  # The classification network: the paper's MobileNetV2, or one of its
  # peers of Table 4 (models/__init__.py ARCHITECTURES). For detection and
  # segmentation, the backbone under the heads (models/backbones.py):
  # MobileNetV2 or MobileNetV1 (Tables 6, 7), or ResNet-101 (Table 7).
  section.architecture = 'mobilenet_v2'
  # α (MobileNetV1, V2) or the scale s (ShuffleNet s×).
  section.width_multiplier = 1.0
  section.shufflenet_groups = 3  # g of ShuffleNet's group convolutions
  # NASNet-A "N @ F": the first stack's filters (F = 24 × filters) and N.
  section.nasnet_filters = 44  # NASNet-A Mobile, 4 @ 1056
  section.nasnet_cells_per_stack = 4
  # t of every block but the first (paper §4); a non-empty per-block tuple of
  # 17 values replaces it.
  section.expansion_ratio = 6.0
  section.expansion_ratio_per_block = ()
  section.bottleneck_activation = 'linear'
  section.residual = 'bottleneck'
  section.output_stride = 32
  section.dropout_rate = 0.2  # TF-slim release: keep probability 0.8
  section.batch_norm_momentum = 0.997  # TF-slim decay
  section.batch_norm_epsilon = 1e-3
  section.padding = 'same'
  section.dtype = 'float32'
  # The layers' formulation: 'cpu' (hand-differentiated, tuned for XLA:CPU),
  # 'xla' (XLA's convolution ops and autodiff: GPU, TPU) or 'auto' (by the
  # backend). The same parameters and function either way (layers.py).
  section.implementation = 'auto'
  # Memory-efficient inference (paper §5.1): each expanded tensor computed in
  # this many channel slices (1: whole). Inference only; same outputs.
  section.inference_splits = 1
  return section


def _add_training(config: ml_collections.ConfigDict) -> None:
  """The schedule and the optimizer: top-level fields of `config`."""
  # Durations: epochs, converted to steps once in training/trainer.py. A positive
  # num_train_steps overrides num_epochs (tests, smoke runs).
  config.num_epochs = 300.0
  config.num_train_steps = -1
  config.batch_size = 96  # global batch, split over all devices and hosts
  config.eval_batch_size = 200
  # Inference runs this many examples at a time inside each eval batch
  # (model.apply_in_microbatches): -1 picks per backend (4 on CPU, where it
  # keeps activations in cache; the whole batch on GPU/TPU); 0 = whole batch.
  config.inference_microbatch = -1

  # Paper §6.1: RMSProp decay 0.9, momentum 0.9; lr 0.045 decayed x0.98 per
  # epoch; weight decay 4e-5. The learning rate scales linearly with the batch.
  config.optimizer = 'rmsprop'
  config.rmsprop_decay = 0.9
  config.momentum = 0.9
  # TF1's RMSPropOptimizer adds epsilon inside the square root and starts the
  # mean square at 1; TF-slim's train_image_classifier uses epsilon 1.0.
  config.rmsprop_epsilon = 1.0
  config.rmsprop_initial_scale = 1.0
  # optimizer='adam' (beta1 = momentum).
  config.adam_b2 = 0.999
  config.adam_epsilon = 1e-8
  config.base_learning_rate = 0.045
  config.base_batch_size = 96
  config.lr_schedule = 'exponential'
  config.lr_decay_rate = 0.98
  config.lr_decay_epochs = 1.0
  config.warmup_epochs = 0.0
  config.weight_decay = 4e-5  # L2 on conv/dense kernels, not depthwise (slim)
  config.label_smoothing = 0.0
  config.ema_decay = 0.0  # 0 disables the weight moving average
  # Weight of the int8 consistency term (models/quantization.py): the mean
  # squared difference between the network's outputs and the same network
  # with weights and activations rounded as int8 TFLite rounds them, over
  # the outputs' own mean square, added to the loss, so that `export
  # --quantize int8` stays nearer the float network. 0 disables it; a second
  # forward pass per step when on. Meant for fine-tuning a trained run
  # (init_from; 300 for 12 epochs in experiments/int8_consistency.py).
  config.quantization_consistency = 0.0
  # Whose ranges round each image's activations in the term: 'batch' (the
  # whole batch's, nothing clipped) or 'others' (the other images' in the
  # batch, as calibration's ranges round a held image, which they may clip).
  config.quantization_ranges = 'batch'


def _detection_section() -> ml_collections.ConfigDict:
  """SSDLite (config.task == 'detection'; paper §6.2 and the TF Object
  Detection API's reference config, docs/paper.md)."""
  section = ml_collections.ConfigDict()
  section.max_boxes = 100  # ground truth padded to this many boxes
  section.min_scale = 0.2  # anchor scales, linear over 6 layers
  section.max_scale = 0.95
  section.negatives_per_positive = 3  # hard-negative mining
  section.score_threshold = 0.01
  section.nms_iou_threshold = 0.6
  section.max_detections = 100
  section.zoom_out_probability = 0.5  # built-in scenes' augmentation
  # 'separable': SSDLite's depthwise-separable prediction layers (paper
  # §6.2); 'regular': SSD's 3x3 convolutions (Table 5's comparison).
  section.prediction_layers = 'separable'
  return section


def _segmentation_section() -> ml_collections.ConfigDict:
  """Mobile DeepLabv3 (config.task == 'segmentation'; paper §6.3). The
  backbone's output stride is config.model.output_stride (16 or 8); the
  training crop is image_size (DeepLab: 513)."""
  section = ml_collections.ConfigDict()
  section.aspp = False  # the three atrous 3x3 branches
  # Training augmentation (DeepLab): random scale, pad with 255, crop, flip.
  section.min_scale_factor = 0.5
  section.max_scale_factor = 2.0
  section.flip = True  # VOC; the scenes never flip (digits)
  # Table 7's MF: average over these input scales and left-right flips.
  section.multi_scale_eval = False
  section.eval_scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
  section.eval_flip = True
  return section


def from_json(path: str) -> ml_collections.ConfigDict:
  """The config recorded in a workdir's config.json (base config + its
  values), e.g. for evaluating, exporting or predicting with that run."""
  with open(path) as f:
    values = json.load(f)
  config = base_config()
  model = values.get('model', {})
  if 'depthwise_implementation' in model:  # workdirs written before 0.2
    old = model.pop('depthwise_implementation')
    model.setdefault('implementation', RENAMED_IMPLEMENTATIONS.get(old, old))

  def update(node, tree, prefix):
    for key, value in tree.items():
      if key not in node:
        raise ValueError(f'{path}: unknown config field {prefix}{key}.')
      if isinstance(value, dict):
        update(node[key], value, f'{prefix}{key}.')
      elif value is not None:
        node[key] = tuple(value) if isinstance(value, list) else value

  update(config, values, '')
  return config


def flatten(values: dict, prefix: str = '') -> dict[str, Any]:
  """A nested dict (a config's JSON) as {'model.width_multiplier': ...}."""
  flat = {}
  for key, value in values.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


# ------------------------------------------- config files and the command line


def split_config_argument(argument: str) -> tuple[str, Optional[str]]:
  """'configs/x.py:arg' -> ('configs/x.py', 'arg'), as ml_collections does."""
  path, _, config_string = argument.partition(':')
  return path, (config_string or None)


def load_module(path: str):
  """The Python module of a config file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--config: no such file {path!r}.')
  spec = importlib.util.spec_from_file_location('_mnv2_config_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(
      f'--config={path}: the file defines no get_config(); a config file '
      'returns its ConfigDict from get_config() (see configs/quickstart.py).'
    )
  return module


def load_file(argument: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file given as `path[:config string]` (the
  string, when given, is get_config's argument)."""
  path, config_string = split_config_argument(argument)
  module = load_module(path)
  if config_string is None:
    return module.get_config()
  return module.get_config(config_string)


def load_beside(
  config_file: str, name: str, config_string: Optional[str] = None
) -> ml_collections.ConfigDict:
  """`get_config()` of the config file `name` in `config_file`'s folder: how
  the files in configs/ build on one another, e.g.
  `configuration.load_beside(__file__, 'scales.py', scale)`."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
  module = load_module(path)
  if config_string is None:
    return module.get_config()
  return module.get_config(config_string)


def normalise_override_arguments(arguments: Sequence[str]) -> list[str]:
  """['--config.a', '1', '--config.b=2'] -> ['--config.a=1', '--config.b=2']:
  both spellings of an override, as absl took them."""
  joined, pending = [], None
  for argument in arguments:
    if pending is not None:
      joined.append(f'{pending}={argument}')
      pending = None
    elif argument.startswith('--config.') and '=' not in argument:
      pending = argument
    else:
      joined.append(argument)
  if pending is not None:
    joined.append(pending)  # command_line_overrides names it
  return joined


def command_line_overrides(
  base, arguments: Sequence[str], tool: str = 'this tool'
) -> dict[str, Any]:
  """{'key': value} of `--config.<key>=<value>` arguments, each value of its
  field's type in `base`. `tool` names the command in the error message."""
  fields = flatten(base.to_dict())
  overrides = {}
  for argument in normalise_override_arguments(arguments):
    key, equals, text = argument.partition('=')
    if not key.startswith('--config.') or not equals:
      raise ValueError(
        f'{argument!r}: besides its own flags {tool} takes only '
        '--config.<key>=<value> overrides.'
      )
    key = key[len('--config.') :]
    if key not in fields:
      raise ValueError(
        f'--config.{key}: no such config field (e.g. --config.num_train_steps'
        '=100).'
      )
    overrides[key] = _parse_value(fields[key], text, key)
  return overrides


def _parse_value(current: Any, text: str, key: str) -> Any:
  """`text` as the type of the field's current value."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(text)
      return text.lower() in ('true', '1')
    if isinstance(current, (int, float)):
      value = ast.literal_eval(text)
      wanted = float if isinstance(current, float) else int
      if isinstance(value, bool) or not isinstance(value, (int, wanted)):
        raise ValueError(text)
      return wanted(value)
    if isinstance(current, (list, tuple)):
      value = ast.literal_eval(text if text.strip() else '()')
      return tuple(value) if isinstance(value, (list, tuple)) else (value,)
  except (ValueError, SyntaxError) as error:
    raise ValueError(
      f'--config.{key}={text}: expected {type(current).__name__}, like '
      f"the field's {current!r}."
    ) from error
  return text


def apply_overrides(base, overrides: dict[str, Any]):
  """A copy of `base` with {'dotted.key': value} set."""
  config = base.copy_and_resolve_references()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return config


def from_command_line(
  config_argument: str, arguments: Sequence[str], tool: str
) -> ml_collections.ConfigDict:
  """The config of `--config <file>[:string]` with the command line's
  `--config.<key>=<value>` overrides applied (not yet validated)."""
  base = load_file(config_argument)
  return apply_overrides(base, command_line_overrides(base, arguments, tool))


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field, the allowed values and a fix.

  Each layer checks its own section: the run's fields here, config.model in
  `models/options.py`, config.dataset in `data/registry.py`; detection and
  segmentation, the tasks' sections, here. Data availability is checked by
  `data.datasets.check_available`.
  """
  defaults = base_config()
  for field, allowed in (
    ('mode', MODES),
    ('task', TASKS),
    ('optimizer', OPTIMIZERS),
    ('lr_schedule', LR_SCHEDULES),
    ('quantization_ranges', choices.QUANTIZATION_RANGES),
  ):
    checks.check_choice(config, field, allowed, defaults)
  registry.check(config, defaults)
  model_options.check(config, defaults)
  _check_training(config, defaults)
  _check_paths(config)
  _check_detection(config, defaults)
  _check_segmentation(config, defaults)
  _check_run(config, defaults)


def _check_training(config, defaults) -> None:
  """The optimizer's, schedule's and regularisers' ranges."""
  inf = float('inf')
  for field, low, high, low_inclusive, high_inclusive in [
    ('base_learning_rate', 0.0, inf, False, False),
    ('lr_decay_rate', 0.0, 1.0, False, True),
    ('lr_decay_epochs', 0.0, inf, False, False),
    ('eval_every_epochs', 0.0, inf, False, False),
    ('rmsprop_decay', 0.0, 1.0, True, False),
    ('rmsprop_epsilon', 0.0, inf, False, False),
    ('adam_b2', 0.0, 1.0, True, False),
    ('adam_epsilon', 0.0, inf, False, False),
    ('momentum', 0.0, 1.0, True, False),
    ('weight_decay', 0.0, inf, True, False),
    ('label_smoothing', 0.0, 1.0, True, False),
    ('warmup_epochs', 0.0, inf, True, False),
    ('ema_decay', 0.0, 1.0, True, False),
    ('quantization_consistency', 0.0, inf, True, False),
  ]:
    checks.check_range(
      config,
      field,
      low,
      high,
      defaults,
      low_inclusive=low_inclusive,
      high_inclusive=high_inclusive,
    )


def _check_paths(config) -> None:
  """The compilation cache and init_from paths."""
  if not isinstance(config.compilation_cache_dir, str):
    checks.fail(
      'compilation_cache_dir',
      config.compilation_cache_dir,
      "it must be 'auto', a directory, or 'off'",
      'auto',
    )
  if not isinstance(config.init_from, str):
    checks.fail(
      'init_from',
      config.init_from,
      'it must be a workdir path or empty',
      '/path/to/workdir',
    )


def _check_detection(config, defaults) -> None:
  """config.detection (SSDLite)."""
  checks.check_positive_integers(
    config,
    (
      'detection.max_boxes',
      'detection.max_detections',
      'detection.negatives_per_positive',
    ),
    defaults,
  )
  detection = config.detection
  if not (
    checks.is_number(detection.max_scale) and 0 < detection.max_scale <= 1
  ):
    checks.fail(
      'detection.max_scale',
      detection.max_scale,
      'anchor scales need 0 < min_scale < max_scale <= 1',
      '0.95',
    )
  if not (
    checks.is_number(detection.min_scale)
    and 0 < detection.min_scale < detection.max_scale
  ):
    checks.fail(
      'detection.min_scale',
      config.detection.min_scale,
      'anchor scales need 0 < min_scale < max_scale <= 1',
      '0.2',
    )
  for field in (
    'detection.score_threshold',
    'detection.nms_iou_threshold',
    'detection.zoom_out_probability',
  ):
    checks.check_range(
      config,
      field,
      0.0,
      1.0,
      defaults,
      low_inclusive=True,
      high_inclusive=True,
    )
  checks.check_choice(
    config, 'detection.prediction_layers', choices.PREDICTION_LAYERS, defaults
  )


def _check_segmentation(config, defaults) -> None:
  """config.segmentation (DeepLab) and its output stride."""
  if config.task == 'segmentation':
    if config.model.output_stride not in (8, 16):
      checks.fail(
        'model.output_stride',
        config.model.output_stride,
        'DeepLab (task segmentation) runs at output stride 8 or 16',
        '16',
      )
    checks.check_choice(config, 'segmentation.aspp', (False, True), defaults)
    checks.check_choice(
      config, 'segmentation.multi_scale_eval', (False, True), defaults
    )
    checks.check_choice(
      config, 'segmentation.eval_flip', (False, True), defaults
    )
    checks.check_choice(config, 'segmentation.flip', (False, True), defaults)
    segmentation = config.segmentation
    low, high = segmentation.min_scale_factor, segmentation.max_scale_factor
    if not (
      checks.is_number(low) and checks.is_number(high) and 0 < low <= high
    ):
      checks.fail(
        'segmentation.min_scale_factor',
        low,
        'training scales need 0 < min_scale_factor <= max_scale_factor',
        '0.5',
      )
    if config.dataset.name == 'scenes' and segmentation.flip:
      checks.fail(
        'segmentation.flip',
        segmentation.flip,
        'the scenes hold digits, and a mirrored digit is another glyph',
        'False',
      )
    if (
      config.dataset.name == 'scenes'
      and segmentation.multi_scale_eval
      and segmentation.eval_flip
    ):
      checks.fail(
        'segmentation.eval_flip',
        segmentation.eval_flip,
        'the scenes hold digits, and a mirrored digit is another glyph',
        'False',
      )
    scales = segmentation.eval_scales
    if (
      not isinstance(scales, (tuple, list))
      or not scales
      or not all(checks.is_number(v) and v > 0 for v in scales)
    ):
      checks.fail(
        'segmentation.eval_scales',
        scales,
        'it must be a non-empty list of positive scales',
        '"(0.5,0.75,1.0,1.25,1.5,1.75)"',
      )


def _check_run(config, defaults) -> None:
  """Batch sizes, intervals, seeds and the length of the run."""
  checks.check_positive_integers(
    config,
    (
      'batch_size',
      'eval_batch_size',
      'base_batch_size',
      'log_every_steps',
      'checkpoint_every_steps',
      'keep_checkpoints',
    ),
    defaults,
  )
  if not checks.is_int(config.seed) or not 0 <= config.seed < 2**32:
    checks.fail('seed', config.seed, 'it must be an integer in [0, 2**32)', '0')
  if not checks.is_int(config.inference_microbatch) or (
    config.inference_microbatch < -1
  ):
    checks.fail(
      'inference_microbatch',
      config.inference_microbatch,
      'it must be -1 (auto), 0 (whole batch) or a positive integer',
      '-1',
    )
  if not checks.is_int(config.num_train_steps):
    checks.fail(
      'num_train_steps',
      config.num_train_steps,
      'it must be an integer (-1: use num_epochs)',
      '-1',
    )
  if config.num_train_steps <= 0 and not (
    checks.is_number(config.num_epochs) and config.num_epochs > 0
  ):
    checks.fail(
      'num_epochs',
      config.num_epochs,
      'it must be a finite number > 0 unless num_train_steps is set',
      '10',
    )
