"""Sweeps: the paper's experiments (§4, Figure 5, Figure 6) as data.

An experiment config file defines, beside the usual `get_config()`,

  def get_sweep(scale=None) -> list[dict[str, Any]]:
    # `scale`: the text after the colon of `--config file.py:scale`
    # one dict of dotted config overrides per point; seeds are an axis
    return [{'model.bottleneck_activation': a, 'seed': s}
            for a in ('linear', 'relu6') for s in (0, 1, 2)]

Every point runs through the normal entry point (`python -m mnv2_jax.main`)
in `<workdir>/<point-name>/`. A point whose `point.json` exists is finished
and skipped; any other point is (re)started, and `main` resumes it from its
latest checkpoint. A run evaluates its eval split (the built-in sets:
'validation', where settings are chosen) during training and its test split
once, at the end; the report gives both. It summarises the finished points in
`results.md` (one row per point without its seed: mean ± std over seeds of
the final metrics, parameters, multiply-adds), `results.csv` (one row per run)
and PNG plots (the curves are the eval split's). The command line is
`python -m mnv2_jax.sweep`.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import math
import os
import shlex
import statistics as stats_lib
import subprocess
import sys
import threading
import time
from typing import Any
from typing import Optional
from typing import Sequence

from mnv2_jax import configuration
from mnv2_jax import tasks
from mnv2_jax.models import build_model
from mnv2_jax.models import statistics
from mnv2_jax.training import metric_writers
from mnv2_jax.training import provenance

SEED_KEY = 'seed'
RESULT_FILE = 'point.json'
# The two axes of Figure 5: a sweep over both is also drawn as the paper's
# grid (`grid_curves`).
WIDTH_KEY = 'model.width_multiplier'
RESOLUTION_KEY = 'image_size'
# What sweeps before the test split wrote (the trainer's run record now has
# this name): read when a point has no RESULT_FILE, never written.
LEGACY_RESULT_FILE = 'result.json'


# --------------------------------------------------------------- the sweep

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


def _format_value(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return '(' + ','.join(_format_value(v) for v in value) + ')'
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)


def point_name(overrides: dict[str, Any]) -> str:
  """'expansion_ratio=6_width_multiplier=0.5_seed=1' (last key components)."""
  return '_'.join(
    f'{key.split(".")[-1]}={_format_value(value)}'
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
    command.append(f'--config.{key}={_format_value(value)}')
  return command


def _load_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as error:
    raise ValueError(
      f'{path} is not valid JSON ({error}). Delete it to train that point '
      'again (its checkpoints are kept and it resumes from the last one).'
    ) from error


def _read_point_result(point_dir: str) -> Optional[dict]:
  """The point's result, or None while it is unfinished."""
  path = os.path.join(point_dir, RESULT_FILE)
  if os.path.exists(path):
    return _load_json(path)
  legacy = os.path.join(point_dir, LEGACY_RESULT_FILE)
  if os.path.exists(legacy):
    result = _load_json(legacy)
    if 'overrides' in result:  # a sweep's, not the trainer's run record
      return result
  return None


def is_finished(workdir: str, overrides: dict[str, Any]) -> bool:
  point_dir = os.path.join(workdir, point_name(overrides))
  return _read_point_result(point_dir) is not None


def final_evaluations(records: Sequence[dict]) -> dict[str, dict]:
  """The evaluation records (not 'train') of the last evaluated step, by
  split, in the order written: the eval split, then the test split if the
  run has one."""
  evaluations = [r for r in records if r.get('split') != 'train']
  if not evaluations:
    return {}
  last = evaluations[-1]['step']
  return {r['split']: r for r in evaluations if r['step'] == last}


def final_evaluation(records: Sequence[dict]) -> Optional[dict]:
  """The record a sweep reports: the last one written at the last step (the
  test split's when the run has one)."""
  finals = final_evaluations(records)
  return list(finals.values())[-1] if finals else None


def curve_split(records: Sequence[dict]) -> Optional[str]:
  """The split evaluated during training (the first evaluation's)."""
  return next((r['split'] for r in records if r.get('split') != 'train'), None)


