"""A sweep's report: `results.md` (one row per point without its seed: mean ±
std over seeds of the final metrics, parameters, multiply-adds),
`results.csv` (one row per run) and the plots (plots.py); and a reported
sweep read back, to draw beside another (Figure 5's families).
"""

from __future__ import annotations

import csv
import math
import os
import statistics as stats_lib
from typing import Any
from typing import Optional
from typing import Sequence

from mnv2_jax import tasks
from mnv2_jax.experiments import plots
from mnv2_jax.experiments import points as sweep_points
from mnv2_jax.experiments import runner
from mnv2_jax.models import counting
from mnv2_jax.models.building import build_model
from mnv2_jax.training import metric_writers


def _model_counts(base, overrides: dict[str, Any]) -> dict[str, int]:
  config = sweep_points.apply_overrides(base, overrides)
  counts = counting.model_statistics(build_model(config), config.image_size)
  return {
    'parameters': counts['trainable_parameters'],
    'multiply_adds': counts['multiply_adds'],
  }


def collect(base, points: Sequence[dict], workdir: str) -> list[dict]:
  """One row per finished run: its overrides, final metrics and curve."""
  runs = []
  for overrides in points:
    point_dir = os.path.join(workdir, sweep_points.point_name(overrides))
    result = runner.read_point_result(point_dir)
    if result is None:
      continue
    records = metric_writers.read_jsonl(point_dir)
    final = result['final']
    by_split = result.get('final_by_split', {final['split']: final})
    during = runner.curve_split(records)
    training = [r for r in records if r.get('split') == 'train']
    runs.append(
      {
        'overrides': overrides,
        'group': sweep_points.group_name(overrides),
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
    name = sweep_points.group_name(overrides)
    if name not in groups:
      rest = {k: v for k, v in overrides.items() if k != sweep_points.SEED_KEY}
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
    group['seeds'].append(
      run['overrides'].get(sweep_points.SEED_KEY, base.seed)
    )
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
  keys = sweep_points.swept_keys(rows)
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
    cells = [
      sweep_points.format_value(row['overrides'].get(k, '')) for k in keys
    ]
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
  keys, finals = sweep_points.swept_keys(runs), []

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
        + [sweep_points.format_value(run['overrides'].get(k, '')) for k in keys]
        + [run['final']['split']]
        + [values.get(k, '') for k in finals]
      )


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
    plots.plot(results_dir, base, rows, runs, title) if runs else []
  )


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
        'test': {
          int(r.get(sweep_points.SEED_KEY) or 0): float(r[metric]) for r in mine
        },
        'validation': {
          int(r.get(sweep_points.SEED_KEY) or 0): float(
            r[f'validation_{metric}']
          )
          for r in mine
          if r.get(f'validation_{metric}')
        },
      }
    )
  return points
