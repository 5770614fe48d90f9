"""The statistics experiments/README.md quotes for Figure 6, §4 and Figure 5,
from the committed results of the sweeps.

  python experiments/analyse.py ablations
  python experiments/analyse.py expansion
  python experiments/analyse.py width_resolution
  python experiments/analyse.py all --output experiments/results/analysis.txt

The last writes every study's lines to the committed file that
experiments/README.md cites (tests/test_documented_figures.py checks that it
is what this script computes from the committed results).

ablations: Figure 6a (linear against ReLU6 bottleneck) and Figure 6b
(shortcut between bottlenecks, between expansions, none), test top-1 paired
by seed (mean difference, each seed's, paired t-test p), and a verdict.

expansion: §4 on the paper's own terms first: the paper says expansion
ratios 5 to 10 give "nearly identical performance curves", accuracy against
cost, so the runs of t = 5 to 10 are compared at matched multiply-adds: the
one pair of runs of equal cost (t = 10 at α = 0.35 and t = 5 at α = 0.5,
4.7M and 4.6M), paired by seed, and a fit top-1 = a + b ln(MACs) + c t over
every run with 5 <= t <= 10, where c is what the expansion ratio buys beyond
its cost (0 on one curve). Then, at fixed width, t = 10 against t = 5.

width_resolution: each step along a width line and along a resolution line,
paired by seed; then a least-squares fit top-1 = a + b ln(MACs) + c ln(α)
over every run (with and without the 32-pixel points) and over the 22
released ImageNet checkpoints: c is how much the width buys beyond its
multiply-adds (0 when accuracy depends on multiply-adds alone).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
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


def paired_test(
  before: dict[int, float], after: dict[int, float]
) -> tuple[list[float], float]:
  """Each shared seed's difference after - before, and the paired t-test's
  two-sided p."""
  seeds = sorted(set(before) & set(after))
  differences = [after[s] - before[s] for s in seeds]
  p = stats.ttest_rel([after[s] for s in seeds], [before[s] for s in seeds])
  return differences, float(p.pvalue)


def paired(before: dict[int, float], after: dict[int, float]) -> str:
  differences, p = paired_test(before, after)
  each = ', '.join(f'{d:+.2f}' for d in differences)
  return f'{np.mean(differences):+.2f} ({each}; paired p = {p:.3f})'


# A difference counts as shown when its paired test gives p < 0.05 and
# every seed agrees in sign; otherwise the runs are consistent with the
# claim (or against it) but do not decide it.
SIGNIFICANCE = 0.05


def verdict(before: dict[int, float], after: dict[int, float]) -> str:
  """'reproduced' when after > before is shown (SIGNIFICANCE, every seed),
  'reversed' when after < before is, else 'consistent, not decided' or
  'against, not decided' by the sign of the mean."""
  differences, p = paired_test(before, after)
  if p < SIGNIFICANCE and all(d > 0 for d in differences):
    return 'reproduced'
  if p < SIGNIFICANCE and all(d < 0 for d in differences):
    return 'reversed'
  if np.mean(differences) > 0:
    return 'consistent, not decided'
  return 'against, not decided'


def ablations() -> None:
  bottleneck = read_runs('ablation_bottleneck')
  linear, relu6 = (
    {
      int(r['seed']): 100 * float(r['top1'])
      for r in bottleneck
      if r['model.bottleneck_activation'] == activation
    }
    for activation in ('linear', 'relu6')
  )
  print(
    f'Figure 6a, linear minus ReLU6: {paired(relu6, linear)}: '
    f'{verdict(relu6, linear)}'
  )
  shortcut = read_runs('ablation_shortcut')
  by_residual = {
    where: {
      int(r['seed']): 100 * float(r['top1'])
      for r in shortcut
      if r['model.residual'] == where
    }
    for where in ('bottleneck', 'expansion', 'none')
  }
  for better, worse in (('bottleneck', 'expansion'), ('expansion', 'none')):
    before, after = by_residual[worse], by_residual[better]
    print(
      f'Figure 6b, {better} minus {worse}: {paired(before, after)}: '
      f'{verdict(before, after)}'
    )


def expansion() -> None:
  runs = read_runs('sweep_expansion')
  macs = multiply_adds_millions('sweep_expansion', 'model.expansion_ratio')

  def cell(width, t):
    return top1_by_seed(
      runs, **{'model.width_multiplier': width, 'model.expansion_ratio': t}
    )

  # The paper's terms: accuracy against cost. The one cost-matched pair.
  cheap, matched = cell(0.5, 5), cell(0.35, 10)
  # No verdict label: the paper's claim is "no difference", which a paired
  # test can fail to reject but not show.
  print(
    f'matched cost, t = 10 at α = 0.35 ({macs[(0.35, 10)]}M) minus t = 5 at '
    f'α = 0.5 ({macs[(0.5, 5)]}M): {paired(cheap, matched)}'
  )
  points = [
    (macs[(width, t)], t, top1)
    for width in (0.35, 0.5)
    for t in (5, 6, 8, 10)
    for top1 in cell(width, t).values()
  ]
  design = np.array([[1.0, np.log(m), t] for m, t, _ in points])
  target = np.array([top1 for _, _, top1 in points])
  coefficients, errors, residual = least_squares(design, target)
  p = 2 * stats.t.sf(
    abs(coefficients[2] / errors[2]), len(target) - design.shape[1]
  )
  print(
    f'one curve for t = 5-10: top-1 = {coefficients[0]:.2f} + '
    f'{coefficients[1]:.2f} ln MACs + {coefficients[2]:.3f} t; t term '
    f'{coefficients[2]:.3f} ± {errors[2]:.3f} points per unit of t beyond its '
    f'cost (p = {p:.3f}), residual {residual:.2f} points, {len(points)} runs'
  )
  print(
    f't = 5 -> 10 at equal cost, from the fit: {5 * coefficients[2]:+.2f} ± '
    f'{5 * errors[2]:.2f} points'
  )
  # At fixed width (not the paper's comparison: t = 10 costs 1.7x t = 5).
  for width in (0.35, 0.5):
    print(
      f'α = {width}: t = 10 minus t = 5: {paired(cell(width, 5), cell(width, 10))}'
    )


def multiply_adds_millions(
  sweep: str, second: str = 'image_size'
) -> dict[tuple[float, float], float]:
  """(α, the sweep's second column) -> multiply-adds (millions), from the
  sweep's results.md."""
  counts = {}
  with open(os.path.join(RESULTS, sweep, 'results.md')) as f:
    for line in f:
      match = re.match(r'\| ([\d.]+) \| (\d+) \| .* \| ([\d.]+)M \|$', line)
      if match:
        counts[(float(match[1]), int(match[2]))] = float(match[3])
  return counts


def least_squares(design: np.ndarray, target: np.ndarray):
  """Coefficients, their standard errors and the residual standard
  deviation of an ordinary least-squares fit."""
  coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
  dof = len(target) - design.shape[1]
  residual = ((target - design @ coefficients) ** 2).sum() / dof
  errors = np.sqrt(np.diag(residual * np.linalg.inv(design.T @ design)))
  return coefficients, errors, np.sqrt(residual)


def fit(points: list[tuple[float, float, float]]) -> str:
  """top-1 = a + b ln(MACs) + c ln(α) over (α, MACs, top-1) points."""
  design = np.array([[1.0, np.log(m), np.log(w)] for w, m, _ in points])
  target = np.array([t for _, _, t in points])
  coefficients, errors, residual = least_squares(design, target)
  return (
    f'top-1 = {coefficients[0]:.2f} + {coefficients[1]:.2f} ln MACs + '
    f'{coefficients[2]:.2f} ln α; width term {coefficients[2]:.3f} ± '
    f'{errors[2]:.3f}, residual {residual:.2f} points, '
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


STUDIES = {
  'ablations': ablations,
  'expansion': expansion,
  'width_resolution': width_resolution,
}


def report() -> str:
  """Every study's lines, each study under a '# <name>' header."""
  parts = []
  for name, study in STUDIES.items():
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
      study()
    parts.append(f'# {name}\n{buffer.getvalue()}')
  return '\n'.join(parts)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('study', choices=[*sorted(STUDIES), 'all'])
  parser.add_argument('--output', help='write the lines to this file too')
  args = parser.parse_args(argv)
  if args.study == 'all':
    text = report()
  else:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
      STUDIES[args.study]()
    text = buffer.getvalue()
  print(text, end='')
  if args.output:
    with open(args.output, 'w') as f:
      f.write(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
