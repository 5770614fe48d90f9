"""An experiment's points: the paper's experiments (§4, Figure 5, Figure 6)
as data.

An experiment config file defines, beside the usual `get_config()`,

  def get_sweep(scale=None) -> list[dict[str, Any]]:
    # `scale`: the text after the colon of `--config file.py:scale`
    # one dict of dotted config overrides per point; seeds are an axis
    return [{'model.bottleneck_activation': a, 'seed': s}
            for a in ('linear', 'relu6') for s in (0, 1, 2)]

This reads and checks them, and names each point (its directory) and the
row its seeds are averaged in. runner.py runs them, report.py and plots.py
report them; the command line is `python -m mnv2_jax.sweep`.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from typing import Sequence

from mnv2_jax import configuration

SEED_KEY = 'seed'


# The two axes of Figure 5: a sweep over both is also drawn as the paper's
# grid (`grid_curves`).
WIDTH_KEY = 'model.width_multiplier'


RESOLUTION_KEY = 'image_size'


# Config files and --config.<key>=<value> overrides, shared with `main`.
split_config_argument = configuration.split_config_argument


apply_overrides = configuration.apply_overrides


def load_experiment(argument: str, arguments: Sequence[str] = ()):
  """The base config and the list of override dicts of an experiment file.

  `arguments`: `--config.<key>=<value>` for every point (e.g. a shorter
  schedule for all of them); they join each point's overrides, so a point
  with them has its own name and directory, and apply to `base`."""
  path, config_string = configuration.split_config_argument(argument)
  module = configuration.load_module(path)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(
      f'{path} has no get_sweep(): a sweep config returns its list of '
      'override dicts from get_sweep() (see mnv2_jax/sweep.py).'
    )
  call = lambda fn: fn(config_string) if config_string is not None else fn()
  base = call(module.get_config)
  points = [dict(point) for point in call(module.get_sweep)]
  common = configuration.command_line_overrides(base, arguments, 'a sweep')
  swept = {key for point in points for key in point} & set(common)
  if swept:
    raise ValueError(
      f'{", ".join(sorted(swept))}: swept by {path}; a --config. override '
      'for every point can set only fields the sweep does not.'
    )
  points = [{**common, **point} for point in points]
  check_points(base, points, path)
  return configuration.apply_overrides(base, common), points


def check_points(base, points: Sequence[dict], path: str) -> None:
  """Every override names an existing config field; names are unique."""
  if not points:
    raise ValueError(f'{path}: get_sweep() returned no points.')
  flat = configuration.flatten(base.to_dict())
  names = {}
  for point in points:
    for key in point:
      if key not in flat:
        raise ValueError(
          f'{path}: sweep point {point} overrides config.{key}, which does '
          f'not exist. Known fields: {", ".join(sorted(flat))}.'
        )
    name = point_name(point)
    if name in names:
      raise ValueError(
        f'{path}: points {names[name]} and {point} have the same name {name!r}.'
      )
    names[name] = point
    configuration.validate(apply_overrides(base, point))


def format_value(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return '(' + ','.join(format_value(v) for v in value) + ')'
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)


def point_name(overrides: dict[str, Any]) -> str:
  """'expansion_ratio=6_width_multiplier=0.5_seed=1' (last key components)."""
  return '_'.join(
    f'{key.split(".")[-1]}={format_value(value)}'
    for key, value in overrides.items()
  )


def group_name(overrides: dict[str, Any]) -> str:
  """The point's name without its seed: the row its seeds are averaged in."""
  rest = {k: v for k, v in overrides.items() if k != SEED_KEY}
  return point_name(rest) if rest else 'base'


def point_command(
  config_argument: str, workdir: str, overrides: dict[str, Any]
) -> list[str]:
  """The `python -m mnv2_jax.main` command line that trains one point."""
  command = [
    sys.executable,
    '-m',
    'mnv2_jax.main',
    f'--config={config_argument}',
    f'--workdir={os.path.join(workdir, point_name(overrides))}',
  ]
  for key, value in overrides.items():
    command.append(f'--config.{key}={format_value(value)}')
  return command


def swept_keys(items: Sequence[dict]) -> list[str]:
  """The override keys of rows or runs, in first-seen order."""
  keys = []
  for item in items:
    keys += [k for k in item['overrides'] if k not in keys]
  return keys


def experiment_title(argument: str) -> str:
  path, config_string = split_config_argument(argument)
  name = os.path.splitext(os.path.basename(path))[0]
  return name + (f' ({config_string})' if config_string else '')
