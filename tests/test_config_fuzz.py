"""Config fuzzing (hypothesis): any mix of valid and invalid values in the
config's fields either builds a trainer or fails at once with a one-line
error that names a config field and a fix; never a traceback from JAX."""

import inspect
import math
import os
import re
import subprocess
import sys

import helpers
import hypothesis
import pytest
from hypothesis import strategies as st

from mnv2_jax import choices
from mnv2_jax import configuration
from mnv2_jax.training import trainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  config = helpers.config_file(name)
  # Small enough to build in a second; the fuzzed fields override these.
  config.image_size = 64 if config.task == 'classification' else 65
  return config


BASES = (
  'quickstart',
  'deeplab_quickstart',
  'ssdlite_quickstart',
  'cluttered_digits',
)

# Each fuzzed field with values that are valid somewhere: the strategy mixes
# them with numbers and strings of every kind.
FIELD_VALUES = {
  'mode': ['train', 'eval'],
  'task': list(configuration.TASKS),
  'dataset.name': ['digits', 'cluttered_digits', 'scenes'],
  'num_classes': [10, 11, 1000],
  'image_size': [32, 64, 65, 97],
  'model.width_multiplier': [0.35, 0.5, 1.0, 1.4],
  'model.expansion_ratio': [1.0, 3.0, 6.0],
  'model.bottleneck_activation': ['linear', 'relu6'],
  'model.residual': ['bottleneck', 'expansion', 'none'],
  'model.output_stride': [8, 16, 32],
  'model.dropout_rate': [0.0, 0.2],
  'model.batch_norm_momentum': [0.9, 0.997],
  'model.batch_norm_epsilon': [1e-3],
  'model.padding': ['same', 'symmetric'],
  'model.dtype': ['float32', 'bfloat16'],
  'model.implementation': ['auto', 'cpu', 'xla'],
  'model.inference_splits': [1, 4],
  'num_epochs': [1.0, 10.0],
  'num_train_steps': [-1, 5],
  'batch_size': [16, 32],
  'eval_batch_size': [16, 50],
  'optimizer': ['rmsprop', 'sgd', 'adam'],
  'base_learning_rate': [0.01, 0.045],
  'lr_schedule': ['exponential', 'cosine', 'poly'],
  'warmup_epochs': [0.0, 1.0],
  'weight_decay': [0.0, 4e-5],
  'label_smoothing': [0.0, 0.1],
  'ema_decay': [0.0, 0.9999],
  'quantization_consistency': [0.0, 10.0],
  'quantization_ranges': ['batch', 'others'],
  'momentum': [0.9],
  'keep_checkpoints': [1, 3],
  'detection.max_boxes': [10, 100],
  'detection.min_scale': [0.2],
  'detection.nms_iou_threshold': [0.6],
  'segmentation.aspp': [False, True],
  'segmentation.min_scale_factor': [0.5],
}


