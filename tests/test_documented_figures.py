"""The figures the README and the docs state are the ones in the committed
result files (experiments/results/, benchmarks/results/) and the exact
counts the other tests pin: a re-run that moves a number, or an edit of the
text alone, fails here until both agree.

Each result file was written by the command it records (its "command" field),
with the machine, the date and the package versions beside the figures.
"""

import csv
import json
import os
import pathlib
import re
import statistics

import helpers
import pytest
import test_paper_tables
import test_ssd
import test_stats

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO_ROOT, 'experiments', 'results')


def _text(*path: str) -> str:
  with open(os.path.join(REPO_ROOT, *path)) as f:
    return f.read()


def _json(*path: str) -> dict:
  with open(os.path.join(RESULTS, *path)) as f:
    return json.load(f)


def _csv(*path: str) -> list[dict]:
  with open(os.path.join(RESULTS, *path)) as f:
    return list(csv.DictReader(f))


def _find(pattern: str, text: str, where: str) -> tuple[str, ...]:
  match = re.search(pattern, text, re.S)
  assert match, f'{where}: no match for {pattern!r}'
  return match.groups()


def _percent(value: float, digits: int = 2) -> str:
  return f'{100 * value:.{digits}f}'


def _scientific(value: float) -> str:
  """1.2e-06 as the docs write it: 1.2e-6 (and 0 as 0)."""
  if value == 0:
    return '0'
  mantissa, exponent = f'{value:.1e}'.split('e')
  return f'{mantissa}e{int(exponent)}'


def _billions(count: int) -> str:
  """Multiply-adds as the docs write them: 2.741B, 152.3B."""
  return f'{count / 1e9:.3f}B' if count < 1e10 else f'{count / 1e9:.1f}B'


def _minutes_seconds(seconds: float) -> str:
  return f'{int(seconds) // 60} min {round(seconds) % 60} s'


# ------------------------------------------------------------ quickstarts


def test_digits_quickstart_in_the_readme():
  result = _json('quickstarts', 'digits.json')
  test = result['final']['test']
  assert result['command'] == (
    'python -m mnv2_jax.main --config configs/quickstart.py --workdir '
    '/tmp/qs_digits --result_file experiments/results/quickstarts/digits.json'
  )
  readme = ' '.join(_text('README.md').split())
  spread = _spread('digits')
  assert (
    f'**{_percent(spread["test"]["min"])}–{_percent(spread["test"]["max"])}% '
    f'test top-1** (validation {_percent(spread["validation"]["min"])}–'
    f'{_percent(spread["validation"]["max"])}%'
  ) in readme
  percent, correct, total, seconds = _find(
    r'seed 0: (\d+\.\d+)%, (\d+)/(\d+), in (\d+) s', readme, 'README'
  )
  assert percent == _percent(test['top1'])
  assert int(total) == test['num_examples'] == 360
  assert int(correct) == round(test['top1'] * test['num_examples'])
  assert int(seconds) == round(result['wall_seconds'])
  (about,) = _find(r'takes about (\d+(?:\.\d+)?)\s+minutes', readme, 'README')
  assert abs(float(about) * 60 - result['wall_seconds']) < 30
  install = _json_file('benchmarks', 'results', 'fresh_install.json')
  assert f'after a {round(install["install_seconds"])}-second install' in readme
  assert f'the quickstart in {round(install["quickstart_seconds"])} s' in readme
  assert install['quickstart_final']['test']['top1'] == test['top1']


def _json_file(*path: str) -> dict:
  with open(os.path.join(REPO_ROOT, *path)) as f:
    return json.load(f)


def _spread_headline(name: str) -> str:
  """'test <metric> <lowest>–<highest> over <n> runs (validation ...)' of a
  quickstart's spread, as docs/detection.md and segmentation.md write it."""
  spread = _spread(name)
  metric, test, validation = (
    spread['metric'],
    spread['test'],
    spread['validation'],
  )
  return (
    f'test {metric} {test["min"]:.3f}–{test["max"]:.3f} over '
    f'{len(spread["runs"])} runs (validation {validation["min"]:.3f}–'
    f'{validation["max"]:.3f})'
  )


