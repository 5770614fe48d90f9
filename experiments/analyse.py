"""The statistics experiments/README.md quotes for Figure 6, §4 and Figure 5,
from the committed results of the sweeps.

  python experiments/analyse.py ablations
  python experiments/analyse.py expansion
  python experiments/analyse.py width_resolution
  python experiments/analyse.py peers --plot experiments/results/peers/figure5.png
  python experiments/analyse.py backbones
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

peers: Figure 5 and Table 4 against MobileNetV1, ShuffleNet and NASNet-A
on the proxy at 48 px. Each peer point against MobileNetV2 at its
multiply-adds: V2's test top-1 interpolated linearly in ln(MACs) between the
two V2 widths around it, seed by seed, then paired by seed (the seed sets
the initialisation and augmentation; the data order is shared). Points
outside V2's range are not compared. Interpolating a concave curve
linearly understates V2 between its points, so the comparison leans against
V2. Per family, each seed's differences averaged over its matched points
(which share V2's runs) give one paired test. Table 4's rows are compared
as the same configurations at 48 px. `--plot PATH` draws every family.

backbones: Tables 6 and 7's backbone comparison on the built-in scenes.
The SSDLite and DeepLab quickstarts' recipes, unchanged but for the backbone,
run with MobileNetV1 at the quickstart's width (seeds 0-2, natively) and
paired by seed with MobileNetV2's native runs of the quickstart spread; each
network's parameters and multiply-adds as `python -m mnv2_jax.stats` counts
them. The paper's claim is that V2 matches V1 at a fraction of the cost: a
paired test can show a difference, not its absence, so the 95% interval of
the difference says how large a gap the runs leave open.

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
import json
import os
import re
import sys

import numpy as np
from scipy import stats

from mnv2_jax import configuration
from mnv2_jax.experiments import plots as sweep_plots
from mnv2_jax.experiments import report as sweep_report
from mnv2_jax.models import building as model_building
from mnv2_jax.models import counting as model_statistics

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


# Figure 5's families on the proxy, all at 48 px: MobileNetV2's points from
# its two sweeps, each peer's from its own, with the column that sets its
# size and how to name a point.
MOBILENET_V2_48PX = (
  ('sweep_width_resolution', {'image_size': '48'}),
  ('sweep_mobilenet_v2_48px', {}),
)
PEERS = {
  'MobileNetV1': ('sweep_mobilenet_v1', 'model.width_multiplier', 'α = {}'),
  'ShuffleNet v1, g = 3': ('sweep_shufflenet', 'model.width_multiplier', '{}×'),
  # The shared recipe's one change that helps ShuffleNet train (its config).
  'ShuffleNet v1, g = 3, learning rate 0.01': (
    'sweep_shufflenet_low_lr',
    'model.width_multiplier',
    '{}×',
  ),
  # The change that makes it train: a 2-epoch warmup (its config).
  'ShuffleNet v1, g = 3, warmup 2 epochs': (
    'sweep_shufflenet_warmup',
    'model.width_multiplier',
    '{}×',
  ),
  'NASNet-A, 4 cells per stack': (
    'sweep_nasnet',
    'model.nasnet_filters',
    '{} filters',
  ),
}
# Table 4's comparisons as pairs of the same configurations at 48 px:
# (MobileNetV2 width, peer, peer's size cell, the paper's two top-1 and
# multiply-adds at 224).
TABLE_4_PAIRS = (
  ('1', 'ShuffleNet v1, g = 3', '1.5', (72.0, 300), (71.5, 292)),
  (
    '1',
    'ShuffleNet v1, g = 3, learning rate 0.01',
    '1.5',
    (72.0, 300),
    (71.5, 292),
  ),
  (
    '1',
    'ShuffleNet v1, g = 3, warmup 2 epochs',
    '1.5',
    (72.0, 300),
    (71.5, 292),
  ),
  ('1', 'MobileNetV1', '1', (72.0, 300), (70.6, 575)),
  ('1.4', 'MobileNetV1', '1', (74.7, 585), (70.6, 575)),
  ('1.4', 'ShuffleNet v1, g = 3', '2', (74.7, 585), (73.7, 524)),
  # 44 filters: NASNet-A Mobile, 4 @ 1056.
  ('1.4', 'NASNet-A, 4 cells per stack', '44', (74.7, 585), (74.0, 564)),
)


def family_points(sources) -> list[dict]:
  """`sweep_report.read_family` points of (results folder, row filter) sources
  that have been reported, test and validation top-1 in %, by cost."""
  points = []
  for folder, where in sources:
    if os.path.exists(os.path.join(RESULTS, folder, 'results.md')):
      points += sweep_report.read_family(os.path.join(RESULTS, folder), where)
  for point in points:
    for split in ('test', 'validation'):
      point[split] = {s: 100 * v for s, v in point[split].items()}
  return sorted(points, key=lambda p: p['multiply_adds'])


def interpolated(curve: list[dict], macs: float):
  """MobileNetV2's test top-1 by seed at `macs` (millions), linear in ln
  MACs between the two points of `curve` around it (the point itself at
  equal cost), and the widths used; None outside the curve's range."""
  for low, high in zip(curve, curve[1:]):
    if low['multiply_adds'] <= macs <= high['multiply_adds']:
      weight = np.log(macs / low['multiply_adds']) / np.log(
        high['multiply_adds'] / low['multiply_adds']
      )
      seeds = sorted(set(low['test']) & set(high['test']))
      by_seed = {
        s: (1 - weight) * low['test'][s] + weight * high['test'][s]
        for s in seeds
      }
      return by_seed, (low, high)
  return None