def values_for(field):
  return st.one_of(
    st.sampled_from(FIELD_VALUES[field]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.text(max_size=6),
    st.none(),
  )


@st.composite
def fuzzed_configs(draw):
  config = _load(draw(st.sampled_from(BASES)))
  fields = draw(
    st.lists(
      st.sampled_from(sorted(FIELD_VALUES)), min_size=1, max_size=3, unique=True
    )
  )
  assigned = {}
  for field in fields:
    value = draw(values_for(field))
    *parents, leaf = field.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    try:
      node[leaf] = value
    except (TypeError, ValueError) as error:
      # ml_collections refuses a value of another type on assignment, as the
      # command line does (--config.batch_size=abc): it must name the field.
      assert leaf in str(error), (field, value, error)
      continue
    assigned[field] = value
  return config, assigned


ERROR = re.compile(
  r'^config\.([\w.]+)=.* is invalid: .+ Fix it in the config '
  r'file or with --config\.\1=.*$'
)


def _field_exists(config, field):
  node = config
  for part in field.split('.'):
    if part not in node:
      return False
    node = node[part]
  return True


# What each field accepts whatever the others hold: the oracle the validator
# is checked against. (Fields whose validity depends on others, such as
# num_classes on the dataset or num_epochs on num_train_steps, are left out.)
CHOICES = {
  'mode': configuration.MODES,
  'task': configuration.TASKS,
  'model.bottleneck_activation': ('linear', 'relu6'),
  'model.residual': ('bottleneck', 'expansion', 'none'),
  'model.output_stride': (8, 16, 32),
  'model.padding': ('same', 'symmetric'),
  'model.dtype': ('float32', 'bfloat16'),
  'model.implementation': ('auto', 'cpu', 'xla'),
  'optimizer': configuration.OPTIMIZERS,
  'lr_schedule': configuration.LR_SCHEDULES,
  'quantization_ranges': choices.QUANTIZATION_RANGES,
}
INTEGER_AT_LEAST = {
  'image_size': 32,
  'batch_size': 1,
  'eval_batch_size': 1,
  'keep_checkpoints': 1,
  'model.inference_splits': 1,
  'detection.max_boxes': 1,
}
# (low, high, low inclusive, high inclusive)
NUMBER_IN = {
  'model.width_multiplier': (0, math.inf, False, False),
  'model.expansion_ratio': (1, math.inf, True, False),
  'model.dropout_rate': (0, 1, True, False),
  'model.batch_norm_momentum': (0, 1, False, False),
  'model.batch_norm_epsilon': (0, math.inf, False, False),
  'base_learning_rate': (0, math.inf, False, False),
  'warmup_epochs': (0, math.inf, True, False),
  'weight_decay': (0, math.inf, True, False),
  'label_smoothing': (0, 1, True, False),
  'ema_decay': (0, 1, True, False),
  'quantization_consistency': (0, math.inf, True, False),
  'momentum': (0, 1, True, False),
  'detection.nms_iou_threshold': (0, 1, True, True),
}


def _value(config, field):
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


def known_invalid(config, field) -> bool:
  """Whether the field's value is invalid whatever the other fields hold."""
  value = _value(config, field)
  if field in CHOICES:
    return isinstance(value, bool) or value not in CHOICES[field]
  number = isinstance(value, (int, float)) and not isinstance(value, bool)
  if field in INTEGER_AT_LEAST:
    return not (
      number and isinstance(value, int) and value >= INTEGER_AT_LEAST[field]
    )
  if field in NUMBER_IN:
    low, high, low_in, high_in = NUMBER_IN[field]
    if not number or not math.isfinite(value):
      return True
    above = value >= low if low_in else value > low
    below = value <= high if high_in else value < high
    return not (above and below)
  return False


def check(config):
  """validate(); on success the trainer builds and its schedule is finite."""
  try:
    configuration.validate(config)
  except ValueError as error:
    message = str(error)
    assert '\n' not in message, message
    match = ERROR.match(message)
    assert match, message
    assert _field_exists(config, match.group(1)), message
    return False
  return True


@hypothesis.settings(
  max_examples=300, deadline=None, derandomize=True, database=None
)
@hypothesis.given(fuzzed_configs())
def test_any_config_validates_or_names_the_field(case):
  config, assigned = case
  accepted = check(config)
  invalid = [field for field in assigned if known_invalid(config, field)]
  # The oracle: a value known to be invalid is never accepted.
  assert not (accepted and invalid), (invalid, assigned)


@hypothesis.settings(
  max_examples=10,
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=[
    hypothesis.HealthCheck.too_slow,
    hypothesis.HealthCheck.filter_too_much,
  ],
)
@hypothesis.given(fuzzed_configs())
def test_every_valid_config_builds_a_trainer(case):
  config, _ = case
  hypothesis.assume(check(config))
  try:
    run = trainer.Trainer(config)
  except ValueError as error:  # the run length, known with the dataset
    assert ERROR.match(str(error)), error
    return
  schedule = run.schedule
  for step in (0, schedule.total_steps // 2, schedule.total_steps):
    assert math.isfinite(float(run.learning_rate(step)))
  assert run.abstract_state.params


@pytest.mark.parametrize(
  'field,value',
  [
    ('model.width_multiplier', float('nan')),
    ('model.width_multiplier', float('inf')),
    ('base_learning_rate', float('nan')),
    ('num_epochs', float('nan')),
    ('num_epochs', float('inf')),
  ],
)
def test_non_finite_and_absurd_values_are_refused(field, value):
  config = _load('quickstart')
  config.update_from_flattened_dict({field: value})
  assert not check(config)


def test_a_run_longer_than_the_step_counter_is_refused():
  # Found by the fuzzer: 97,612,894 epochs of the 1,437 digits overflowed the
  # int32 step in optax; the quickstart now trains on 1,257.
  config = _load('quickstart')
  config.num_epochs = 2e8
  check(config)
  with pytest.raises(ValueError, match=ERROR.pattern):
    trainer.Trainer(config)


def test_the_light_choices_are_the_implementations():
  """configuration validates against mnv2_jax/choices.py and
  data/registry.py, which import nothing heavy; each must name exactly what
  the networks and pipelines implement, and loading a config must not
  import jax, flax or the pipelines' libraries."""
  from mnv2_jax import choices
  from mnv2_jax.data import batch_format
  from mnv2_jax.data import cluttered_digits
  from mnv2_jax.data import datasets
  from mnv2_jax.data import digits
  from mnv2_jax.data import scenes
  from mnv2_jax.models import building
  from mnv2_jax.models import layers
  from mnv2_jax.models import mobilenet_v2
  from mnv2_jax.models import shufflenet

  assert choices.ARCHITECTURES == tuple(building.ARCHITECTURES)
  assert choices.MOBILENET_V2_BLOCKS == mobilenet_v2.NUM_BLOCKS
  assert choices.DTYPES == tuple(layers.DTYPES)
  assert choices.SHUFFLENET_SCALES == shufflenet.SCALES
  assert choices.SHUFFLENET_GROUPS == tuple(shufflenet.STAGE_CHANNELS)
  assert datasets.DATASETS['cluttered_digits'].splits == tuple(
    cluttered_digits.SPLIT_SIZES
  )
  assert datasets.DATASETS['scenes'].splits == tuple(scenes.SPLIT_SIZES)
  assert digits.SPLITS == datasets.DATASETS['digits'].splits
  assert batch_format.PREPROCESSING == ('inception', 'torchvision', 'cifar')
  loaded = subprocess.run(
    [
      sys.executable,
      '-c',
      'import sys; import mnv2_jax.configuration; '
      "print(sorted(m for m in ('jax', 'flax', 'tensorflow', 'sklearn', "
      "'skimage', 'PIL') if m in sys.modules))",
    ],
    capture_output=True,
    text=True,
    check=True,
    cwd=REPO_ROOT,
  )
  assert loaded.stdout.strip() == '[]', loaded.stdout


def test_every_dataset_is_served_by_its_registered_module():
  """datasets.py dispatches by registry.DATASETS[name].pipeline alone: each
  registered module serves the whole interface, with an explicit split for
  evaluation, and an unknown name is refused by name."""
  from mnv2_jax.data import datasets

  for name, spec in datasets.DATASETS.items():
    module = datasets.pipeline(name)
    for function in ('dataset_info', 'train_batches', 'eval_batches'):
      assert callable(getattr(module, function, None)), (name, function)
    parameters = inspect.signature(module.eval_batches).parameters
    assert 'split' in parameters, name
    if spec.tfds:
      assert callable(getattr(module, 'check_data_available', None)), name
  with pytest.raises(ValueError, match="'mnist' is not a dataset"):
    datasets.pipeline('mnist')
