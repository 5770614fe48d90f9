r"""The quickstarts' figures as a spread over seeds and instruction sets.

A training run amplifies float rounding (benchmarks/gradient_conditioning.py),
so one run's figure is one sample: another CPU, whose vector instructions
round sums differently, gives another. This runs each quickstart for several
seeds under two instruction-set settings, each run in a fresh process, and
writes one result file per run plus a summary (min, mean, max, and whether
the quickstart's target holds at the bottom of the spread):

  python experiments/quickstart_spread.py digits ssdlite deeplab \
      --seeds 0 1 2 --results_dir experiments/results/quickstarts/spread

The instruction-set settings (`ISA_SETTINGS`):

- `native`: no XLA flags. On an AVX-512 CPU, XLA:CPU and YNNPACK (which
  takes the matrix products, convolutions and many reductions) both use
  AVX-512.
- `avx2`: `--xla_cpu_max_isa=AVX2` limits XLA's own code generation to AVX2,
  and `--xla_cpu_experimental_ynn_fusion_type=` (empty) keeps YNNPACK out,
  because YNNPACK picks its kernels from the CPU at run time and ignores
  `xla_cpu_max_isa`: that flag alone left every result bitwise unchanged on
  an AVX-512 machine. With both, no AVX-512 code runs, and the rounding is
  that of a different set of kernels. It is not the same program a real
  AVX2-only CPU runs (there YNNPACK runs its AVX2 kernels), so it samples
  "another CPU's rounding", not one particular CPU.

A run whose result file exists is skipped, so an interrupted spread resumes.
`--jobs 2` runs two at a time (on 2 cores, about twice the throughput of one
run, which does not keep both cores busy); their wall times are then those
of a shared machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ISA_SETTINGS = {
  'native': '',
  'avx2': '--xla_cpu_max_isa=AVX2 --xla_cpu_experimental_ynn_fusion_type=',
}

# Each quickstart: its config, the headline metric of its test split, and the
# target its config's docstring promises.
QUICKSTARTS = {
  'digits': ('configs/quickstart.py', 'top1', 0.97),
  'ssdlite': ('configs/ssdlite_quickstart.py', 'AP50', 0.80),
  'deeplab': ('configs/deeplab_quickstart.py', 'mIoU', 0.75),
}

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def result_path(results_dir: pathlib.Path, name: str, isa: str, seed: int):
  return results_dir / f'{name}_{isa}_seed{seed}.json'


def run_one(name, isa, seed, results_dir, workdir_root, overrides, log_dir):
  config, _, _ = QUICKSTARTS[name]
  path = result_path(results_dir, name, isa, seed)
  if path.exists():
    print(f'{path} exists: skipped', flush=True)
    return
  # A workdir per config version: a run whose config changed starts afresh
  # instead of resuming the old one's checkpoints under the new schedule.
  version = hashlib.sha256(
    (REPOSITORY / config).read_bytes() + ' '.join(overrides).encode()
  ).hexdigest()[:8]
  workdir = workdir_root / f'{name}_{isa}_seed{seed}_{version}'
  command = [
    sys.executable,
    '-m',
    'mnv2_jax.main',
    f'--config={config}',
    f'--workdir={workdir}',
    f'--config.seed={seed}',
    f'--result_file={path}',
    *overrides,
  ]
  environment = dict(os.environ)
  flags = ' '.join(
    f for f in (environment.get('XLA_FLAGS', ''), ISA_SETTINGS[isa]) if f
  )
  environment['XLA_FLAGS'] = flags
  log = log_dir / f'{path.stem}.log'
  print(f'XLA_FLAGS="{flags}" ' + ' '.join(command) + f' > {log}', flush=True)
  started = time.time()
  with open(log, 'w') as output:
    subprocess.run(
      command,
      env=environment,
      cwd=REPOSITORY,
      check=True,
      stdout=output,
      stderr=subprocess.STDOUT,
    )
  print(f'{path.name}: {time.time() - started:.0f} s', flush=True)


def summarise(name: str, results_dir: pathlib.Path) -> dict:
  """The spread of the test and validation figures over every run of
  `name` in `results_dir`."""
  _, metric, target = QUICKSTARTS[name]
  runs = []
  for path in sorted(results_dir.glob(f'{name}_*_seed*.json')):
    record = json.loads(path.read_text())
    runs.append(
      {
        'file': path.name,
        'isa': path.stem.split('_')[1],
        'seed': record['config']['seed'],
        'test': record['final']['test'][metric],
        'validation': record['final']['validation'][metric],
        'wall_seconds': round(record['wall_seconds'], 1),
      }
    )
  spread = {'metric': metric, 'target': target, 'runs': runs}
  for split in ('test', 'validation'):
    values = [run[split] for run in runs]
    spread[split] = {
      'min': min(values),
      'mean': statistics.mean(values),
      'max': max(values),
      'std': statistics.stdev(values) if len(values) > 1 else 0.0,
    }
  spread['target_holds_at_the_bottom'] = spread['test']['min'] >= target
  return spread


# How experiments/README.md names each summary's row.
LABELS = {
  'digits': 'digits (`quickstart.py`)',
  'ssdlite': 'SSDLite, 26 epochs (`ssdlite_quickstart.py`)',
  'ssdlite_20_epochs': 'SSDLite, 20 epochs (the config before)',
  'deeplab': 'DeepLab (`deeplab_quickstart.py`)',
}


def _figure(metric: str, value: float) -> str:
  return f'{100 * value:.2f}%' if metric == 'top1' else f'{value:.3f}'


FULL_SPREAD = 6  # 3 seeds x 2 instruction-set settings


def _verdict(spread: dict) -> str:
  """Whether the target holds at the bottom; a spread of fewer than
  FULL_SPREAD runs cannot say it holds, only that it has not failed."""
  if not spread['target_holds_at_the_bottom']:
    return 'fails'
  return 'holds' if len(spread['runs']) >= FULL_SPREAD else 'holds so far'


def table_rows(summary: dict) -> list[str]:
  """experiments/README.md's rows of the spread table, from spread.json."""
  rows = []
  for key, label in LABELS.items():
    if key not in summary:
      continue
    spread = summary[key]
    metric, test, validation = (
      spread['metric'],
      spread['test'],
      spread['validation'],
    )
    target = (
      f'top-1 ≥ {100 * spread["target"]:.0f}%'
      if metric == 'top1'
      else f'{metric} ≥ {spread["target"]:.2f}'
    )
    rows.append(
      f'| {label} | {target} | {len(spread["runs"])} | '
      f'{_figure(metric, test["min"])}–{_figure(metric, test["max"])} '
      f'({_figure(metric, test["mean"])}) | '
      f'{_figure(metric, validation["min"])}–'
      f'{_figure(metric, validation["max"])} | '
      f'{_verdict(spread)} |'
    )
  return rows