def test_ssdlite_quickstart_in_docs_detection():
  result = _json('quickstarts', 'ssdlite.json')
  test, validation = result['final']['test'], result['final']['validation']
  assert result['config']['num_epochs'] == 20
  text = ' '.join(_text('docs', 'detection.md').split())
  assert _spread_headline('ssdlite') in text
  figures = _find(
    r'\*\*AP (0\.\d+), AP50 (0\.\d+), AP75 (0\.\d+)\*\*,\s+AR100 (0\.\d+)',
    text,
    'docs/detection.md',
  )
  assert figures == tuple(
    f'{test[k]:.3f}' for k in ('AP', 'AP50', 'AP75', 'AR100')
  )
  assert (
    f'validation AP50 {validation["AP50"]:.3f} (AP {validation["AP"]:.3f}); '
    f'{_minutes_seconds(result["wall_seconds"])}'
  ) in text
  before = _json(
    'quickstarts', 'spread', 'ssdlite_20_epochs', 'ssdlite_avx2_seed0.json'
  )
  assert (
    f'gave test AP50 {before["final"]["test"]["AP50"]:.3f} (validation '
    f'{before["final"]["validation"]["AP50"]:.3f})'
  ) in text


def test_deeplab_quickstart_in_docs_segmentation():
  result = _json('quickstarts', 'deeplab.json')
  test, validation = result['final']['test'], result['final']['validation']
  text = ' '.join(_text('docs', 'segmentation.md').split())
  assert _spread_headline('deeplab') in text
  assert (
    f'**mIoU {test["mIoU"]:.3f}** (background {test["IoU/background"]:.3f}'
  ) in text
  assert f'pixel accuracy {test["pixel_accuracy"]:.3f}' in text
  assert (
    f'validation scenes: mIoU {validation["mIoU"]:.3f}; '
    f'{_minutes_seconds(result["wall_seconds"])}'
  ) in text
  # The spread's native seed 0 is this run, bitwise.
  again = _json('quickstarts', 'spread', 'deeplab_native_seed0.json')
  assert again['final']['test']['mIoU'] == test['mIoU']
  assert again['final']['validation']['mIoU'] == validation['mIoU']


def _spread(name: str) -> dict:
  return _json('quickstarts', 'spread', 'spread.json')[name]


def test_quickstart_spread_in_docs_development():
  """The digits spread docs/development.md gives is spread.json's, spread.json
  is what experiments/quickstart_spread.py computes from the run files, and
  the runs it says repeat earlier ones bitwise do."""
  quickstart_spread = helpers.experiment_script('quickstart_spread')

  folder = os.path.join(RESULTS, 'quickstarts', 'spread')
  for name in ('digits',):
    recomputed = quickstart_spread.summarise(name, pathlib.Path(folder))
    assert recomputed == _spread(name)
  digits = _spread('digits')
  assert len(digits['runs']) == 6
  assert {(r['isa'], r['seed']) for r in digits['runs']} == {
    (isa, seed) for isa in ('native', 'avx2') for seed in range(3)
  }
  text = ' '.join(_text('docs', 'development.md').split())
  test, validation = digits['test'], digits['validation']
  assert (
    f'test top-1 {_percent(test["min"])}–{_percent(test["max"])}% over the 6 '
    f'runs (mean {_percent(test["mean"])}%), validation '
    f'{_percent(validation["min"])}–{_percent(validation["max"])}%; the '
    f'target, {100 * digits["target"]:.0f}%, holds at the bottom'
  ) in text
  assert digits['target_holds_at_the_bottom']
  earlier = {
    'digits_native_seed0.json': _json('quickstarts', 'digits.json'),
    'digits_native_seed1.json': _json(
      'quickstarts', 'reproducibility', 'seed_1.json'
    ),
    'digits_native_seed2.json': _json(
      'quickstarts', 'reproducibility', 'seed_2.json'
    ),
  }
  for name, before in earlier.items():
    now = _json('quickstarts', 'spread', name)
    for split in ('validation', 'test'):
      drop = ('step', 'split')
      assert {
        k: v for k, v in now['final'][split].items() if k not in drop
      } == {k: v for k, v in before['final'][split].items() if k not in drop}, (
        name,
        split,
      )
  avx2_alone = _json('quickstarts', 'reproducibility', 'xla_avx2.json')
  assert (
    avx2_alone['final']['test']
    == earlier['digits_native_seed0.json']['final']['test']
  )


# ---------------------------------------------------------------- sizes


