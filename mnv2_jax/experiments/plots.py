"""A sweep's PNG plots: the eval split's curves (Figure 6), the final metric
against multiply-adds (Figure 5), the width x resolution grid, each swept
field; and several sweeps' families side by side.
"""

from __future__ import annotations

import os
import statistics as stats_lib
from typing import Sequence

from mnv2_jax.experiments import points as sweep_points
from mnv2_jax.models import counting


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
  if set(sweep_points.swept_keys(done)) == {
    sweep_points.WIDTH_KEY,
    sweep_points.RESOLUTION_KEY,
  }:
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
      (macs, top1) for (top1, _, macs) in counting.PUBLISHED_GRID.values()
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
      row['overrides'][sweep_points.WIDTH_KEY],
      row['overrides'][sweep_points.RESOLUTION_KEY],
      row['multiply_adds'] / 1e6,
      row['mean'] * scale,
      row['std'] * scale,
    )
    for row in done
  ]
  published = [
    (width, size, macs, top1, 0.0)
    for (width, size), (top1, _, macs) in counting.PUBLISHED_GRID.items()
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
  for key in sweep_points.swept_keys(rows):
    values = [row['overrides'].get(key) for row in done]
    if not values or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
      continue
    figure, axes = figures.plt.subplots(figsize=(6, 4))
    series: dict[str, list] = {}
    for row in done:
      other = {k: v for k, v in row['overrides'].items() if k != key}
      series.setdefault(sweep_points.point_name(other) or 'base', []).append(
        row
      )
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