def readme_line(summary: dict) -> str:
  """The README's one-line summary of the spreads: each quickstart's
  lowest and highest test figure and how many of its 6 runs exist."""
  parts = []
  for key, name in (
    ('digits', 'digits top-1'),
    ('ssdlite', 'SSDLite AP50'),
    ('deeplab', 'DeepLab mIoU'),
  ):
    if key not in summary:
      continue
    spread = summary[key]
    runs = len(spread['runs'])
    count = (
      f'{runs} runs'
      if runs >= FULL_SPREAD
      else f'{runs} of {FULL_SPREAD} runs so far'
    )
    parts.append(
      f'{name} {_figure(spread["metric"], spread["test"]["min"])}–'
      f'{_figure(spread["metric"], spread["test"]["max"])} ({count})'
    )
  return '; '.join(parts)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('quickstarts', nargs='+', choices=sorted(QUICKSTARTS))
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument(
    '--isa', nargs='+', default=list(ISA_SETTINGS), choices=list(ISA_SETTINGS)
  )
  parser.add_argument(
    '--results_dir', default='experiments/results/quickstarts/spread'
  )
  parser.add_argument('--workdir', default='/tmp/quickstart_spread')
  parser.add_argument('--jobs', type=int, default=1, help='runs at a time')
  parser.add_argument(
    '--summary_only', action='store_true', help='only rewrite spread.json'
  )
  args, overrides = parser.parse_known_args(argv)
  results_dir = (REPOSITORY / args.results_dir).resolve()
  results_dir.mkdir(parents=True, exist_ok=True)
  if not args.summary_only:
    workdir_root = pathlib.Path(args.workdir)
    workdir_root.mkdir(parents=True, exist_ok=True)
    runs = [
      (name, isa, seed, results_dir, workdir_root, overrides, workdir_root)
      for name in args.quickstarts
      for seed in args.seeds
      for isa in args.isa
    ]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
      for future in [pool.submit(run_one, *run) for run in runs]:
        future.result()
  summary_path = results_dir / 'spread.json'
  summary = (
    json.loads(summary_path.read_text()) if summary_path.exists() else {}
  )
  # Earlier recipes' runs kept in sub-folders named <quickstart>_<recipe>
  # (e.g. ssdlite_20_epochs) are summarised under the folder's name.
  for folder in sorted(p for p in results_dir.iterdir() if p.is_dir()):
    quickstart = folder.name.split('_')[0]
    if quickstart in QUICKSTARTS and any(folder.glob('*_seed*.json')):
      summary[folder.name] = summarise(quickstart, folder)
  for name in args.quickstarts:
    summary[name] = summarise(name, results_dir)
    test = summary[name]['test']
    print(
      f'{name}: test {summary[name]["metric"]} {test["min"]:.4f}-'
      f'{test["max"]:.4f} (mean {test["mean"]:.4f}) over '
      f'{len(summary[name]["runs"])} runs; target '
      f'{summary[name]["target"]} holds at the bottom: '
      f'{summary[name]["target_holds_at_the_bottom"]}'
    )
  summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + '\n')


if __name__ == '__main__':
  main()
