"""The sweep runner (mnv2_jax/sweep.py) and the cluttered digits proxy set.

The runner's training subprocess is replaced by a fake that writes what
`python -m mnv2_jax.main` writes (metrics.jsonl), so expansion, skipping,
resuming and the report are tested without training anything.
"""

import csv
import importlib.util
import json
import os
import statistics
import subprocess
import textwrap
import threading

import helpers
import numpy as np
import pytest

from mnv2_jax import configuration
from mnv2_jax import sweep as sweep_cli
from mnv2_jax.data import cluttered_digits
from mnv2_jax.data import digits
from mnv2_jax.experiments import plots as sweep_plots
from mnv2_jax.experiments import points as sweep_points
from mnv2_jax.experiments import report as sweep_report
from mnv2_jax.experiments import runner as sweep_runner
from mnv2_jax.models import counting as statistics_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The built-in proxy's config file, which the test experiments below load.
CLUTTERED_DIGITS = os.path.join(REPO_ROOT, 'configs', 'cluttered_digits.py')
EXPERIMENT = textwrap.dedent("""
    from mnv2_jax import configuration

    def get_config(scale=None):
      config = configuration.load_file(CLUTTERED_DIGITS_PATH)
      config.model.width_multiplier = 0.35
      return config

    def get_sweep(scale=None):
      return [{'model.bottleneck_activation': a, 'seed': s}
              for a in ('linear', 'relu6') for s in (0, 1, 2)][:POINTS]
""").replace('CLUTTERED_DIGITS_PATH', repr(CLUTTERED_DIGITS))


def _experiment(tmp_path, points=6, body=EXPERIMENT):
  path = tmp_path / 'experiment.py'
  path.write_text(body.replace('POINTS', str(points)))
  return str(path)


def _top1(overrides):
  """The known final accuracy of each fake run."""
  if 'model.bottleneck_activation' not in overrides:  # a Figure 5 grid
    return (
      0.5
      + 0.2 * overrides['model.width_multiplier']
      + 0.001 * overrides['image_size']
      + 0.01 * overrides['seed']
    )
  base = 0.8 if overrides['model.bottleneck_activation'] == 'linear' else 0.7
  return base + 0.01 * overrides['seed']


class FakeMain:
  """Stands in for `python -m mnv2_jax.main`: appends the evaluations a run
  writes to its workdir's metrics.jsonl (validation during training, test
  once at the end); `fail_first` dies once midway."""

  def __init__(self, fail_first=()):
    self.calls = []
    self.fail_first = set(fail_first)

  def __call__(self, command, stdout=None, stderr=None, check=False, env=None):
    del stdout, stderr, check, env
    workdir = next(
      c.split('=', 1)[1] for c in command if c.startswith('--workdir=')
    )
    overrides = {}
    for c in command:
      if c.startswith('--config.'):
        key, value = c[len('--config.') :].split('=', 1)
        try:
          overrides[key] = float(value) if '.' in value else int(value)
        except ValueError:
          overrides[key] = value
    self.calls.append(os.path.basename(workdir))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
      for step in (10, 20):
        f.write(
          json.dumps({'step': step, 'split': 'train', 'loss': 1.0}) + '\n'
        )
        if os.path.basename(workdir) in self.fail_first:
          self.fail_first.remove(os.path.basename(workdir))
          return subprocess.CompletedProcess(command, 137)
        validation = {
          'step': step,
          'split': 'validation',
          'top1': (_top1(overrides) + 0.05) * step / 20,
        }
        f.write(json.dumps(validation) + '\n')
      test = {'step': 20, 'split': 'test', 'top1': _top1(overrides)}
      f.write(json.dumps(test) + '\n')
    return subprocess.CompletedProcess(command, 0)


