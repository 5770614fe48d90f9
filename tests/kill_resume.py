r"""Kill-anywhere: SIGKILL a training run at random moments, restart it each
time, and compare the end with an uninterrupted run of the same seed.

  python tests/kill_resume.py --kills 25 --workdir /tmp/kill_resume

The run is configs/quickstart.py shrunk to 60 steps of α = 0.35 (20 steps
of MobileNetV1 0.25 in CI) with a checkpoint every 5 steps (`OVERRIDES`). Kill moments cycle through three
kinds: any time after launch (start-up, compilation, training, evaluation),
a random time after the first training step, and the moment a checkpoint's
temporary directory appears (a save in progress). After the last kill the
run is left to finish. Compared with the uninterrupted run: the final test
metrics, every parameter and BatchNorm statistic (bitwise), and the
(step, loss) sequence in metrics.jsonl. tests/test_kill_resume.py runs a
3-kill version in CI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The harness's network (the committed 25-kill run's), and the suite's:
# MobileNetV1 0.25, tests/helpers.py's tiny_digits_config, whose programs
# the CI variant then finds in the suite's compilation cache.
NETWORK = ('--config.model.width_multiplier=0.35',)
SUITE_NETWORK = (
  '--config.model.architecture=mobilenet_v1',
  '--config.model.width_multiplier=0.25',
)
OVERRIDES = (
  '--config.batch_size=16',
  '--config.eval_batch_size=120',
  '--config.checkpoint_every_steps=5',
  '--config.keep_checkpoints=2',
  '--config.log_every_steps=5',
  '--config.warmup_epochs=0',
  '--config.lr_schedule=exponential',
  '--config.eval_every_epochs=1000',
  '--config.base_learning_rate=0.01',
)
KILL_KINDS = ('anytime', 'training', 'saving')


def command(
  workdir: str, steps: int = 60, network: tuple[str, ...] = NETWORK
) -> list[str]:
  return [
    sys.executable,
    '-m',
    'mnv2_jax.main',
    f'--config={REPO_ROOT}/configs/quickstart.py',
    f'--workdir={workdir}',
    *network,
    *OVERRIDES,
    f'--config.num_train_steps={steps}',
  ]


def one_core() -> None:
  """preexec_fn: the run on one CPU core, so that the CI variant leaves the
  other to the test worker beside it."""
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def environment(cache_dir: str | None) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('MNV2_JAX_COMPILATION_CACHE', None)
  if cache_dir:  # restarts skip recompilation
    env.update(
      JAX_COMPILATION_CACHE_DIR=cache_dir,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    )
  else:  # every restart compiles, as on a machine without the cache
    env['MNV2_JAX_COMPILATION_CACHE'] = 'off'
  return env


def _temporary_steps(workdir: str) -> set[str]:
  """Orbax's temporary step directories: a save in progress, or one that a
  kill interrupted (the next save of that step removes it)."""
  try:
    return {
      name
      for name in os.listdir(os.path.join(workdir, 'checkpoints'))
      if 'tmp' in name
    }
  except OSError:
    return set()


@dataclasses.dataclass
class Kill:
  kind: str
  seconds_after_launch: float
  during_save: bool
  steps_logged_before: int


def _logged_steps(log_path: str) -> int:
  with open(log_path, errors='replace') as f:
    return sum(1 for line in f if line.startswith('step '))


def run_with_kills(
  workdir: str,
  reference: str,
  kills: int,
  *,
  seed: int = 0,
  cache_dir: str | None = None,
  max_wait: float = 600.0,
  typical_seconds: float = 20.0,
  steps: int = 60,
  network: tuple[str, ...] = NETWORK,
  preexec_fn=None,
  log=print,
) -> tuple[list[Kill], list[dict[str, object]]]:
  """Runs the training in `workdir`, SIGKILLing it `kills` times, then lets
  it finish. Each time a run completes, compares it with the uninterrupted
  run in `reference` (a launch that finishes before its kill moment came
  completes early: it is compared, and the workdir started afresh).
  Returns what each kill hit and the comparisons."""
  rng = random.Random(seed)
  os.makedirs(workdir, exist_ok=True)
  log_path = os.path.join(workdir, 'kill_resume.log')
  done: list[Kill] = []
  comparisons = []
  typical = typical_seconds  # from launch to the end of an undisturbed run
  while True:
    kind = (
      KILL_KINDS[len(done) % len(KILL_KINDS)] if len(done) < kills else None
    )
    with open(log_path, 'a') as log_file:
      launched = time.monotonic()
      steps_before = _logged_steps(log_path)
      leftovers = _temporary_steps(workdir)  # from an earlier kill
      saving = lambda: bool(_temporary_steps(workdir) - leftovers)
      process = subprocess.Popen(
        command(workdir, steps, network),
        cwd=REPO_ROOT,
        env=environment(cache_dir),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec_fn,
      )
    if kind is None:
      if process.wait(timeout=max_wait) != 0:
        raise RuntimeError(f'the final run failed: see {log_path}')
      comparisons.append(compare(reference, workdir))
      return done, comparisons
    deadline = launched + max_wait
    if kind == 'anytime':
      delay = rng.uniform(0.5, typical / 2)  # before a restart could finish
      trigger = lambda: time.monotonic() - launched >= delay
    elif kind == 'training':
      delay = rng.uniform(0.0, 3.0)
      first = []

      def trigger():
        if not first and _logged_steps(log_path) > steps_before:
          first.append(time.monotonic())
        return bool(first) and time.monotonic() - first[0] >= delay
    else:
      trigger = saving
    while process.poll() is None and not trigger():
      if time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f'no kill moment ({kind}) within {max_wait} s')
      time.sleep(0.002)
    if process.poll() is not None:
      if process.returncode != 0:
        raise RuntimeError(f'a run failed on its own: see {log_path}')
      typical = time.monotonic() - launched
      comparisons.append(compare(reference, workdir))
      log(
        f'the run completed before a {kind} kill ({typical:.1f} s from '
        'its launch); compared, starting afresh'
      )
      _reset(workdir)
      continue
    during_save = saving()
    process.send_signal(signal.SIGKILL)
    process.wait()
    done.append(
      Kill(
        kind,
        time.monotonic() - launched,
        during_save,
        _logged_steps(log_path) - steps_before,
      )
    )
    log(
      f'kill {len(done)}/{kills} ({kind}) {done[-1].seconds_after_launch:.1f}'
      f' s after launch, {done[-1].steps_logged_before} log lines in, '
      f'during a save: {during_save}'
    )


def _reset(workdir: str) -> None:
  """Removes a run's outputs (not the log) so the next launch starts fresh."""
  import shutil

  for name in os.listdir(workdir):
    if name != 'kill_resume.log':
      path = os.path.join(workdir, name)
      if os.path.isdir(path):
        shutil.rmtree(path)
      else:
        os.remove(path)


