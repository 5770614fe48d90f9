"""The pieces every layer's config checker is made of.

`configuration.validate` runs the checkers in order: the run's own fields
(configuration.py), the model's (`models/options.py`) and the dataset's
(`data/registry.py`). Each failure is one ValueError naming the field, what
is allowed and a fix, e.g.

  config.optimizer='adamw' is invalid: allowed values are ['rmsprop', 'sgd',
  'adam']. Fix it in the config file or with --config.optimizer=rmsprop.

The examples default to the base config's value (`defaults`), the paper's
choice. Nothing here imports jax or a layer of the package.
"""

from __future__ import annotations

import math
from typing import Any


def fail(field: str, value: Any, allowed: str, example: Any) -> None:
  raise ValueError(
    f'config.{field}={value!r} is invalid: {allowed}. '
    f'Fix it in the config file or with --config.{field}={example}.'
  )


def is_number(value) -> bool:
  """A real, finite number (not a bool, None, NaN or infinity)."""
  return (
    isinstance(value, (int, float))
    and not isinstance(value, bool)
    and math.isfinite(value)
  )


def is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def get(config, field: str) -> Any:
  """config['a']['b'] for field 'a.b'."""
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


def check_choice(config, field: str, allowed, defaults) -> None:
  value = get(config, field)
  if value not in allowed:
    fail(
      field, value, f'allowed values are {list(allowed)}', get(defaults, field)
    )


def check_range(
  config,
  field: str,
  low: float,
  high: float,
  defaults,
  *,
  low_inclusive: bool,
  high_inclusive: bool,
) -> None:
  value = get(config, field)
  numeric = is_number(value)
  above = numeric and (value >= low if low_inclusive else value > low)
  below = numeric and (value <= high if high_inclusive else value < high)
  if not (above and below):
    interval = (
      ('[' if low_inclusive else '(')
      + f'{low}, {high}'
      + (']' if high_inclusive else ')')
    )
    fail(field, value, f'it must be in {interval}', get(defaults, field))


def check_positive_integers(config, fields, defaults) -> None:
  for field in fields:
    value = get(config, field)
    if not is_int(value) or value <= 0:
      fail(field, value, 'it must be a positive integer', get(defaults, field))


def same_value(a, b) -> bool:
  """Lists and tuples compare as tuples (a config may hold either)."""

  def canonical(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value

  return canonical(a) == canonical(b)