def test_sizes_in_the_readme_are_the_pinned_counts():
  readme = _text('README.md')
  grid = {(width, size): row for width, size, *row in test_stats.EXACT_GRID}
  parameters, multiply_adds = grid[(1.0, 224)][:2]
  assert (
    f'1.0-224: {parameters / 1e6:.2f}M, {multiply_adds / 1e6:.1f}M MACs'
    in readme
  )
  assert f'all {len(test_stats.EXACT_GRID)} match' in readme
  assert f'{test_ssd.SSDLITE_PARAMETERS:,} and ' in readme
  assert f'{test_ssd.SSDLITE_MULTIPLY_ADDS / 1e9:.3f}B' in readme
  table_7 = {
    (stride, aspp): counts
    for (backbone, stride, aspp), counts in test_paper_tables.TABLE_7.items()
    if backbone == 'mobilenet_v2'
  }
  assert (
    f'{table_7[(16, False)][0]:,} / {table_7[(16, True)][0]:,}; '
    f'{table_7[(16, False)][1] / 1e9:.3f}B / '
    f'{table_7[(16, True)][2] / 1e9:.3f}B / '
    f'{table_7[(8, False)][3] / 1e9:.1f}B / '
    f'{table_7[(8, True)][4] / 1e9:.1f}B'
  ) in readme


def test_table_7_in_docs_segmentation_is_the_pinned_counts():
  text = _text('docs', 'segmentation.md')
  for (backbone, stride, aspp), counts in test_paper_tables.TABLE_7.items():
    if backbone != 'mobilenet_v2':
      continue
    name = f'deeplab_mnv2_voc_os{stride}{"_aspp" if aspp else ""}.py'
    row = _find(
      rf'\| `{name}` \|([^\n]*)\|\n', text, f'docs/segmentation.md {name}'
    )[0]
    parameters, single, space_to_batch, multi, multi_space_to_batch = counts
    row = row.replace('**', '').replace('¹', '')
    assert f'{parameters:,}' in row, name
    if aspp:  # both counts: plain / SpaceToBatchND accounting
      assert f'{_billions(single)} / {_billions(space_to_batch)}' in row
      assert f'{_billions(multi)} / {_billions(multi_space_to_batch)}' in row
    else:
      assert f'{_billions(single)}' in row, name
      assert f'{_billions(multi)}' in row, name


def test_ssdlite_sizes_in_docs_detection_are_the_pinned_counts():
  text = _text('docs', 'detection.md')
  assert f'**{test_ssd.SSDLITE_PARAMETERS:,}\nparameters**' in text
  assert f'**{test_ssd.SSDLITE_MULTIPLY_ADDS / 1e9:.3f}B' in text
  assert f'{test_ssd.SSDLITE_HEADS_PARAMETERS:,}' in text


# ------------------------------------------------------------ experiments


def _seed_means(rows: list[dict], group: str, key: str = 'top1'):
  values = [100 * float(r[key]) for r in rows if r['group'] == group]
  return statistics.fmean(values), statistics.stdev(values), values


def test_figure_6_ablations_in_the_readme_and_experiments():
  bottleneck = _csv('ablation_bottleneck', 'results.csv')
  shortcut = _csv('ablation_shortcut', 'results.csv')
  linear, linear_std, linear_seeds = _seed_means(
    bottleneck, 'bottleneck_activation=linear'
  )
  relu6, relu6_std, _ = _seed_means(bottleneck, 'bottleneck_activation=relu6')
  readme = _text('README.md')
  assert (
    f'{linear:.1f} ± {linear_std:.1f}% vs {relu6:.1f} ± {relu6_std:.1f}%'
    in readme
  )
  means = [
    _seed_means(shortcut, f'residual={where}')[0]
    for where in ('bottleneck', 'expansion', 'none')
  ]
  assert ' / '.join(f'{m:.1f}' for m in means) + '%' in readme
  experiments = _text('experiments', 'README.md')
  assert (
    f"| linear (the paper's) | {linear_seeds[0]:.2f}% | "
    f'{linear_seeds[1]:.2f}% | {linear_seeds[2]:.2f}% | '
    f'**{linear:.2f} ± {linear_std:.2f}%** |'
  ) in experiments


def _seed_row(rows: list[dict], group: str) -> str:
  """A sweep table's cells: each seed's test top-1, then the test and
  validation mean ± std, as experiments/README.md writes them."""
  test, test_std, seeds = _seed_means(rows, group)
  validation, validation_std, _ = _seed_means(rows, group, 'validation_top1')
  return (
    ' | '.join(f'{value:.2f}%' for value in seeds)
    + f' | {test:.2f} ± {test_std:.2f}% | '
    f'{validation:.2f} ± {validation_std:.2f}% |'
  )