def same_result(comparison: dict[str, object]) -> bool:
  return bool(
    comparison['final_metrics_equal']
    and not comparison['arrays_unequal']
    and comparison['train_losses_equal']
  )


def compare(reference: str, resumed: str) -> dict[str, object]:
  """Final metrics, parameters and the train-loss sequence of two workdirs."""
  import jax
  import numpy as np

  from mnv2_jax.training import checkpointing
  from mnv2_jax.training import metric_writers

  def summary(workdir):
    lines = metric_writers.read_jsonl(workdir)
    final = [l for l in lines if l['split'] == 'test'][-1]
    train = [(l['step'], l['loss']) for l in lines if l['split'] == 'train']
    step, variables = checkpointing.read_variables(workdir)
    return final, train, step, variables

  final_a, train_a, step_a, vars_a = summary(reference)
  final_b, train_b, step_b, vars_b = summary(resumed)
  leaves_a, leaves_b = jax.tree.leaves(vars_a), jax.tree.leaves(vars_b)
  unequal = sum(not np.array_equal(a, b) for a, b in zip(leaves_a, leaves_b))
  keys = ('top1', 'top5', 'loss', 'num_examples')
  return {
    'final_step': (step_a, step_b),
    'final_metrics_equal': all(final_a[k] == final_b[k] for k in keys),
    'final_metrics': {k: (final_a[k], final_b[k]) for k in keys},
    'arrays': len(leaves_a),
    'arrays_unequal': unequal + abs(len(leaves_a) - len(leaves_b)),
    'train_losses_equal': train_a == train_b,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--kills', type=int, default=25)
  parser.add_argument('--workdir', default='/tmp/kill_resume')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
    '--result_file',
    default=None,
    help='also write the summary, every kill, the command, machine, date '
    'and versions to this JSON file (experiments/results/reliability/...)',
  )
  args = parser.parse_args()
  import shutil

  shutil.rmtree(args.workdir, ignore_errors=True)
  reference = os.path.join(args.workdir, 'uninterrupted')
  killed = os.path.join(args.workdir, 'killed')
  cache = os.path.join(args.workdir, 'compilation_cache')
  os.makedirs(reference)
  start = time.monotonic()
  subprocess.run(
    command(reference),
    cwd=REPO_ROOT,
    env=environment(cache),
    check=True,
    stdout=subprocess.DEVNULL,
  )
  typical = time.monotonic() - start
  print(f'uninterrupted run: {typical:.1f} s')
  kills, comparisons = run_with_kills(
    killed,
    reference,
    args.kills,
    seed=args.seed,
    cache_dir=cache,
    typical_seconds=typical,
  )
  survived = all(same_result(c) for c in comparisons)
  summary = {
    'kills': len(kills),
    'kills_during_save': sum(k.during_save for k in kills),
    'kills_before_first_step': sum(not k.steps_logged_before for k in kills),
    'kills_by_kind': {
      kind: sum(k.kind == kind for k in kills) for kind in KILL_KINDS
    },
    'completed_runs_compared': len(comparisons),
    'every_completed_run_equal_bitwise': survived,
    'uninterrupted_run_seconds': typical,
    'comparisons': comparisons,
  }
  print(json.dumps(summary, indent=1))
  if args.result_file:
    from mnv2_jax.training import provenance

    provenance.write(
      args.result_file,
      provenance.record(
        'python tests/kill_resume.py ' + ' '.join(sys.argv[1:]),
        **summary,
        kill_log=[dataclasses.asdict(k) for k in kills],
        steps=60,
        overrides=list(OVERRIDES),
      ),
    )
    print(f'Wrote {args.result_file}.')
  print(
    f'SIGKILL x {len(kills)} ({sum(k.during_save for k in kills)} during '
    f'a save): '
    + (
      'every completed run equals the uninterrupted one bitwise'
      if survived
      else 'A RUN DIFFERED'
    )
  )
  sys.exit(0 if survived else 1)


if __name__ == '__main__':
  main()