def _mean_std(by_seed: dict[int, float]) -> str:
  values = list(by_seed.values())
  spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
  return f'{np.mean(values):.2f} ± {spread:.2f}'


def _within_one_std(a: dict[int, float], b: dict[int, float]) -> bool:
  """The issue's rule for 5 seeds: the two means closer than either's
  standard deviation over seeds."""
  spread = max(
    np.std(list(a.values()), ddof=1), np.std(list(b.values()), ddof=1)
  )
  return abs(np.mean(list(a.values())) - np.mean(list(b.values()))) < spread


def _width(point: dict) -> str:
  return point['cells']['model.width_multiplier']


def peers() -> None:
  curve = family_points(MOBILENET_V2_48PX)
  low, high = curve[0]['multiply_adds'], curve[-1]['multiply_adds']
  print(
    'MobileNetV2 at 48 px: '
    + ', '.join(
      f'α = {_width(p)} {p["multiply_adds"]}M {_mean_std(p["test"])}'
      for p in curve
    )
  )
  for family, (folder, column, name) in PEERS.items():
    points = family_points(((folder, {}),))
    if not points:
      print(f'{family}: not run')
      continue
    matched, verdicts = [], []
    for point in points:
      label = (
        f'{family} {name.format(point["cells"][column])} '
        f'({point["multiply_adds"]}M): {_mean_std(point["test"])}'
      )
      found = interpolated(curve, point['multiply_adds'])
      if found is None:
        print(
          f"{label}; outside MobileNetV2's {low}M-{high}M at 48 px: not "
          'compared at equal cost'
        )
        continue
      mobilenet_v2, (below, above) = found
      matched.append((mobilenet_v2, point['test']))
      verdicts.append(verdict(point['test'], mobilenet_v2))
      needs_seeds = (
        '; within one standard deviation: 5 seeds needed'
        if len(point['test']) < 5
        and _within_one_std(mobilenet_v2, point['test'])
        else ''
      )
      print(
        f'{label}; MobileNetV2 there (α = {_width(below)}-{_width(above)}, '
        f'interpolated in ln MACs) {_mean_std(mobilenet_v2)}; V2 minus '
        f'peer {paired(point["test"], mobilenet_v2)}: '
        f'{verdicts[-1]}{needs_seeds}'
      )
    if not matched:
      continue
    # One number per seed: its differences averaged over the family's
    # matched points (they share MobileNetV2's runs, so they are not
    # independent samples), tested and judged as each point is.
    seeds = sorted(set.intersection(*(set(v2) for v2, _ in matched)))
    peer_mean = {s: np.mean([peer[s] for _, peer in matched]) for s in seeds}
    v2_mean = {s: np.mean([v2[s] for v2, _ in matched]) for s in seeds}
    print(
      f'{family}, averaged over its {len(matched)} points at matched cost, '
      f'V2 minus peer: {paired(peer_mean, v2_mean)}: '
      f'{verdict(peer_mean, v2_mean)} (by point: {"; ".join(verdicts)})'
    )
  by_width = {_width(p): p for p in curve}
  for width, family, size, (paper_v2, paper_v2_macs), (
    paper_peer,
    paper_peer_macs,
  ) in TABLE_4_PAIRS:
    folder, column, name = PEERS[family]
    peer = {p['cells'][column]: p for p in family_points(((folder, {}),))}.get(
      size
    )
    mobilenet_v2 = by_width.get(width)
    title = (
      f'Table 4, MobileNetV2 α = {width} against {family} '
      f'{name.format(size)} (paper {paper_v2} against {paper_peer} at '
      f'{paper_v2_macs}M against {paper_peer_macs}M)'
    )
    if peer is None or mobilenet_v2 is None:
      print(f'{title}: not run at 48 px')
      continue
    print(
      f'{title}: at 48 px {mobilenet_v2["multiply_adds"]}M against '
      f'{peer["multiply_adds"]}M, {_mean_std(mobilenet_v2["test"])} '
      f'against {_mean_std(peer["test"])}; V2 minus peer '
      f'{paired(peer["test"], mobilenet_v2["test"])}: '
      f'{verdict(peer["test"], mobilenet_v2["test"])}'
    )


def plot_peers(path: str) -> str:
  """Figure 5 with its peers on the proxy (`sweep_plots.plot_families`)."""
  families = {'MobileNetV2': family_points(MOBILENET_V2_48PX)}
  for family, (folder, _, _) in PEERS.items():
    points = family_points(((folder, {}),))
    if points:
      families[family] = points
  for points in families.values():  # plot_families scales top-1 itself
    for point in points:
      for split in ('test', 'validation'):
        point[split] = {s: v / 100 for s, v in point[split].items()}
  return sweep_plots.plot_families(path, families, 'cluttered digits, 48 px')