def test_expansion_sweep_tables_in_experiments():
  rows = _csv('sweep_expansion', 'results.csv')
  text = _text('experiments', 'README.md')
  for width in ('0.35', '0.5'):
    table = _find(rf'\nα = {width}\n(.*?)\n\n', text, f'§4 table α = {width}')[
      0
    ]
    for t in (2, 3, 4, 5, 6, 8, 10):
      group = f'width_multiplier={width}_expansion_ratio={t}'
      cells = f'| {t} | ' + _seed_row(rows, group)
      assert cells in table, cells


def test_figure_5_table_in_experiments():
  rows = _csv('sweep_width_resolution', 'results.csv')
  text = _text('experiments', 'README.md')
  for width in ('0.35', '0.5', '1'):
    for size in (32, 40, 48):
      group = f'width_multiplier={width}_image_size={size}'
      macs = _find(
        rf'\| {width} \| {size} \| [^\n]* \| ([\d.]+M) \|\n',
        _text('experiments', 'results', 'sweep_width_resolution', 'results.md'),
        f'results.md {group}',
      )[0]
      cells = f'| {width} | {size} | ' + _seed_row(rows, group) + f' {macs} |'
      assert cells in text, cells

  def paired_gain(before, after):
    by_seed = {(r['group'], r['seed']): 100 * float(r['top1']) for r in rows}
    return statistics.fmean(
      by_seed[(after, seed)] - by_seed[(before, seed)] for seed in '012'
    )

  claims = ' '.join(text.split())
  for size, words in [(48, 'at 48 px'), (40, 'at 40 px')]:
    gain = paired_gain(
      f'width_multiplier=0.5_image_size={size}',
      f'width_multiplier=1_image_size={size}',
    )
    assert f'+{gain:.2f} points {words}' in claims or (
      f'+{gain:.2f} {words}' in claims
    ), (size, gain)
  # 40 -> 48 px, paired by seed, as experiments/analyse.py gives them
  # (experiments/results/analysis.txt): shown at α = 1.0 only.
  analysis = _text('experiments', 'results', 'analysis.txt')
  steps = {
    width: re.search(
      rf'α = {width}, 40 -> 48 px: \+([\d.]+) \((.*); paired p = ([\d.]+)\)',
      analysis,
    ).groups()
    for width in ('0.35', '0.5', '1.0')
  }
  for width, group_width in (('0.35', '0.35'), ('0.5', '0.5'), ('1.0', '1')):
    gain = paired_gain(
      f'width_multiplier={group_width}_image_size=40',
      f'width_multiplier={group_width}_image_size=48',
    )
    assert f'{gain:.2f}' == steps[width][0], width
  (small_gain, _, small_p), (middle_gain, _, middle_p) = (
    steps['0.35'],
    steps['0.5'],
  )
  large_gain, large_seeds, large_p = steps['1.0']
  assert f'+{large_gain} points there ({large_seeds}; p = {large_p})' in claims
  assert (
    f'+{small_gain} and +{middle_gain} points (p = {small_p} and {middle_p})'
    in claims
  )
  readme = ' '.join(_text('README.md').split())
  assert (
    f'40 → 48 px adds +{large_gain} points at α = 1.0 (p = {large_p})' in readme
  )
  assert f'(p = {small_p}, {middle_p})' in readme

  def train_losses(condition):
    losses = [
      float(r['train_loss'])
      for r in rows
      if condition(float(r['model.width_multiplier']), int(r['image_size']))
    ]
    return f'{min(losses):.2f}–{max(losses):.2f}'

  assert (
    f'is {train_losses(lambda w, s: s == 32 and w <= 0.5)} at 32 px and '
    f'α ≤ 0.5 and {train_losses(lambda w, s: s == 32 and w == 1.0)} at '
    f'α = 1.0, against {train_losses(lambda w, s: s > 32)} at 40 and 48 px'
  ) in claims


def test_figure_5_at_three_times_the_budget_in_experiments():
  text = _text('experiments', 'README.md')
  folder = os.path.join('sweep_width_resolution', '32px_24_epochs')
  untrained_losses = []
  for width in ('0.35', '0.5', '1.0'):
    tests, validations = [], []
    for seed in range(3):
      name = f'width_multiplier={width}_image_size=32_seed={seed}'
      result = _json(folder, f'{name}.json')
      assert '--config.num_epochs=24' in result['command']
      tests.append(100 * result['final']['test']['top1'])
      validations.append(100 * result['final']['validation']['top1'])
      with open(os.path.join(RESULTS, folder, f'{name}.metrics.jsonl')) as f:
        records = [json.loads(line) for line in f]
      loss = [r['loss'] for r in records if r['split'] == 'train'][-1]
      if tests[-1] < 50:
        untrained_losses.append(loss)
    row = (
      f'  | {float(width):g} | '
      + ' | '.join(f'{value:.2f}%' for value in tests)
      + f' | {statistics.fmean(tests):.2f} ± {statistics.stdev(tests):.2f}% | '
      f'{statistics.fmean(validations):.2f} ± '
      f'{statistics.stdev(validations):.2f}% |'
    )
    assert row in text, row
  assert len(untrained_losses) == 5
  assert (
    f'The other five end with a training loss of {min(untrained_losses):.2f}–'
    f'{max(untrained_losses):.2f}'
  ) in text


