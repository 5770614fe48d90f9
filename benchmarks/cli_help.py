r"""How long each command-line tool takes to answer `--help`.

  python benchmarks/cli_help.py --out_dir benchmarks/results

A user's first contact with a tool is its usage text, and a mistyped flag
prints the same parser's one-line error: both should come back at once, not
after jax, TensorFlow and the networks have been imported. Each tool parses
its arguments before importing the layers that need those. This runs
`python -m mnv2_jax.<tool> --help` in a fresh process `--repeats` times per
tool and records the median wall time and the CPU time (user + system) of the
process, from a warm file-system cache (one untimed run first). The target
is under 2 s on 2 cores.

Writes <out_dir>/cli_help.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

import mnv2_jax

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = mnv2_jax.COMMAND_LINE_TOOLS
TARGET_SECONDS = 2.0


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--tools', nargs='+', default=list(TOOLS))
  parser.add_argument('--out_dir', default=str(REPO_ROOT / 'benchmarks'))
  return parser.parse_args(argv)


def time_help(tool: str) -> tuple[float, float]:
  """(wall, CPU) seconds of one `python -m mnv2_jax.<tool> --help`."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  run = subprocess.run(
    [sys.executable, '-m', f'mnv2_jax.{tool}', '--help'],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if run.returncode != 0 or 'usage:' not in run.stdout:
    raise RuntimeError(f'{tool} --help failed:\n{run.stdout}{run.stderr}')
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return wall, cpu


def main(argv=None) -> None:
  args = parse_args(argv)
  rows = []
  for tool in args.tools:
    time_help(tool)  # untimed: the file-system cache
    times = [time_help(tool) for _ in range(args.repeats)]
    wall = statistics.median(t[0] for t in times)
    cpu = statistics.median(t[1] for t in times)
    rows.append({'tool': tool, 'wall_seconds': wall, 'cpu_seconds': cpu})
    print(f'{tool:18s} wall {wall:5.2f} s  CPU {cpu:5.2f} s', flush=True)
  result = {
    'command': 'python benchmarks/cli_help.py ' + ' '.join(sys.argv[1:]),
    'date': datetime.datetime.now().isoformat(timespec='seconds'),
    'machine': platform.processor() or platform.machine(),
    'cpu_cores': os.cpu_count(),
    'python': platform.python_version(),
    'repeats': args.repeats,
    'target_seconds': TARGET_SECONDS,
    'rows': rows,
  }
  out = pathlib.Path(args.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'cli_help.json').write_text(json.dumps(result, indent=2) + '\n')
  lines = [
    '# `--help` of every command-line tool',
    '',
    f'{result["date"]}; `{result["command"]}`; {result["cpu_cores"]} CPU '
    f'cores; median of {args.repeats} fresh processes.',
    '',
    '| tool | wall (s) | CPU (s) |',
    '|---|---:|---:|',
    *(
      f'| {r["tool"]} | {r["wall_seconds"]:.2f} | {r["cpu_seconds"]:.2f} |'
      for r in rows
    ),
    '',
  ]
  (out / 'cli_help.md').write_text('\n'.join(lines))
  slow = [r['tool'] for r in rows if r['wall_seconds'] >= TARGET_SECONDS]
  print('over the target:', slow or 'none')


if __name__ == '__main__':
  main()
