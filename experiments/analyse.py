"""The statistics experiments/README.md quotes for §4 and Figure 5, from the
committed results of the two sweeps.

  python experiments/analyse.py expansion
  python experiments/analyse.py width_resolution

expansion: per width, test top-1 at t = 10 against t = 5, paired by seed
(mean difference, each seed's, paired t-test p).

width_resolution: each step along a width line and along a resolution line,
paired by seed; then a least-squares fit top-1 = a + b ln(MACs) + c ln(α)
over every run (with and without the 32-pixel points) and over the 22
released ImageNet checkpoints: c is how much the width buys beyond its
multiply-adds (0 when accuracy depends on multiply-adds alone).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys

import numpy as np
from scipy import stats

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from mnv2_jax.models import statistics as model_statistics  # noqa: E402

RESULTS = os.path.join(REPO_ROOT, 'experiments', 'results')


def read_runs(sweep: str) -> list[dict]:
  with open(os.path.join(RESULTS, sweep, 'results.csv')) as f:
    return list(csv.DictReader(f))


def top1_by_seed(runs, **fields) -> dict[int, float]:
  """Test top-1 (%) of the runs whose columns equal `fields`, by seed."""
  return {
    int(run['seed']): 100 * float(run['top1'])
    for run in runs
    if all(float(run[key]) == value for key, value in fields.items())
  }


def paired(before: dict[int, float], after: dict[int, float]) -> str:
  seeds = sorted(set(before) & set(after))
  differences = [after[s] - before[s] for s in seeds]
  p = stats.ttest_rel([after[s] for s in seeds], [before[s] for s in seeds])
  each = ', '.join(f'{d:+.2f}' for d in differences)
  return f'{np.mean(differences):+.2f} ({each}; paired p = {p.pvalue:.3f})'


def expansion() -> None:
  runs = read_runs('sweep_expansion')
  for width in (0.35, 0.5):
    five, ten = (
      top1_by_seed(
        runs, **{'model.width_multiplier': width, 'model.expansion_ratio': t}
      )
      for t in (5, 10)
    )
    print(f'α = {width}: t = 10 minus t = 5: {paired(five, ten)}')


def multiply_adds_millions(sweep: str) -> dict[tuple[float, int], float]:
  """(α, resolution) -> multiply-adds (millions), from the sweep's results.md."""
  counts = {}
  with open(os.path.join(RESULTS, sweep, 'results.md')) as f:
    for line in f:
      match = re.match(r'\| ([\d.]+) \| (\d+) \| .* \| ([\d.]+)M \|$', line)
      if match:
        counts[(float(match[1]), int(match[2]))] = float(match[3])
  return counts


def fit(points: list[tuple[float, float, float]]) -> str:
  """top-1 = a + b ln(MACs) + c ln(α) over (α, MACs, top-1) points."""
  design = np.array([[1.0, np.log(m), np.log(w)] for w, m, _ in points])
  target = np.array([t for _, _, t in points])
  coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
  dof = len(target) - 3
  residual = ((target - design @ coefficients) ** 2).sum() / dof
  errors = np.sqrt(np.diag(residual * np.linalg.inv(design.T @ design)))
  return (
    f'top-1 = {coefficients[0]:.2f} + {coefficients[1]:.2f} ln MACs + '
    f'{coefficients[2]:.2f} ln α; width term {coefficients[2]:.3f} ± '
    f'{errors[2]:.3f}, residual {np.sqrt(residual):.2f} points, '
    f'{len(points)} points'
  )


def width_resolution() -> None:
  sweep = 'sweep_width_resolution'
  runs = read_runs(sweep)
  widths = sorted({float(r['model.width_multiplier']) for r in runs})
  sizes = sorted({int(r['image_size']) for r in runs})

  def cell(width, size):
    return top1_by_seed(
      runs, **{'model.width_multiplier': width, 'image_size': size}
    )

  for size in sizes:
    for narrow, wide in zip(widths, widths[1:]):
      change = paired(cell(narrow, size), cell(wide, size))
      print(f'{size} px, α {narrow} -> {wide}: {change}')
  for width in widths:
    for small, large in zip(sizes, sizes[1:]):
      change = paired(cell(width, small), cell(width, large))
      print(f'α = {width}, {small} -> {large} px: {change}')
  macs = multiply_adds_millions(sweep)
  points = [
    (w, macs[(w, s)], top1)
    for w in widths
    for s in sizes
    for top1 in cell(w, s).values()
  ]
  print('ours, every run:', fit(points))
  without_32 = [
    (w, macs[(w, s)], top1)
    for w in widths
    for s in sizes
    if s != 32
    for top1 in cell(w, s).values()
  ]
  print('ours, without 32 px:', fit(without_32))
  released = [
    (width, macs, top1)
    for (width, _), (top1, _, macs) in model_statistics.PUBLISHED_GRID.items()
  ]
  print('released checkpoints:', fit(released))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('study', choices=('expansion', 'width_resolution'))
  args = parser.parse_args(argv)
  {'expansion': expansion, 'width_resolution': width_resolution}[args.study]()
  return 0


if __name__ == '__main__':
  sys.exit(main())