def test_sweep_statistics_in_experiments(capsys):
  """The paired comparisons and fits experiments/README.md and the README
  quote are what experiments/analyse.py computes from the committed results,
  and experiments/results/analysis.txt is its output."""
  analyse = helpers.experiment_script('analyse')

  assert analyse.report() == _text('experiments', 'results', 'analysis.txt')
  text = ' '.join(_text('experiments', 'README.md').split())
  readme = ' '.join(_text('README.md').split())
  analyse.main(['ablations'])
  claims = {
    'Figure 6a, linear minus ReLU6': 'Consistent with the paper, not decided',
    'Figure 6b, bottleneck minus expansion': 'Bottleneck shortcut > expansion '
    'shortcut: consistent with the paper, not decided',
    'Figure 6b, expansion minus none': 'Expansion shortcut > none: reproduced',
  }
  for line in capsys.readouterr().out.splitlines():
    label, mean, seeds, p, verdict = re.match(
      r'(.*): ([+-][\d.]+) \((.*); paired p = ([\d.]+)\): (.*)', line
    ).groups()
    assert f'{mean} points on the mean ({seeds})' in text or (
      f'{mean} points ({seeds}; paired t-test p = {p})' in text
    ), line
    assert f'p = {p}' in text and f'p = {p}' in readme, line
    assert claims[label] in text, line
    assert verdict in {'reproduced', 'consistent, not decided'}
    assert ('reproduced' in claims[label]) == (verdict == 'reproduced')
  analyse.main(['expansion'])
  matched, curve, from_fit, *fixed_width = capsys.readouterr().out.splitlines()
  mean, seeds, p = re.search(
    r': ([+-][\d.]+) \((.*); paired p = ([\d.]+)\)', matched
  ).groups()
  assert (
    f't = 10 is ahead by {mean} points ({seeds}; paired t-test p = {p})'.replace(
      '-', '−'
    )
    in text.replace('-', '−')
  )
  assert f'ahead of t = 5 by {mean} points (p = {p})' in readme
  c, c_error, c_p, residual = re.search(
    r't term ([\d.-]+) ± ([\d.]+) .*\(p = ([\d.]+)\), residual ([\d.]+)',
    curve,
  ).groups()
  assert (
    f'c = {c} ± {c_error} points per unit of t beyond its cost (p = {c_p}, '
    f'residual {residual} points)'
  ) in text
  gain, gain_error = re.search(
    r': ([+-][\d.]+) ± ([\d.]+) points', from_fit
  ).groups()
  assert f'ahead of t = 5 by {gain} ± {gain_error} points' in text
  for line in fixed_width:
    mean, seeds, p = re.search(
      r': ([+-][\d.]+) \((.*); paired p = ([\d.]+)\)', line
    ).groups()
    width = re.match(r'α = ([\d.]+)', line)[1]
    assert re.search(rf'by {re.escape(mean)} (points )?at α = {width}', text)
    assert f'{seeds}; paired t-test p = {float(p):.3f}' in text or (
      f'{seeds}; p = {float(p):.2f}' in text
    ), line
  analyse.main(['width_resolution'])
  out = capsys.readouterr().out
  released = re.search(
    r'released checkpoints: top-1 = ([\d.]+) \+ ([\d.]+) '
    r'ln MACs \+ ([\d.]+) ln α; width term [\d.-]+ ± ([\d.]+), '
    r'residual ([\d.]+)',
    out,
  ).groups()
  a, b, c, c_error, residual = map(float, released)
  assert (
    f'top-1 = {a:.1f} + {b:.2f} ln MACs + {c:.2f} ln α: at fixed '
    f'multiply-adds, the width adds {c:.2f} ± {c_error:.2f} points per e-fold; '
    f'residual {residual:.1f} points'
  ) in text
  for label in ('every run', 'without 32 px'):
    c, c_error = map(
      float,
      re.search(
        rf'ours, {label}: .*width term ([\d.-]+) ± ([\d.]+)', out
      ).groups(),
    )
    digits = 0 if abs(c) > 10 else 1
    assert f'{c:.{digits}f} ± {c_error:.{digits}f}'.replace('-', '−') in text