# Tables 6 and 7's backbone comparison on the built-in scenes: each
# quickstart's recipe with MobileNetV1 as the backbone (run by
# experiments/quickstart_spread.py with --config.model.architecture=
# mobilenet_v1 into BACKBONE_RESULTS) against MobileNetV2's runs of the
# quickstart spread at the same seeds, natively: (config, test metric, the
# paper's row for V1 and for V2: metric, parameters, multiply-adds).
BACKBONE_RESULTS = 'backbones/mobilenet_v1'
BACKBONE_QUICKSTARTS = {
  'ssdlite': (
    'configs/ssdlite_quickstart.py',
    'AP50',
    'Table 6, SSDLite at 320 px on COCO: mAP',
    ('22.2', '5.1M', '1.3B'),
    ('22.1', '4.3M', '0.8B'),
  ),
  'deeplab': (
    'configs/deeplab_quickstart.py',
    'mIoU',
    'Table 7, DeepLabv3 with ASPP at OS 16 on VOC: mIoU',
    ('75.29', '11.15M', '14.25B'),
    ('75.70', '4.52M', '5.8B'),
  ),
}


def quickstart_by_seed(folder: str, name: str, metric: str):
  """Test `metric` (x 100) of the native runs of quickstart `name` in
  experiments/results/`folder`, by seed."""
  by_seed = {}
  directory = os.path.join(RESULTS, folder)
  if not os.path.isdir(directory):
    return by_seed
  for file in sorted(os.listdir(directory)):
    match = re.fullmatch(rf'{name}_native_seed(\d+)\.json', file)
    if match:
      with open(os.path.join(directory, file)) as f:
        record = json.load(f)
      by_seed[int(match[1])] = 100 * record['final']['test'][metric]
  return by_seed


def confidence_interval(before, after, level: float = 0.95) -> str:
  """The paired mean difference's `level` t interval (after - before)."""
  differences, _ = paired_test(before, after)
  half = stats.t.ppf((1 + level) / 2, len(differences) - 1) * stats.sem(
    differences
  )
  mean = np.mean(differences)
  return f'{100 * level:.0f}% interval {mean - half:+.2f} to {mean + half:+.2f}'


def _cost(config_file: str, architecture: str) -> dict:
  """`python -m mnv2_jax.stats`'s counts of the config's network with
  `architecture` as its backbone, one image at the config's size."""
  config = configuration.load_file(os.path.join(REPO_ROOT, config_file))
  config.model.architecture = architecture
  configuration.validate(config)
  return model_statistics.model_statistics(
    model_building.build_model(config), config.image_size
  )


def backbones() -> None:
  for name, (
    config_file,
    metric,
    paper,
    v1_row,
    v2_row,
  ) in BACKBONE_QUICKSTARTS.items():
    v2 = quickstart_by_seed('quickstarts/spread', name, metric)
    v1 = quickstart_by_seed(BACKBONE_RESULTS, name, metric)
    if not v1:
      print(f'{name}: MobileNetV1 not run')
      continue
    costs = {a: _cost(config_file, a) for a in ('mobilenet_v1', 'mobilenet_v2')}
    described = []
    for architecture, by_seed in (('mobilenet_v1', v1), ('mobilenet_v2', v2)):
      cost = costs[architecture]
      described.append(
        f'{cost["model"]} {cost["trainable_parameters"] / 1e6:.2f}M '
        f'parameters, {cost["multiply_adds"] / 1e6:.1f}M multiply-adds at '
        f'{cost["image_size"]} px: {metric} {_mean_std(by_seed)}'
      )
    ratio = (
      costs['mobilenet_v2']['multiply_adds']
      / (costs['mobilenet_v1']['multiply_adds'])
    )
    print(
      f'{name} ({config_file}), test {metric} x 100: ' + '; '.join(described)
    )
    print(
      f'{name}: V2 minus V1 {paired(v1, v2)}, {confidence_interval(v1, v2)}: '
      f'{verdict(v1, v2)}; V2 costs {ratio:.2f} of V1 (paper: {paper} '
      f'{v1_row[0]} for V1 at {v1_row[1]} / {v1_row[2]}, {v2_row[0]} for V2 '
      f'at {v2_row[1]} / {v2_row[2]})'
    )


STUDIES = {
  'ablations': ablations,
  'expansion': expansion,
  'width_resolution': width_resolution,
  'peers': peers,
  'backbones': backbones,
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
  parser.add_argument(
    '--plot',
    help="peers: draw Figure 5 with its peers (every family's validation "
    'and test top-1 against multiply-adds) to this PNG',
  )
  args = parser.parse_args(argv)
  if args.study == 'all':
    text = report()
  else:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
      STUDIES[args.study]()
    text = buffer.getvalue()
  print(text, end='')
  if args.plot and args.study not in ('peers', 'all'):
    parser.error('--plot draws the peers study: give it with peers or all.')
  if args.plot:
    print(f'wrote {plot_peers(args.plot)}')
  if args.output:
    with open(args.output, 'w') as f:
      f.write(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