@pytest.mark.parametrize(
  'name',
  sorted(
    n[: -len('.py')]
    for n in os.listdir(os.path.join(REPO_ROOT, 'configs'))
    if n.endswith('.py')
  ),
)
def test_every_committed_config_is_valid(name):
  # Each file's config validates; an experiment's every point too.
  path = os.path.join(REPO_ROOT, 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  configuration.validate(module.get_config())
  if hasattr(module, 'get_sweep'):
    base, points = sweep_points.load_experiment(path)
    assert points and base is not None


def test_points_names_and_commands(tmp_path):
  base, points = sweep_points.load_experiment(_experiment(tmp_path))
  assert len(points) == 6 and base.model.width_multiplier == 0.35
  names = [sweep_points.point_name(p) for p in points]
  assert names[0] == 'bottleneck_activation=linear_seed=0'
  assert len(set(names)) == 6
  assert sweep_points.group_name(points[4]) == 'bottleneck_activation=relu6'
  command = sweep_points.point_command('exp.py:builtin', '/w', points[4])
  assert command[1:] == [
    '-m',
    'mnv2_jax.main',
    '--config=exp.py:builtin',
    '--workdir=/w/bottleneck_activation=relu6_seed=1',
    '--config.model.bottleneck_activation=relu6',
    '--config.seed=1',
  ]


def test_overrides_for_every_point(tmp_path, capsys):
  """`--config.<key>=<value>` beside the sweep's flags joins every point (its
  own names and directories: a point is never resumed under another
  schedule), typed as the field, and reaches each point's command."""
  path = _experiment(tmp_path)
  base, points = sweep_points.load_experiment(
    path, ['--config.num_train_steps=100', '--config.base_learning_rate=1']
  )
  assert base.num_train_steps == 100 and base.base_learning_rate == 1.0
  assert isinstance(base.base_learning_rate, float)
  assert sweep_points.point_name(points[0]) == (
    'num_train_steps=100_base_learning_rate=1_bottleneck_activation=linear'
    '_seed=0'
  )
  assert '--config.num_train_steps=100' in sweep_points.point_command(
    path, '/w', points[0]
  )
  for arguments, message in (
    (['--config.num_train_step=100'], 'no such config field'),
    (['--config.num_train_steps=1.5'], 'expected int'),
    (['--config.seed=3'], 'swept by'),
    (['--jbos=2'], 'besides its own flags'),
  ):
    with pytest.raises(ValueError, match=message):
      sweep_points.load_experiment(path, arguments)
  # The command line names the problem in one line and exits 2.
  with pytest.raises(SystemExit) as exit_info:
    sweep_cli.main(
      ['--config', path, '--workdir', str(tmp_path), '--config.sed=1']
    )
  assert exit_info.value.code == 2
  assert 'no such config field' in capsys.readouterr().err


def test_unknown_field_or_invalid_value_is_named(tmp_path):
  bad_key = EXPERIMENT.replace(
    "'model.bottleneck_activation'", "'model.bottleneck_activaton'"
  )
  with pytest.raises(ValueError, match='config.model.bottleneck_activaton'):
    sweep_points.load_experiment(_experiment(tmp_path, body=bad_key))
  bad_value = EXPERIMENT.replace("('linear', 'relu6')", "('linear', 'gelu')")
  with pytest.raises(ValueError, match='bottleneck_activation'):
    sweep_points.load_experiment(_experiment(tmp_path, body=bad_value))


def test_sweep_runs_skips_and_resumes(tmp_path, monkeypatch, capsys):
  config = _experiment(tmp_path, points=2)
  workdir = str(tmp_path / 'runs')
  fake = FakeMain(fail_first={'bottleneck_activation=linear_seed=1'})
  monkeypatch.setattr(sweep_runner.subprocess, 'run', fake)

  # First pass: point 0 finishes, point 1 is killed midway.
  assert sweep_cli.main(['--config', config, '--workdir', workdir]) == 1
  assert fake.calls == [
    'bottleneck_activation=linear_seed=0',
    'bottleneck_activation=linear_seed=1',
  ]
  assert sweep_runner.is_finished(
    workdir, {'model.bottleneck_activation': 'linear', 'seed': 0}
  )
  assert not os.path.exists(
    os.path.join(workdir, 'bottleneck_activation=linear_seed=1', 'point.json')
  )

  # --print_commands lists only the unfinished point.
  capsys.readouterr()
  sweep_cli.main(['--config', config, '--workdir', workdir, '--print_commands'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1 and 'linear_seed=1' in lines[0]

  # Second pass: only the unfinished point runs again (main resumes it).
  fake.calls.clear()
  assert sweep_cli.main(['--config', config, '--workdir', workdir]) == 0
  assert fake.calls == ['bottleneck_activation=linear_seed=1']
  with open(
    os.path.join(workdir, 'bottleneck_activation=linear_seed=1', 'point.json')
  ) as f:
    result = json.load(f)
  # The test split's record is reported; the validation one is kept beside.
  assert result['final'] == {'step': 20, 'split': 'test', 'top1': 0.81}
  assert result['final_by_split']['validation']['top1'] == pytest.approx(0.86)

  # Third pass: nothing to do.
  fake.calls.clear()
  assert sweep_cli.main(['--config', config, '--workdir', workdir]) == 0
  assert not fake.calls

  # A point.json cut short (edited, or copied mid-write) is named, with the fix.
  with open(
    os.path.join(workdir, 'bottleneck_activation=linear_seed=0', 'point.json'),
    'w',
  ) as f:
    f.write('{"overrides": ')
  with pytest.raises(ValueError, match=r'linear_seed=0/point.json .*Delete'):
    sweep_cli.main(['--config', config, '--workdir', workdir])


def test_point_result_is_written_atomically(tmp_path, monkeypatch):
  """point.json appears whole or not at all (a temporary file renamed): a
  report taken while the point finishes never reads half of it."""
  config = _experiment(tmp_path, points=1)
  workdir = str(tmp_path / 'runs')
  monkeypatch.setattr(sweep_runner.subprocess, 'run', FakeMain())
  opened_for_writing = []
  real_open = open

  def spying_open(file, mode='r', *args, **kwargs):
    if str(file).endswith('point.json') and set(mode) & set('wa+'):
      opened_for_writing.append(str(file))
    return real_open(file, mode, *args, **kwargs)

  monkeypatch.setattr('builtins.open', spying_open)
  monkeypatch.setattr('io.open', spying_open)
  overrides = sweep_points.load_experiment(config)[1][0]
  sweep_runner.run_point(config, workdir, overrides)
  assert sweep_runner.is_finished(workdir, overrides)
  assert not opened_for_writing
  names = os.listdir(os.path.join(workdir, sweep_points.point_name(overrides)))
  assert 'point.json' in names and not [n for n in names if n.endswith('.tmp')]


def test_jobs_run_points_at_the_same_time(tmp_path, monkeypatch):
  """--jobs 2: two points are training at once (each waits for the other to
  start before it finishes), and every point ends with its result."""
  config = _experiment(tmp_path, points=4)
  workdir = str(tmp_path / 'runs')
  fake = FakeMain()
  both_started = threading.Barrier(2, timeout=30)

  def run_in_pairs(command, **kwargs):
    both_started.wait()  # raises BrokenBarrierError if run one at a time
    return fake(command, **kwargs)

  monkeypatch.setattr(sweep_runner.subprocess, 'run', run_in_pairs)
  assert (
    sweep_cli.main(['--config', config, '--workdir', workdir, '--jobs', '2'])
    == 0
  )
  assert sorted(fake.calls) == sorted(
    sweep_points.point_name(p) for p in sweep_points.load_experiment(config)[1]
  )
  assert all(
    sweep_runner.is_finished(workdir, p)
    for p in sweep_points.load_experiment(config)[1]
  )
  with pytest.raises(SystemExit):
    sweep_cli.main(['--config', config, '--workdir', workdir, '--jobs', '0'])


def test_report_from_known_runs(tmp_path, monkeypatch):
  config = _experiment(tmp_path)
  workdir = str(tmp_path / 'runs')
  monkeypatch.setattr(sweep_runner.subprocess, 'run', FakeMain())
  # Five of the six points finish; the report says so.
  base, points = sweep_points.load_experiment(config)
  for overrides in points[:5]:
    sweep_runner.run_point(config, workdir, overrides)
  written = sweep_report.report(base, points, workdir, 'Figure 6a')

  markdown = open(os.path.join(workdir, 'results.md')).read()
  assert '5 of 6 runs finished, ' in markdown
  linear = [
    100 * _top1({'model.bottleneck_activation': 'linear', 'seed': s})
    for s in (0, 1, 2)
  ]
  relu6 = [
    100 * _top1({'model.bottleneck_activation': 'relu6', 'seed': s})
    for s in (0, 1)
  ]
  # The test split's mean ± std, then the validation split's (the fake's
  # validation accuracy is 5 points above its test accuracy).
  for name, values, seeds in [('linear', linear, 3), ('relu6', relu6, 2)]:
    assert (
      f'| {name} | {statistics.fmean(values):.2f} ± '
      f'{statistics.stdev(values):.2f} | '
      f'{statistics.fmean(values) + 5:.2f} ± {statistics.stdev(values):.2f} '
      f'| {seeds} |'
    ) in markdown
  assert '| test top1 (%) | validation top1 (%) | seeds |' in markdown
  # Both variants have the same parameters and multiply-adds (Figure 6a
  # changes the function only).
  rows = [
    line
    for line in markdown.splitlines()
    if line.startswith('| l') or line.startswith('| r')
  ]
  assert rows[0].split('|')[-3:] == rows[1].split('|')[-3:]

  with open(os.path.join(workdir, 'results.csv')) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 5
  assert table[4]['split'] == 'test'
  assert float(table[4]['top1']) == pytest.approx(0.71)
  assert float(table[4]['validation_top1']) == pytest.approx(0.76)
  assert float(table[4]['train_loss']) == 1.0  # the fake's last train record
  for name in ('curves.png', 'frontier.png'):
    assert os.path.join(workdir, name) in written
    assert os.path.getsize(os.path.join(workdir, name)) > 1000
  # Figure 5's drawing only for a sweep over width and resolution alone.
  assert os.path.join(workdir, 'width_resolution.png') not in written


WIDTH_RESOLUTION = textwrap.dedent("""
    from mnv2_jax import configuration

    def get_config(scale=None):
      return configuration.load_file(CLUTTERED_DIGITS_PATH)

    def get_sweep(scale=None):
      return [{'model.width_multiplier': w, 'image_size': r, 'seed': s}
              for w in (0.35, 0.5) for r in (32, 40) for s in (0, 1)]
""").replace('CLUTTERED_DIGITS_PATH', repr(CLUTTERED_DIGITS))


def test_grid_curves_join_each_width_and_each_resolution():
  # (width, resolution, multiply-adds, mean, std), as Figure 5 draws them.
  points = [
    (0.5, 40, 9.0, 80.0, 1.0),
    (0.35, 32, 2.0, 70.0, 1.0),
    (0.5, 32, 6.0, 75.0, 1.0),
    (0.35, 40, 3.0, 72.0, 1.0),
    (1.4, 224, 582.0, 75.0, 0.0),  # a width with one resolution: no line
  ]
  curves = sweep_plots.grid_curves(points)
  assert list(curves) == ['α = 0.35', 'α = 0.5', '32 px', '40 px']
  assert [p[2] for p in curves['α = 0.5']] == [6.0, 9.0]
  assert [p[0] for p in curves['40 px']] == [0.35, 0.5]
  assert [p[2] for p in curves['32 px']] == [2.0, 6.0]
  # The released grid: four widths with five resolutions each, and the five
  # resolutions across those widths (224 px also through 1.3 and 1.4).
  released = sweep_plots.grid_curves(
    [
      (w, r, macs, top1, 0.0)
      for (w, r), (top1, _, macs) in statistics_lib.PUBLISHED_GRID.items()
    ]
  )
  assert len(released) == 4 + 5
  assert [p[0] for p in released['224 px']] == [0.35, 0.5, 0.75, 1.0, 1.3, 1.4]


def test_width_resolution_report_draws_figure_5(tmp_path, monkeypatch, capsys):
  config = _experiment(tmp_path, body=WIDTH_RESOLUTION)
  workdir = str(tmp_path / 'runs')
  monkeypatch.setattr(sweep_runner.subprocess, 'run', FakeMain())
  base, points = sweep_points.load_experiment(config)
  for overrides in points:
    sweep_runner.run_point(config, workdir, overrides)
  written = sweep_report.report(base, points, workdir, 'Figure 5')
  path = os.path.join(workdir, 'width_resolution.png')
  assert path in written and os.path.getsize(path) > 10_000
  markdown = open(os.path.join(workdir, 'results.md')).read()
  wide = [
    100 * _top1({'model.width_multiplier': 0.5, 'image_size': 40, 'seed': s})
    for s in (0, 1)
  ]
  assert f'{statistics.fmean(wide):.2f} ± {statistics.stdev(wide):.2f}' in (
    markdown
  )
  # Read back as one family of Figure 5 with peers: each seed's test and
  # validation top-1, the row's multiply-adds, only the rows asked for.
  family = sweep_report.read_family(workdir, {'image_size': '40'})
  assert [p['cells']['model.width_multiplier'] for p in family] == [
    '0.35',
    '0.5',
  ]
  assert family[1]['test'] == pytest.approx(
    {s: w / 100 for s, w in enumerate(wide)}
  )
  assert family[1]['validation'][0] == pytest.approx(
    family[1]['test'][0] + 0.05
  )
  assert family[0]['multiply_adds'] < family[1]['multiply_adds']
  # The command line draws it beside the sweep; a malformed one is named.
  assert (
    sweep_cli.main(
      [
        f'--config={config}',
        f'--workdir={workdir}',
        '--report',
        f'--compare_with=peer={workdir}:image_size=40',
      ]
    )
    == 0
  )
  assert os.path.getsize(os.path.join(workdir, 'families.png')) > 10_000
  for bad, named in [
    (workdir, 'give LABEL=RESULTS_DIR'),
    (f'peer={workdir}:image_size=41', 'no row of'),
  ]:
    with pytest.raises(SystemExit):
      sweep_cli.main(
        [
          f'--config={config}',
          f'--workdir={workdir}',
          '--report',
          f'--compare_with={bad}',
        ]
      )
    assert named in capsys.readouterr().err


def test_cluttered_digits_are_deterministic_and_disjoint():
  image, label = cluttered_digits.make_example('train', 7, 32)
  again, label_again = cluttered_digits.make_example('train', 7, 32)
  np.testing.assert_array_equal(image, again)
  assert label == label_again and 0 <= label < 10
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  other, _ = cluttered_digits.make_example('test', 7, 32)
  assert not np.array_equal(image, other)
  # Train images paste glyphs of the digits train split, test images those
  # of the test split (the splits share no scan).
  train_glyphs = digits.raw_split('train')[0].reshape(-1, 64)
  test_glyphs = digits.raw_split('test')[0].reshape(-1, 64)
  common = set(map(bytes, train_glyphs)) & set(map(bytes, test_glyphs))
  assert len(common) < 5  # scikit-learn's set holds a few duplicate scans
  labels = [
    cluttered_digits.make_example('train', i, 32)[1] for i in range(200)
  ]
  assert set(labels) == set(range(10))


@pytest.mark.parametrize(
  'experiment',
  [
    'ablation_bottleneck',
    'ablation_shortcut',
    'sweep_expansion',
    'sweep_width_resolution',
  ],
)
def test_every_experiment_config_is_valid_at_every_scale(experiment):
  """Each committed experiment's points all validate at each scale (the
  runner checks them before training; a bad one would stop a sweep late)."""

  path = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), 'configs', f'{experiment}.py'
  )
  scales = helpers.load_script(
    os.path.join(REPO_ROOT, 'configs', 'scales.py'), 'scales'
  )
  for scale, base_file in scales.SCALES.items():
    base, points = sweep_points.load_experiment(f'{path}:{scale}')
    assert points and len({sweep_points.point_name(p) for p in points}) == len(
      points
    )
    assert (
      base.dataset.name
      == helpers.config_file(base_file.removesuffix('.py')).dataset.name
    )


def test_jobs_share_a_gpu_and_progress_has_an_eta(tmp_path, monkeypatch):
  """--jobs on one card: every point's process gets a memory fraction and no
  preallocation (what XLA reads on a GPU; set and checked here on CPU), and
  each finished point prints the progress with an ETA. A report taken while
  points are still running shows the finished ones."""
  config = _experiment(tmp_path, points=4)
  workdir = str(tmp_path / 'runs')
  fake = FakeMain()
  environments = []
  monkeypatch.delenv('XLA_PYTHON_CLIENT_MEM_FRACTION', raising=False)
  monkeypatch.delenv('XLA_PYTHON_CLIENT_PREALLOCATE', raising=False)
  lines = []

  def run(command, env=None, **kwargs):
    environments.append(env)
    if len(environments) == 3:  # a report taken mid-sweep
      base, points = sweep_points.load_experiment(config)
      sweep_report.report(base, points, workdir, 'partial')
      with open(os.path.join(workdir, 'results.md')) as f:
        lines.append(f.read())
    return fake(command, **kwargs)

  monkeypatch.setattr(sweep_runner.subprocess, 'run', run)
  printed = []
  monkeypatch.setattr(
    'builtins.print', lambda *a, **k: printed.append(' '.join(map(str, a)))
  )
  assert (
    sweep_cli.main(['--config', config, '--workdir', workdir, '--jobs', '2'])
    == 0
  )
  for env in environments:
    assert env['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
    assert env['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.450'
  assert 'of 4 runs finished' in lines[0]
  assert not lines[0].startswith('4 of 4')
  # One process alone keeps JAX's defaults; a fraction too large is refused.
  assert 'XLA_PYTHON_CLIENT_MEM_FRACTION' not in sweep_runner.point_environment(
    1, environ={}
  )
  assert (
    sweep_runner.point_environment(3, 0.3, environ={})[
      'XLA_PYTHON_CLIENT_MEM_FRACTION'
    ]
    == '0.300'
  )
  with pytest.raises(SystemExit):
    sweep_cli.main(
      [
        '--config',
        config,
        '--workdir',
        workdir,
        '--jobs',
        '2',
        '--memory_fraction',
        '0.6',
      ]
    )


def test_progress_lines_count_points_and_give_an_eta(tmp_path, monkeypatch):
  config = _experiment(tmp_path, points=3)
  monkeypatch.setattr(sweep_runner.subprocess, 'run', FakeMain())
  said = []
  base, points = sweep_points.load_experiment(config)
  sweep_runner.run_all(
    config, str(tmp_path / 'runs'), points, 'top1', 1, said.append
  )
  done = [line for line in said if 'ETA' in line]
  assert len(done) == 3
  assert '1 of 3 done, 2 to go, ETA' in done[0]
  assert '3 of 3 done, 0 to go, ETA 0 s' in done[2]
