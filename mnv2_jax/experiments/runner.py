"""Running a sweep's points: each through the normal entry point (`python
-m mnv2_jax.main`), in a process of its own, in `<workdir>/<point name>/`.

A point whose `point.json` exists is finished and skipped; any other point is
(re)started, and `main` resumes it from its latest checkpoint. A run
evaluates its eval split (the built-in sets: 'validation', where settings are
chosen) during training and its test split once, at the end; `point.json`
holds both final evaluations.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shlex
import statistics as stats_lib
import subprocess
import threading
import time
from typing import Any
from typing import Optional
from typing import Sequence

from mnv2_jax.experiments import points as sweep_points
from mnv2_jax.training import metric_writers
from mnv2_jax.training import provenance

RESULT_FILE = 'point.json'


# What sweeps before the test split wrote (the trainer's run record now has
# this name): read when a point has no RESULT_FILE, never written.
LEGACY_RESULT_FILE = 'result.json'


def _load_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as error:
    raise ValueError(
      f'{path} is not valid JSON ({error}). Delete it to train that point '
      'again (its checkpoints are kept and it resumes from the last one).'
    ) from error


def read_point_result(point_dir: str) -> Optional[dict]:
  """The point's result, or None while it is unfinished."""
  path = os.path.join(point_dir, RESULT_FILE)
  if os.path.exists(path):
    return _load_json(path)
  legacy = os.path.join(point_dir, LEGACY_RESULT_FILE)
  if os.path.exists(legacy):
    result = _load_json(legacy)
    if 'overrides' in result:  # a sweep's, not the trainer's run record
      return result
  return None


def is_finished(workdir: str, overrides: dict[str, Any]) -> bool:
  point_dir = os.path.join(workdir, sweep_points.point_name(overrides))
  return read_point_result(point_dir) is not None


def final_evaluations(records: Sequence[dict]) -> dict[str, dict]:
  """The evaluation records (not 'train') of the last evaluated step, by
  split, in the order written: the eval split, then the test split if the
  run has one."""
  evaluations = [r for r in records if r.get('split') != 'train']
  if not evaluations:
    return {}
  last = evaluations[-1]['step']
  return {r['split']: r for r in evaluations if r['step'] == last}


def final_evaluation(records: Sequence[dict]) -> Optional[dict]:
  """The record a sweep reports: the last one written at the last step (the
  test split's when the run has one)."""
  finals = final_evaluations(records)
  return list(finals.values())[-1] if finals else None


def curve_split(records: Sequence[dict]) -> Optional[str]:
  """The split evaluated during training (the first evaluation's)."""
  return next((r['split'] for r in records if r.get('split') != 'train'), None)


def point_environment(
  jobs: int,
  memory_fraction: Optional[float] = None,
  environ: Optional[dict[str, str]] = None,
) -> dict[str, str]:
  """The environment of each point's process when `jobs` share a machine.

  On a GPU, JAX would otherwise take 75% of the card's memory in the first
  process that starts, and the next ones would fail: each process gets
  `memory_fraction` of it (default 0.9 / jobs) and allocates on demand
  (no preallocation). A setting the user made in the environment stays.
  CPU runs ignore both.
  """
  env = dict(os.environ if environ is None else environ)
  if jobs > 1 or memory_fraction is not None:
    fraction = 0.9 / jobs if memory_fraction is None else memory_fraction
    if not 0.0 < fraction <= 1.0:
      raise ValueError(
        f'memory_fraction must be in (0, 1], got {fraction}: give '
        '--memory_fraction with --jobs so that jobs x fraction <= 1.'
      )
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    env.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', f'{fraction:.3f}')
  return env


def run_point(
  config_argument: str,
  workdir: str,
  overrides: dict[str, Any],
  env: Optional[dict[str, str]] = None,
) -> dict:
  """Trains (or resumes) one point and writes its point.json."""
  point_dir = os.path.join(workdir, sweep_points.point_name(overrides))
  os.makedirs(point_dir, exist_ok=True)
  command = sweep_points.point_command(config_argument, workdir, overrides)
  start = time.time()
  with open(os.path.join(point_dir, 'log.txt'), 'a') as log:
    log.write('$ ' + ' '.join(shlex.quote(c) for c in command) + '\n')
    log.flush()
    returncode = subprocess.run(
      command, stdout=log, stderr=subprocess.STDOUT, check=False, env=env
    ).returncode
  if returncode:
    with open(os.path.join(point_dir, 'log.txt')) as log:
      tail = ''.join(log.readlines()[-15:])
    raise RuntimeError(
      f'{sweep_points.point_name(overrides)} failed (exit {returncode}); '
      f'the end of {point_dir}/log.txt:\n{tail}'
    )
  records = metric_writers.read_jsonl(point_dir)
  final = final_evaluation(records)
  if final is None:
    raise RuntimeError(
      f'{sweep_points.point_name(overrides)} exited without an evaluation '
      f'in {point_dir}/metrics.jsonl.'
    )
  result = {
    'overrides': overrides,
    'final': final,
    'final_by_split': final_evaluations(records),
    'wall_seconds_last_attempt': time.time() - start,
  }
  # Atomic (a temporary file renamed): a report taken while other points
  # run never reads half a file.
  provenance.write(os.path.join(point_dir, RESULT_FILE), result)
  return result


def run_all(
  config_argument: str,
  workdir: str,
  points: Sequence[dict],
  metric: str,
  jobs: int = 1,
  say=print,
  memory_fraction: Optional[float] = None,
) -> list[str]:
  """Trains every unfinished point, `jobs` at a time (each its own
  process, sharing the machine: `point_environment`), reporting progress
  and an ETA through `say(line)`. Returns the names of the points that
  failed."""
  todo = [p for p in points if not is_finished(workdir, p)]
  env = point_environment(jobs, memory_fraction)
  say(
    f'{len(points)} points, {len(points) - len(todo)} finished, '
    f'{len(todo)} to run in {workdir}.'
  )
  failures = []
  done_seconds: list[float] = []
  lock = threading.Lock()

  def run(numbered):
    number, overrides = numbered
    name = sweep_points.point_name(overrides)
    say(f'[{number}/{len(todo)}] {name} ...')
    try:
      result = run_point(config_argument, workdir, overrides, env)
    except RuntimeError as e:
      say(f'  [{number}] FAILED: {e}')
      with lock:
        failures.append(name)
      return
    with lock:
      done_seconds.append(result['wall_seconds_last_attempt'])
      done = len(done_seconds) + len(failures)
      remaining = len(todo) - done
      # Points of one sweep take about as long as each other; `jobs` run
      # at once.
      eta = stats_lib.fmean(done_seconds) * remaining / jobs
    say(
      f'  [{number}] {metric} {result["final"][metric]:.4f} in '
      f'{result["wall_seconds_last_attempt"]:.0f} s; {done} of {len(todo)} '
      f'done, {remaining} to go, ETA {_duration(eta)}'
    )

  # Each point is a subprocess, so threads suffice to keep `jobs` running.
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    list(pool.map(run, enumerate(todo, 1)))
  return failures


def _duration(seconds: float) -> str:
  minutes = round(seconds / 60)
  return (
    f'{minutes // 60} h {minutes % 60:02d} min'
    if minutes >= 60
    else (f'{minutes} min' if minutes else f'{seconds:.0f} s')
  )