def point_environment(
  jobs: int,
  memory_fraction: Optional[float] = None,
  environ: Optional[dict[str, str]] = None,
) -> dict[str, str]:
  """The environment of each point's process when `jobs` share a machine.

  On a GPU, JAX would otherwise take 75% of the card's memory in the first
  process that starts, and the next ones would fail: each process gets
  `memory_fraction` of it (default 0.9 / jobs) and allocates on demand
  (no preallocation). A setting the user made in the environment stays.
  CPU runs ignore both.
  """
  env = dict(os.environ if environ is None else environ)
  if jobs > 1 or memory_fraction is not None:
    fraction = 0.9 / jobs if memory_fraction is None else memory_fraction
    if not 0.0 < fraction <= 1.0:
      raise ValueError(
        f'memory_fraction must be in (0, 1], got {fraction}: give '
        '--memory_fraction with --jobs so that jobs x fraction <= 1.'
      )
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    env.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', f'{fraction:.3f}')
  return env


def run_point(
  config_argument: str,
  workdir: str,
  overrides: dict[str, Any],
  env: Optional[dict[str, str]] = None,
) -> dict:
  """Trains (or resumes) one point and writes its point.json."""
  point_dir = os.path.join(workdir, point_name(overrides))
  os.makedirs(point_dir, exist_ok=True)
  command = point_command(config_argument, workdir, overrides)
  start = time.time()
  with open(os.path.join(point_dir, 'log.txt'), 'a') as log:
    log.write('$ ' + ' '.join(shlex.quote(c) for c in command) + '\n')
    log.flush()
    returncode = subprocess.run(
      command, stdout=log, stderr=subprocess.STDOUT, check=False, env=env
    ).returncode
  if returncode:
    with open(os.path.join(point_dir, 'log.txt')) as log:
      tail = ''.join(log.readlines()[-15:])
    raise RuntimeError(
      f'{point_name(overrides)} failed (exit {returncode}); '
      f'the end of {point_dir}/log.txt:\n{tail}'
    )
  records = metric_writers.read_jsonl(point_dir)
  final = final_evaluation(records)
  if final is None:
    raise RuntimeError(
      f'{point_name(overrides)} exited without an evaluation '
      f'in {point_dir}/metrics.jsonl.'
    )
  result = {
    'overrides': overrides,
    'final': final,
    'final_by_split': final_evaluations(records),
    'wall_seconds_last_attempt': time.time() - start,
  }
  # Atomic (a temporary file renamed): a report taken while other points
  # run never reads half a file.
  provenance.write(os.path.join(point_dir, RESULT_FILE), result)
  return result


# --------------------------------------------------------------- the report


def _model_counts(base, overrides: dict[str, Any]) -> dict[str, int]:
  config = apply_overrides(base, overrides)
  counts = statistics.model_statistics(build_model(config), config.image_size)
  return {
    'parameters': counts['trainable_parameters'],
    'multiply_adds': counts['multiply_adds'],
  }


def collect(base, points: Sequence[dict], workdir: str) -> list[dict]:
  """One row per finished run: its overrides, final metrics and curve."""
  runs = []
  for overrides in points:
    point_dir = os.path.join(workdir, point_name(overrides))
    result = _read_point_result(point_dir)
    if result is None:
      continue
    records = metric_writers.read_jsonl(point_dir)
    final = result['final']
    by_split = result.get('final_by_split', {final['split']: final})
    during = curve_split(records)
    training = [r for r in records if r.get('split') == 'train']
    runs.append(
      {
        'overrides': overrides,
        'group': group_name(overrides),
        'final': final,
        # The eval split's final record when it is not the reported one.
        'validation': (
          by_split.get(during) if during != final['split'] else None
        ),
        'curve': [(r['step'], r) for r in records if r.get('split') == during],
        'curve_split': during,
        # The last logged training loss: a run still far above the others'
        # has not converged at its budget.
        'final_train_loss': training[-1].get('loss') if training else None,
        'seconds': result.get('wall_seconds_last_attempt', 0.0),
      }
    )
  return runs


