r"""How long a run takes to reach its first training step: cold, warm, resumed.

  python benchmarks/startup.py                       # the digits quickstart
  python benchmarks/startup.py --config configs/quickstart.py --steps 60

Runs `python -m mnv2_jax.main` three times with a compilation cache of its
own, and reads the log's "First step done X s after start" line (time from
the command's start, the malloc restart included, to the end of the first
step):

  * cold: an empty compilation cache, a new workdir (every program compiled);
  * warm: the same config again in a new workdir (the programs come from the
    cache);
  * resumed: a run killed (SIGKILL) after its first checkpoint, started again
    with the same command (restore, then the next step).

Writes benchmarks/results/startup_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
FIRST_STEP = re.compile(
  r'First step done ([\d.]+) s after start \(compilation '
  r'cache: (?:(\d+) programs loaded, (\d+) compiled|off)'
)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--config', default=str(REPO_ROOT / 'configs' / 'quickstart.py')
  )
  parser.add_argument(
    '--steps',
    type=int,
    default=60,
    help='training steps per run (checkpoint every 20)',
  )
  parser.add_argument(
    '--device',
    default=None,
    help="name for the results file (default: 'cpu' or "
    'the GPU nvidia-smi reports)',
  )
  parser.add_argument(
    '--out_dir', default=str(REPO_ROOT / 'benchmarks' / 'results')
  )
  parser.add_argument('--timeout', type=float, default=600)
  return parser.parse_args(argv)


def command(args, workdir: str, cache: str) -> list[str]:
  return [
    sys.executable,
    '-m',
    'mnv2_jax.main',
    f'--config={args.config}',
    f'--workdir={workdir}',
    f'--config.num_train_steps={args.steps}',
    '--config.checkpoint_every_steps=20',
    '--config.log_every_steps=20',
    f'--config.compilation_cache_dir={cache}',
  ]


def environment() -> dict[str, str]:
  env = dict(os.environ)
  env.pop('MNV2_JAX_COMPILATION_CACHE', None)  # the flag above decides
  env['PYTHONPATH'] = str(REPO_ROOT) + os.pathsep + env.get('PYTHONPATH', '')
  return env


def first_step(output: str) -> dict:
  match = FIRST_STEP.search(output)
  if not match:
    raise RuntimeError(
      'no "First step done" line in the output:\n' + output[-3000:]
    )
  seconds, loaded, compiled = match.groups()
  return {
    'seconds_to_first_step': float(seconds),
    'programs_loaded': int(loaded or 0),
    'programs_compiled': int(compiled or 0),
  }


def timed_run(args, workdir: str, cache: str) -> dict:
  start = time.perf_counter()
  result = subprocess.run(
    command(args, workdir, cache),
    cwd=REPO_ROOT,
    env=environment(),
    capture_output=True,
    text=True,
    timeout=args.timeout,
    check=True,
  )
  return {
    **first_step(result.stdout),
    'wall_seconds': time.perf_counter() - start,
  }


def killed_after_first_checkpoint(args, workdir: str, cache: str) -> None:
  """Starts the run and SIGKILLs it once its first checkpoint is written."""
  process = subprocess.Popen(
    command(args, workdir, cache),
    cwd=REPO_ROOT,
    env=environment(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  saved = pathlib.Path(workdir) / 'checkpoints' / '20'
  deadline = time.monotonic() + args.timeout
  while not saved.is_dir() and process.poll() is None:
    if time.monotonic() > deadline:
      process.kill()
      raise RuntimeError('no checkpoint within the time limit')
    time.sleep(0.05)
  time.sleep(0.5)  # let Orbax finish the step's files
  process.send_signal(signal.SIGKILL)
  process.wait()


def device_name(args) -> str:
  if args.device:
    return args.device
  if shutil.which('nvidia-smi'):
    try:
      name = subprocess.run(
        ['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
        capture_output=True,
        text=True,
        check=True,
      ).stdout.splitlines()[0]
      return re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')
    except (OSError, subprocess.SubprocessError, IndexError):
      pass
  return 'cpu'


def main(argv=None) -> int:
  args = parse_args(argv)
  device = device_name(args)
  rows = {}
  with tempfile.TemporaryDirectory() as scratch:
    cache = os.path.join(scratch, 'cache')
    rows['cold'] = timed_run(args, os.path.join(scratch, 'cold'), cache)
    print('cold', rows['cold'], flush=True)
    rows['warm'] = timed_run(args, os.path.join(scratch, 'warm'), cache)
    print('warm', rows['warm'], flush=True)
    resumed = os.path.join(scratch, 'resumed')
    killed_after_first_checkpoint(args, resumed, cache)
    rows['resumed'] = timed_run(args, resumed, cache)
    print('resumed', rows['resumed'], flush=True)
  date = datetime.datetime.now().isoformat(timespec='seconds')
  cmd = 'python benchmarks/startup.py' + ''.join(
    f' {a}' for a in (sys.argv[1:] if argv is None else argv)
  )
  out = pathlib.Path(args.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / f'startup_{device}.json').write_text(
    json.dumps(
      {
        'date': date,
        'command': cmd,
        'device': device,
        'platform': platform.platform(),
        'cores': os.cpu_count(),
        'config': args.config,
        'steps': args.steps,
        'runs': rows,
      },
      indent=2,
    )
    + '\n'
  )
  lines = [
    f'# Start-up: seconds to the first training step ({device})',
    '',
    f'{date}; `{cmd}`; {os.cpu_count()} CPU cores; '
    f'{pathlib.Path(args.config).name}, {args.steps} steps.',
    '',
    '| run | first step after (s) | programs loaded / compiled | wall (s) |',
    '|---|---:|---:|---:|',
  ]
  for name, row in rows.items():
    lines.append(
      f'| {name} | {row["seconds_to_first_step"]:.1f} '
      f'| {row["programs_loaded"]} / {row["programs_compiled"]} '
      f'| {row["wall_seconds"]:.1f} |'
    )
  (out / f'startup_{device}.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  return 0


if __name__ == '__main__':
  sys.exit(main())