def test_multihost_figures_in_docs_training():
  text = ' '.join(_text('docs', 'training.md').split())

  def top1(name, split='test'):
    return _json(*name)['final'][split]['top1']

  two_by_four = ('multihost', 'quickstart_2_processes_4_devices_each.json')
  one_by_eight = ('multihost', 'quickstart_1_process_8_devices.json')
  assert round(top1(two_by_four) * 360) == 356
  assert (
    f'ends at {_percent(top1(two_by_four))}% test top-1 (356 of 360) and '
    f'{_percent(top1(two_by_four, "validation"))}% validation, against '
    f'{_percent(top1(one_by_eight))}% and '
    f'{_percent(top1(one_by_eight, "validation"))}% for 1 process of 8 devices'
  ) in text
  one_process = [('quickstarts', 'digits.json')] + [
    ('multihost', f'quickstart_1_process_{n}_devices.json') for n in (2, 4, 8)
  ]
  tests = sorted(top1(name) for name in one_process)
  validations = sorted(top1(name, 'validation') for name in one_process)
  assert (
    f'end between {_percent(tests[0])}% and {_percent(tests[-1])}% test and '
    f'{_percent(validations[0])}% and {_percent(validations[-1])}% validation'
  ) in text

  differences = _json('multihost', 'checkpoint_differences.json')
  assert differences['/tmp/qs_two vs /tmp/qs_one2']['bitwise_equal'] == 262
  assert (
    'differ far beyond rounding: '
    f'{differences["/tmp/qs_2x4 vs /tmp/qs_1x8"]["relative_l2_median"]:.2f} '
    'relative L2'
  ) in text
  assert (
    f'differs by as much '
    f'({differences["/tmp/qs_1x4 vs /tmp/qs_1x8"]["relative_l2_median"]:.2f};'
  ) in text

  with open(
    os.path.join(REPO_ROOT, 'benchmarks/results/gradient_conditioning.json')
  ) as f:
    digits = json.load(f)['digits']
  assert (
    'moves the float64 gradient by '
    f'{100 * digits["float64_input_times_1e-7_noise"]["median"]:.2f}%'
  ) in text
  assert (
    f'1e-9 moves it by '
    f'{digits["float64_input_times_1e-9_noise"]["median"]:.0e}'.replace(
      'e-0', 'e-'
    )
  ) in text
  assert (
    f'float32 on 1 device is {100 * digits["float32_1_device"]["median"]:.2f}%'
  ) in text
  assert (
    f'8 devices happen to be '
    f'{100 * digits["float32_8_devices"]["median"]:.3f}% from it'
  ) in text


def test_calibration_on_validation_in_experiments():
  rows = _csv('calibration_cluttered_digits', 'results.csv')
  text = _text('experiments', 'README.md')
  for size in (32, 48):
    for row in (r for r in rows if r['group'] == f'image_size={size}'):
      cells = (
        f'| {size}×{size} | {row["seed"]} | '
        f'{_percent(float(row["validation_top1"]))}% | '
        f'{_percent(float(row["top1"]))}% |'
      )
      assert cells in text, cells


# ------------------------------------------------- export and reliability


@pytest.mark.parametrize(
  'name,label',
  [('tflite', 'TFLite float32'), ('tflite_int8', 'TFLite int8')],
)
def test_export_table_in_docs_weights(name, label):
  result = _json('export', f'{name}.json')
  row = _find(
    rf'\| {label} \| ([\d.]+) MB \|[^|]*?([\d.]+e-\d+) relative[^|]*\| '
    r'\**([\d.]+)%\**',
    _text('docs', 'weights.md'),
    f'docs/weights.md {label}',
  )
  assert row == (
    f'{result["bytes"] / 1e6:.2f}',
    _scientific(result['max_rel_diff']),
    f'{100 * result["top1_agreement"]:.2f}'.rstrip('0').rstrip('.'),
  )


def test_help_times_in_docs_architecture():
  result = _json_file('benchmarks', 'results', 'cli_help.json')
  walls = [row['wall_seconds'] for row in result['rows']]
  assert len(walls) == 9 and max(walls) < result['target_seconds']
  text = ' '.join(_text('docs', 'architecture.md').split())
  assert (
    f'every tool answers `--help` in {min(walls):.2f} to {max(walls):.2f} s'
    in text
  )