def headline_metric(base) -> str:
  return tasks.TASK_CLASSES[base.task].headline_metric


def summarise(base, points: Sequence[dict], runs: Sequence[dict]) -> list[dict]:
  """Rows grouped over seeds, in the order of the sweep's points."""
  metric = headline_metric(base)
  groups: dict[str, dict] = {}
  for overrides in points:
    name = group_name(overrides)
    if name not in groups:
      rest = {k: v for k, v in overrides.items() if k != SEED_KEY}
      groups[name] = {
        'group': name,
        'overrides': rest,
        'values': [],
        'validation_values': [],
        'seeds': [],
      }
  for run in runs:
    group = groups[run['group']]
    group['values'].append(float(run['final'][metric]))
    if run['validation'] is not None:
      group['validation_values'].append(float(run['validation'][metric]))
    group['seeds'].append(run['overrides'].get(SEED_KEY, base.seed))
  rows = []
  for group in groups.values():
    counts = _model_counts(base, group['overrides'])
    rows.append(
      {
        **group,
        **counts,
        'metric': metric,
        'split': runs[0]['final']['split'] if runs else 'test',
        'runs': len(group['values']),
        **_mean_and_std(group['values']),
        **{
          f'validation_{k}': v
          for k, v in _mean_and_std(group['validation_values']).items()
        },
      }
    )
  return rows


def _mean_and_std(values: Sequence[float]) -> dict[str, float]:
  return {
    'mean': stats_lib.fmean(values) if values else math.nan,
    'std': stats_lib.stdev(values) if len(values) > 1 else 0.0,
  }


def _swept_keys(items: Sequence[dict]) -> list[str]:
  """The override keys of rows or runs, in first-seen order."""
  keys = []
  for item in items:
    keys += [k for k in item['overrides'] if k not in keys]
  return keys


