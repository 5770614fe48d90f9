"""What config.model may hold, checked before anything is built
(`configuration.validate` runs `check`).

The choices come from `choices.py`; the numbers' ranges are the networks'
own (a width multiplier > 0, an expansion ratio >= 1, an input that survives
the 32x downsampling of Table 2). A peer network (MobileNetV1, ShuffleNet,
NASNet-A, ResNet) leaves MobileNetV2's own options at their defaults, and
the heads run only on the backbones that give them endpoints. Imports no
jax or flax, like the rest of the config's checks.
"""

from __future__ import annotations

from mnv2_jax import choices
from mnv2_jax import config_checks as checks

MIN_IMAGE_SIZE = 32  # one pixel left after the 32x downsampling of Table 2
# MobileNetV2's options, which its peers leave at their defaults.
MOBILENET_V2_ONLY = (
  'expansion_ratio',
  'expansion_ratio_per_block',
  'bottleneck_activation',
  'residual',
  'inference_splits',
)


def check(config, defaults) -> None:
  """config.model, config.image_size, and the model against config.task.

  Raises ValueError naming the field, what is allowed and a fix (examples
  from `defaults`, the base config).
  """
  checks.check_choice(
    config, 'model.architecture', choices.ARCHITECTURES, defaults
  )
  _check_peer_options(config, defaults)
  for field, allowed in (
    ('model.bottleneck_activation', choices.BOTTLENECK_ACTIVATIONS),
    ('model.residual', choices.RESIDUAL_PLACEMENTS),
    ('model.output_stride', choices.OUTPUT_STRIDES),
    ('model.padding', choices.PADDING_MODES),
    ('model.dtype', choices.DTYPES),
    ('model.implementation', choices.IMPLEMENTATIONS),
  ):
    checks.check_choice(config, field, allowed, defaults)
  _check_numbers(config, defaults)


def _check_peer_options(config, defaults) -> None:
  """The options only MobileNetV2 has stay at their defaults for its peers,
  and the peers' own options are in range."""
  architecture = config.model.architecture
  if architecture == 'mobilenet_v2':
    return
  heads_run_on = {
    'detection': choices.DETECTION_BACKBONES,
    'segmentation': choices.SEGMENTATION_BACKBONES,
  }.get(config.task)
  if heads_run_on is not None and architecture not in heads_run_on:
    checks.fail(
      'model.architecture',
      architecture,
      f'the {config.task} heads run on {", ".join(heads_run_on)}',
      'mobilenet_v2',
    )
  for field in MOBILENET_V2_ONLY:
    if not checks.same_value(config.model[field], defaults.model[field]):
      checks.fail(
        f'model.{field}',
        config.model[field],
        f'it is a MobileNetV2 option, and model.architecture is '
        f'{architecture!r}',
        defaults.model[field],
      )
  if architecture == 'shufflenet':
    checks.check_choice(
      config, 'model.width_multiplier', choices.SHUFFLENET_SCALES, defaults
    )
    checks.check_choice(
      config, 'model.shufflenet_groups', choices.SHUFFLENET_GROUPS, defaults
    )
    checks.check_choice(config, 'model.output_stride', (32,), defaults)
  if architecture == 'nasnet_a':
    _check_nasnet(config, defaults)


def _check_nasnet(config, defaults) -> None:
  checks.check_choice(config, 'model.width_multiplier', (1.0,), defaults)
  checks.check_choice(config, 'model.output_stride', (32,), defaults)
  checks.check_positive_integers(
    config, ('model.nasnet_cells_per_stack',), defaults
  )
  filters = config.model.nasnet_filters
  if not checks.is_int(filters) or filters < 4 or filters % 4:
    checks.fail(
      'model.nasnet_filters',
      filters,
      'it must be a positive multiple of 4 (the stem cells use a quarter '
      'and a half of it)',
      44,
    )


def _check_numbers(config, defaults) -> None:
  model = config.model
  if not checks.is_number(model.width_multiplier) or (
    model.width_multiplier <= 0
  ):
    checks.fail(
      'model.width_multiplier',
      model.width_multiplier,
      'it must be a number > 0 (the release grid: 0.35, 0.5, 0.75, 1.0, '
      '1.3, 1.4)',
      '1.0',
    )
  if not checks.is_number(model.expansion_ratio) or model.expansion_ratio < 1:
    checks.fail(
      'model.expansion_ratio',
      model.expansion_ratio,
      'it must be a number >= 1 (the paper uses 6)',
      '6',
    )
  per_block = model.expansion_ratio_per_block
  if (
    not isinstance(per_block, (tuple, list))
    or per_block
    and (
      len(per_block) != choices.MOBILENET_V2_BLOCKS
      or not all(checks.is_number(t) and t >= 1 for t in per_block)
    )
  ):
    checks.fail(
      'model.expansion_ratio_per_block',
      per_block,
      f'it must be empty or {choices.MOBILENET_V2_BLOCKS} numbers >= 1',
      '"(1,' + ','.join(['6'] * (choices.MOBILENET_V2_BLOCKS - 1)) + ')"',
    )
  for field, low, high, low_inclusive in (
    ('model.dropout_rate', 0.0, 1.0, True),
    ('model.batch_norm_momentum', 0.0, 1.0, False),
    ('model.batch_norm_epsilon', 0.0, float('inf'), False),
  ):
    checks.check_range(
      config,
      field,
      low,
      high,
      defaults,
      low_inclusive=low_inclusive,
      high_inclusive=False,
    )
  if not checks.is_int(model.inference_splits) or model.inference_splits < 1:
    checks.fail(
      'model.inference_splits',
      model.inference_splits,
      'it must be a positive integer (1: no splitting; paper §5.1)',
      '1',
    )
  if not checks.is_int(config.image_size) or config.image_size < MIN_IMAGE_SIZE:
    checks.fail(
      'image_size',
      config.image_size,
      f'it must be >= {MIN_IMAGE_SIZE} (the network downsamples 32x; the '
      'paper uses 96-224)',
      '224',
    )