def test_kill_resume_figures_in_docs_reliability():
  result = _json('reliability', 'kill_resume.json')
  assert result['every_completed_run_equal_bitwise']
  text = _text('docs', 'reliability.md')
  figures = _find(
    r'(\d+) kills \((\d+) at a random time, (\d+) after the first step, '
    r'(\d+) at a save; (\d+) landed while a save was in progress, (\d+) '
    r'before the first step\) \| (\d+)/(\d+) resumed; the (\d+) runs',
    text,
    'docs/reliability.md',
  )
  by_kind = result['kills_by_kind']
  assert tuple(int(f) for f in figures) == (
    result['kills'],
    by_kind['anytime'],
    by_kind['training'],
    by_kind['saving'],
    result['kills_during_save'],
    result['kills_before_first_step'],
    result['kills'],
    result['kills'],
    result['completed_runs_compared'],
  )


def test_memory_table_in_experiments_is_benchmarks_memory_json():
  with open(
    os.path.join(REPO_ROOT, 'benchmarks', 'results', 'memory.json')
  ) as f:
    rows = json.load(f)
  text = _text('experiments', 'README.md')
  base = rows[0]
  for row in rows:
    cells = (
      f'| {row["splits"]} | {row["temp_bytes"] / 2**20:.2f} MiB | '
      f'{row["temp_bytes"] / base["temp_bytes"]:.2f} | '
      f'{row["median_ms"]:.1f} ms | '
      f'{row["median_ms"] / base["median_ms"]:.2f} | '
      f'{_scientific(row["relative_difference_vs_unsplit"])} | '
      f'{_scientific(row["pool_relative_difference_vs_unsplit"])} |'
    )
    assert cells in text, cells


def test_table_3_in_experiments_is_the_stats_output():
  """experiments/README.md's Table 3 is what `python -m mnv2_jax.stats
  --memory` prints (models/counting.py's §5.1 rule)."""
  from mnv2_jax import stats  # noqa: PLC0415 (absl flags, only here)
  from mnv2_jax.models import counting  # noqa: PLC0415

  table = stats.format_memory_table(counting.memory_table())
  rows = [line for line in table.splitlines() if line.startswith('| ')]
  assert len(rows) == 8  # header, 6 sizes, max
  text = _text('experiments', 'README.md')
  for row in rows[1:]:
    assert row in text, row


def test_eval_scale_checks_in_docs_segmentation():
  """Each evaluation-only check holds its own validation figures and no test
  figure (an evaluation without a test split used to inherit the training
  run's), and docs/segmentation.md's table is theirs."""
  text = _text('docs', 'segmentation.md')
  for name, label in [
    ('05_075_10_125_15_175', '0.5, 0.75, 1.0, 1.25, 1.5, 1.75'),
    ('10_125_15_175', '1.0, 1.25, 1.5, 1.75'),
    ('10_125_15_175_20', '1.0 … 2.0'),
    ('15', '1.5'),
    ('10', '1.0 (single scale)'),
  ]:
    record = _json(
      'quickstarts', 'validation_checks', f'deeplab_eval_scales_{name}.json'
    )
    assert set(record['final']) == {'validation'}, name
    assert record['config']['mode'] == 'eval'
    validation = record['final']['validation']
    row = _find(
      rf'\| {re.escape(label)}[^|]*\| (0\.\d+) \| (0\.\d+) \|', text, label
    )
    assert row == (
      f'{validation["mIoU"]:.3f}',
      f'{validation["pixel_accuracy"]:.3f}',
    ), name


def test_quickstart_spreads_in_experiments_and_the_readme():
  """The spread table of experiments/README.md and the README's summary
  line are what experiments/quickstart_spread.py makes of spread.json, and
  spread.json is what it computes from the run files."""
  quickstart_spread = helpers.experiment_script('quickstart_spread')

  folder = pathlib.Path(RESULTS, 'quickstarts', 'spread')
  summary = _json('quickstarts', 'spread', 'spread.json')
  for name in ('digits', 'ssdlite', 'deeplab'):
    if name in summary:
      assert quickstart_spread.summarise(name, folder) == summary[name], name
  assert (
    quickstart_spread.summarise('ssdlite', folder / 'ssdlite_20_epochs')
    == summary['ssdlite_20_epochs']
  )
  experiments = _text('experiments', 'README.md')
  for row in quickstart_spread.table_rows(summary):
    assert row in experiments, row
  readme = ' '.join(_text('README.md').split())
  assert quickstart_spread.readme_line(summary) in readme