def format_markdown(
  title: str,
  rows: Sequence[dict],
  total_points: int,
  finished: int,
  seconds: float = 0.0,
) -> str:
  metric = rows[0]['metric'] if rows else 'metric'
  split = rows[0]['split'] if rows else 'test'
  with_validation = any(row['validation_values'] for row in rows)
  percent = metric in ('top1', 'top5')
  scale = 100.0 if percent else 1.0
  unit = ' (%)' if percent else ''
  keys = _swept_keys(rows)
  columns = keys + [f'{split} {metric}{unit}']
  if with_validation:
    columns.append(f'validation {metric}{unit}')
  columns += ['seeds', 'parameters', 'multiply-adds']
  lines = [
    f'# {title}',
    '',
    f'{finished} of {total_points} runs finished, '
    f"{seconds / 60:.1f} minutes of training: each run's wall time "
    f'(its last attempt), added up, so runs side by side (--jobs) '
    f'count twice. Mean ± standard deviation over seeds of the final '
    f'{split} {metric}'
    + (
      ' (scored once, at the end) and of the validation split (where '
      'settings are chosen).'
      if with_validation
      else '.'
    ),
    '',
    '| ' + ' | '.join(columns) + ' |',
    '|' + '---|' * len(columns),
  ]

  def mean_and_std(row, prefix=''):
    if not row[f'{prefix}values']:
      return 'not run'
    return (
      f'{row[f"{prefix}mean"] * scale:.2f} ± {row[f"{prefix}std"] * scale:.2f}'
    )

  for row in rows:
    cells = [_format_value(row['overrides'].get(k, '')) for k in keys]
    cells.append(mean_and_std(row))
    if with_validation:
      cells.append(mean_and_std(row, 'validation_'))
    cells += [
      str(row['runs']),
      f'{row["parameters"]:,}',
      f'{row["multiply_adds"] / 1e6:.1f}M',
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write_csv(path: str, runs: Sequence[dict]) -> None:
  """One row per run: its overrides, its final metrics, prefixed
  `validation_` its eval split's when the final ones are the test split's,
  and its last logged training loss (`train_loss`)."""
  keys, finals = _swept_keys(runs), []

  def numbers(run):
    values = {
      k: v
      for k, v in run['final'].items()
      if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    for k, v in (run['validation'] or {}).items():
      if isinstance(v, (int, float)) and not isinstance(v, bool):
        values[f'validation_{k}'] = v
    if run.get('final_train_loss') is not None:
      values['train_loss'] = run['final_train_loss']
    return values

  for run in runs:
    finals += [k for k in numbers(run) if k not in finals]
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['group'] + keys + ['split'] + finals)
    for run in runs:
      values = numbers(run)
      writer.writerow(
        [run['group']]
        + [_format_value(run['overrides'].get(k, '')) for k in keys]
        + [run['final']['split']]
        + [values.get(k, '') for k in finals]
      )


class _Figures:
  """What the sweep's plots share: the metric's scale and label, the title,
  and saving a figure into the results folder."""

  def __init__(self, results_dir: str, rows: Sequence[dict], title: str):
    import matplotlib  # noqa: PLC0415 (only for the plots)

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    self.plt, self.ticker = plt, matplotlib.ticker
    self.results_dir, self.title = results_dir, title
    self.metric = rows[0]['metric']
    self.scale = 100.0 if self.metric in ('top1', 'top5') else 1.0
    self.unit = ' (%)' if self.scale == 100.0 else ''
    self.final_label = f'{rows[0]["split"]} {self.metric}{self.unit}'
    self.written: list[str] = []

  def save(self, figure, axes, xlabel, name, label=None):
    axes.set_xlabel(xlabel)
    axes.set_ylabel(label or self.final_label)
    axes.set_title(self.title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    self.write(figure, name)

  def write(self, figure, name):
    figure.tight_layout()
    path = os.path.join(self.results_dir, name)
    figure.savefig(path, dpi=120)
    self.plt.close(figure)
    self.written.append(path)


def plot(
  results_dir: str, base, rows: Sequence[dict], runs: Sequence[dict], title: str
) -> list[str]:
  """PNG plots; returns the paths written."""
  figures = _Figures(results_dir, rows, title)
  done = [row for row in rows if row['runs']]
  _plot_curves(figures, rows, runs)
  _plot_frontier(figures, base, done)
  if set(_swept_keys(done)) == {WIDTH_KEY, RESOLUTION_KEY}:
    _plot_width_resolution(figures, done)
  _plot_against_each_field(figures, rows, done)
  return figures.written


def _plot_curves(figures: _Figures, rows, runs) -> None:
  """The eval split's metric against training step, mean over seeds (Figure
  6's curves)."""
  metric, scale = figures.metric, figures.scale
  figure, axes = figures.plt.subplots(figsize=(6, 4))
  for row in rows:
    curves = [run['curve'] for run in runs if run['group'] == row['group']]
    if not curves:
      continue
    steps = sorted({step for curve in curves for step, _ in curve})
    means = []
    for step in steps:
      values = [r[metric] for curve in curves for s, r in curve if s == step]
      means.append(stats_lib.fmean(values) * scale)
    axes.plot(steps, means, marker='.', label=row['group'])
  during = next((run['curve_split'] for run in runs), None) or 'eval'
  figures.save(
    figure,
    axes,
    'training step',
    'curves.png',
    label=f'{during} {metric}{figures.unit}',
  )


def _plot_frontier(figures: _Figures, base, done) -> None:
  """The metric against multiply-adds (Figure 5), with the released ImageNet
  checkpoints beside ours when the sweep runs on ImageNet."""
  scale = figures.scale
  figure, axes = figures.plt.subplots(figsize=(6, 4))
  axes.errorbar(
    [row['multiply_adds'] / 1e6 for row in done],
    [row['mean'] * scale for row in done],
    yerr=[row['std'] * scale for row in done],
    fmt='o',
    label='this sweep',
  )
  for row in done:
    axes.annotate(
      row['group'],
      (row['multiply_adds'] / 1e6, row['mean'] * scale),
      fontsize=6,
    )
  if base.dataset.name == 'imagenet2012' and figures.metric == 'top1':
    released = [
      (macs, top1) for (top1, _, macs) in statistics.PUBLISHED_GRID.values()
    ]
    axes.scatter(
      [m for m, _ in released],
      [t for _, t in released],
      marker='x',
      color='grey',
      label='released checkpoints',
    )
  axes.set_xscale('log')
  figures.save(figure, axes, 'multiply-adds (millions)', 'frontier.png')


def _plot_width_resolution(figures: _Figures, done) -> None:
  """Figure 5 as the paper draws it: the runs joined along each width
  multiplier and along each resolution; beside it, the same drawing of the
  released ImageNet checkpoints' published top-1, for the shape."""
  scale = figures.scale
  ours = [
    (
      row['overrides'][WIDTH_KEY],
      row['overrides'][RESOLUTION_KEY],
      row['multiply_adds'] / 1e6,
      row['mean'] * scale,
      row['std'] * scale,
    )
    for row in done
  ]
  published = [
    (width, size, macs, top1, 0.0)
    for (width, size), (top1, _, macs) in statistics.PUBLISHED_GRID.items()
  ]
  figure, panels = figures.plt.subplots(1, 2, figsize=(11, 4.5))
  for axes, points, name in [
    (panels[0], ours, f'{figures.title}: {figures.final_label}'),
    (panels[1], published, 'released ImageNet checkpoints: top-1 (%)'),
  ]:
    _draw_grid_curves(figures, axes, points, name)
  panels[0].set_ylabel(figures.final_label)
  figures.write(figure, 'width_resolution.png')


def _draw_grid_curves(figures: _Figures, axes, points, name: str) -> None:
  for label, curve in grid_curves(points).items():
    axes.errorbar(
      [p[2] for p in curve],
      [p[3] for p in curve],
      yerr=[p[4] for p in curve] if any(p[4] for p in curve) else None,
      marker='o' if label.startswith('α') else None,
      linestyle='-' if label.startswith('α') else '--',
      capsize=3,
      label=label,
    )
  axes.set_xscale('log')
  plain = figures.ticker.FuncFormatter(lambda value, _: f'{value:g}')
  axes.xaxis.set_major_formatter(plain)
  macs = [p[2] for p in points]
  # A narrow range (under 20x) has few major ticks: label the minor ones
  # (2, 3, ... 9) too.
  axes.xaxis.set_minor_formatter(
    plain if max(macs) < 20 * min(macs) else figures.ticker.NullFormatter()
  )
  axes.set_xlabel('multiply-adds (millions)')
  axes.set_title(name, fontsize=9)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7, ncol=2)


def _plot_against_each_field(figures: _Figures, rows, done) -> None:
  """The metric against each numeric swept field, one line per other
  setting."""
  scale = figures.scale
  for key in _swept_keys(rows):
    values = [row['overrides'].get(key) for row in done]
    if not values or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
      continue
    figure, axes = figures.plt.subplots(figsize=(6, 4))
    series: dict[str, list] = {}
    for row in done:
      other = {k: v for k, v in row['overrides'].items() if k != key}
      series.setdefault(point_name(other) or 'base', []).append(row)
    for name, members in series.items():
      members.sort(key=lambda row: row['overrides'][key])
      axes.errorbar(
        [row['overrides'][key] for row in members],
        [row['mean'] * scale for row in members],
        yerr=[row['std'] * scale for row in members],
        marker='o',
        capsize=3,
        label=name,
      )
    figures.save(
      figure, axes, key, f'{figures.metric}_vs_{key.split(".")[-1]}.png'
    )


def grid_curves(points: Sequence[tuple]) -> dict[str, list[tuple]]:
  """Figure 5's lines through (width, resolution, multiply-adds, mean, std)
  points: one per width multiplier ('α = 0.5', ordered by resolution) and
  one per resolution ('224 px', ordered by width), each by increasing
  multiply-adds. A width or resolution with a single point has no line."""
  curves: dict[str, list[tuple]] = {}
  for width in sorted({p[0] for p in points}):
    curves[f'α = {width:g}'] = sorted(
      (p for p in points if p[0] == width), key=lambda p: p[2]
    )
  for size in sorted({p[1] for p in points}):
    curves[f'{size} px'] = sorted(
      (p for p in points if p[1] == size), key=lambda p: p[2]
    )
  return {label: curve for label, curve in curves.items() if len(curve) > 1}


def report(
  base,
  points: Sequence[dict],
  workdir: str,
  title: str,
  results_dir: Optional[str] = None,
) -> list[str]:
  """Writes results.md, results.csv and the plots (to `results_dir`,
  default the workdir); returns their paths."""
  runs = collect(base, points, workdir)
  rows = summarise(base, points, runs)
  results_dir = results_dir or workdir
  os.makedirs(results_dir, exist_ok=True)
  markdown = os.path.join(results_dir, 'results.md')
  with open(markdown, 'w') as f:
    f.write(
      format_markdown(
        title, rows, len(points), len(runs), sum(run['seconds'] for run in runs)
      )
    )
  table = os.path.join(results_dir, 'results.csv')
  write_csv(table, runs)
  return [markdown, table] + (
    plot(results_dir, base, rows, runs, title) if runs else []
  )


# ------------------------------------------- families side by side (Figure 5)


def read_family(
  results_dir: str, where: Optional[dict[str, str]] = None
) -> list[dict]:
  """A reported sweep's points, read back from its results.md (each row's
  cells and multiply-adds, to the 0.1M it prints) and results.csv (each
  run's final test and validation metric, by seed). `where` keeps the rows
  whose columns equal the given text, e.g. {'image_size': '48'}; rows not
  run yet are left out.

  Each point: {'cells': {column: text}, 'multiply_adds': millions,
  'test': {seed: value}, 'validation': {seed: value}, 'metric': name}."""
  markdown = os.path.join(results_dir, 'results.md')
  table = os.path.join(results_dir, 'results.csv')
  for path in (markdown, table):
    if not os.path.exists(path):
      raise FileNotFoundError(
        f'{path} does not exist: report the sweep first (python -m '
        'mnv2_jax.sweep --config ... --workdir ... --report --results_dir '
        f'{results_dir}).'
      )
  with open(markdown) as f:
    rows = [
      [cell.strip() for cell in line.strip().strip('|').split('|')]
      for line in f
      if line.startswith('|') and not line.startswith('|---')
    ]
  header, body = rows[0], rows[1:]
  # The swept fields come first, then '<split> <metric>[ (%)]' (its cells
  # 'mean ± std' or 'not run').
  first_metric = min(
    (i for row in body for i, cell in enumerate(row) if ' ± ' in cell),
    default=None,
  )
  if first_metric is None:
    raise ValueError(f'{markdown}: no finished point to read.')
  keys = header[:first_metric]
  metric = header[first_metric].split()[1]
  with open(table, newline='') as f:
    runs = list(csv.DictReader(f))
  points = []
  for row in body:
    cells = dict(zip(header, row))
    if any(cells.get(k) != v for k, v in (where or {}).items()):
      continue
    mine = [r for r in runs if all(r[k] == cells[k] for k in keys)]
    if not mine:  # 'not run' yet
      continue
    points.append(
      {
        'cells': cells,
        'multiply_adds': float(cells['multiply-adds'].rstrip('M')),
        'metric': metric,
        # A sweep without a seed axis ran its config's seed; 0 names it.
        'test': {int(r.get(SEED_KEY) or 0): float(r[metric]) for r in mine},
        'validation': {
          int(r.get(SEED_KEY) or 0): float(r[f'validation_{metric}'])
          for r in mine
          if r.get(f'validation_{metric}')
        },
      }
    )
  return points


def plot_families(
  path: str, families: dict[str, list[dict]], title: str = ''
) -> str:
  """Figure 5 with peers: the validation and the test metric against
  multiply-adds (log scale), one line per family through its points (mean ±
  standard deviation over seeds). `families`: label -> `read_family`
  points."""
  import matplotlib  # noqa: PLC0415 (only for the plots)

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  import matplotlib.ticker  # noqa: PLC0415

  metric = next(p['metric'] for ps in families.values() for p in ps)
  scale = 100.0 if metric in ('top1', 'top5') else 1.0
  unit = ' (%)' if scale == 100.0 else ''
  figure, panels = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
  for axes, split in zip(panels, ('validation', 'test')):
    for label, points in families.items():
      points = sorted(
        (p for p in points if p[split]), key=lambda p: p['multiply_adds']
      )
      values = [[v * scale for v in p[split].values()] for p in points]
      axes.errorbar(
        [p['multiply_adds'] for p in points],
        [stats_lib.fmean(v) for v in values],
        yerr=[stats_lib.stdev(v) if len(v) > 1 else 0.0 for v in values],
        marker='o',
        capsize=3,
        label=label,
      )
    axes.set_xscale('log')
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f'{value:g}')
    axes.xaxis.set_major_formatter(plain)
    # Minor labels at 2, 3 and 5 times each power of ten only: all eight
    # crowd each other.
    axes.xaxis.set_minor_formatter(
      matplotlib.ticker.FuncFormatter(
        lambda value, _: f'{value:g}' if f'{value:.0e}'[0] in '235' else ''
      )
    )
    axes.tick_params(axis='x', which='minor', labelsize=7)
    axes.set_xlabel('multiply-adds (millions)')
    axes.set_title(f'{title}: {split} {metric}' if title else split, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
  panels[0].set_ylabel(f'{metric}{unit}, mean ± std over seeds')
  figure.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return path


def experiment_title(argument: str) -> str:
  path, config_string = split_config_argument(argument)
  name = os.path.splitext(os.path.basename(path))[0]
  return name + (f' ({config_string})' if config_string else '')


def run_all(
  config_argument: str,
  workdir: str,
  points: Sequence[dict],
  metric: str,
  jobs: int = 1,
  say=print,
  memory_fraction: Optional[float] = None,
) -> list[str]:
  """Trains every unfinished point, `jobs` at a time (each its own
  process, sharing the machine: `point_environment`), reporting progress
  and an ETA through `say(line)`. Returns the names of the points that
  failed."""
  todo = [p for p in points if not is_finished(workdir, p)]
  env = point_environment(jobs, memory_fraction)
  say(
    f'{len(points)} points, {len(points) - len(todo)} finished, '
    f'{len(todo)} to run in {workdir}.'
  )
  failures = []
  done_seconds: list[float] = []
  lock = threading.Lock()

  def run(numbered):
    number, overrides = numbered
    name = point_name(overrides)
    say(f'[{number}/{len(todo)}] {name} ...')
    try:
      result = run_point(config_argument, workdir, overrides, env)
    except RuntimeError as e:
      say(f'  [{number}] FAILED: {e}')
      with lock:
        failures.append(name)
      return
    with lock:
      done_seconds.append(result['wall_seconds_last_attempt'])
      done = len(done_seconds) + len(failures)
      remaining = len(todo) - done
      # Points of one sweep take about as long as each other; `jobs` run
      # at once.
      eta = stats_lib.fmean(done_seconds) * remaining / jobs
    say(
      f'  [{number}] {metric} {result["final"][metric]:.4f} in '
      f'{result["wall_seconds_last_attempt"]:.0f} s; {done} of {len(todo)} '
      f'done, {remaining} to go, ETA {_duration(eta)}'
    )

  # Each point is a subprocess, so threads suffice to keep `jobs` running.
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    list(pool.map(run, enumerate(todo, 1)))
  return failures


def _duration(seconds: float) -> str:
  minutes = round(seconds / 60)
  return (
    f'{minutes // 60} h {minutes % 60:02d} min'
    if minutes >= 60
    else (f'{minutes} min' if minutes else f'{seconds:.0f} s')
  )