def test_ssdlite_recipe_was_chosen_on_the_bottom_of_validation():
  """experiments/README.md: the 20-epoch config failed its target at the
  bottom of its spread, and the 26-epoch runs' lowest validation AP50 is
  above the 20-epoch runs' lowest."""
  before = _spread('ssdlite_20_epochs')
  after = _spread('ssdlite')
  assert not before['target_holds_at_the_bottom']
  assert after['validation']['min'] > before['validation']['min']
  assert all(
    _json('quickstarts', 'spread', run['file'])['config']['num_epochs'] == 26
    for run in after['runs']
  )
  assert all(
    _json('quickstarts', 'spread', 'ssdlite_20_epochs', run['file'])['config'][
      'num_epochs'
    ]
    == 20
    for run in before['runs']
  )


def test_figure_5_peers_in_experiments_and_the_readme():
  """experiments/README.md quotes experiments/analyse.py's peers study
  verbatim (experiments/results/analysis.txt, which
  test_sweep_statistics_in_experiments holds to the committed sweeps), and
  the README's row gives each family's averaged difference, p and verdict."""
  analysis = _text('experiments', 'results', 'analysis.txt')
  peers = analysis.split('# peers\n')[1].split('\n# ')[0].strip()
  text = _text('experiments', 'README.md')
  for line in peers.splitlines():
    assert line in text, line
  readme = ' '.join(_text('README.md').split())
  families = re.findall(
    r'^(.*), averaged over its \d+ points at matched cost, V2 minus peer: '
    r'([+-][\d.]+) \(.*?; paired p = ([\d.]+)\): ([a-z, ]+?) \(by point',
    peers,
    re.M,
  )
  assert len(families) >= 3, peers
  for family, difference, p, verdict in families:
    claim = f'{family}: {difference} points (p = {p}), {verdict}'
    assert claim in readme, claim


def test_tflite_latency_ratios_are_the_measured_times():
  """benchmarks/results/tflite_latency.md's ratios are its own rows'
  medians, beside the paper's Table 4 and Table 6 milliseconds."""
  record = json.loads(_text('benchmarks', 'results', 'tflite_latency.json'))
  by_name = {row['name']: row for row in record['networks']}
  table = _text('benchmarks', 'results', 'tflite_latency.md')
  for ratio in record['ratios']:
    top, bottom = by_name[ratio['numerator']], by_name[ratio['denominator']]
    assert ratio['paper'] == pytest.approx(top['paper_ms'] / bottom['paper_ms'])
    cells = [f'{ratio["paper"]:.2f}']
    for precision in ('float32', 'int8'):
      measured = (
        top['latency'][precision]['median_ms']
        / bottom['latency'][precision]['median_ms']
      )
      assert ratio[precision] == pytest.approx(measured)
      cells.append(f'{measured:.2f}')
    row = f'| {ratio["numerator"]} / {ratio["denominator"]} | ' + ' | '.join(
      cells
    )
    assert row + ' |' in table, row


def test_backbone_comparisons_in_experiments_and_the_readme():
  """experiments/README.md quotes the backbones study (Tables 6 and 7 on the
  built-in scenes) verbatim from experiments/results/analysis.txt, and the
  README's row gives each head's difference, p and verdict."""
  analysis = _text('experiments', 'results', 'analysis.txt')
  section = analysis.split('# backbones\n')[1].split('\n# ')[0].strip()
  text = _text('experiments', 'README.md')
  for line in section.splitlines():
    assert line in text, line
  readme = ' '.join(_text('README.md').split())
  heads = {'ssdlite': 'SSDLite', 'deeplab': 'DeepLab'}
  found = re.findall(
    r'^(\w+): V2 minus V1 ([+-][\d.]+) \(.*?; paired p = ([\d.]+)\), '
    r'95% interval ([+-][\d.]+) to ([+-][\d.]+): ([a-z, ]+?); V2 costs '
    r'([\d.]+) of V1',
    section,
    re.M,
  )
  assert [name for name, *_ in found] == list(heads), section
  for name, difference, p, low, high, verdict, ratio in found:
    claim = (
      f'{heads[name]}: V2 minus V1 {difference} points (p = {p}; 95% '
      f"interval {low} to {high}), {verdict}, at {ratio} of V1's "
      'multiply-adds'
    )
    assert claim in readme, claim
