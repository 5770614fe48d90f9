"""SIGKILL anywhere, resume, same result: the CI variant (3 kills) of
tests/kill_resume.py, whose docstring describes the harness."""

import os
import subprocess
import time

import jax
import kill_resume

STEPS = 20  # checkpoints at 5, 10, 15, 20


def test_three_sigkills_resume_to_the_uninterrupted_result(tmp_path):
  reference = str(tmp_path / 'uninterrupted')
  killed = str(tmp_path / 'killed')
  # The suite's compilation cache (tests/conftest.py): the runs' programs are
  # those of test_train.py's tiny_digits_config, compiled by earlier tests.
  cache = jax.config.jax_compilation_cache_dir
  os.makedirs(reference)
  start = time.monotonic()
  subprocess.run(
    kill_resume.command(reference, STEPS, kill_resume.SUITE_NETWORK),
    cwd=kill_resume.REPO_ROOT,
    env=kill_resume.environment(cache),
    check=True,
    stdout=subprocess.DEVNULL,
    preexec_fn=kill_resume.one_core,
  )
  kills, comparisons = kill_resume.run_with_kills(
    killed,
    reference,
    3,
    seed=1,
    cache_dir=cache,
    typical_seconds=time.monotonic() - start,
    steps=STEPS,
    network=kill_resume.SUITE_NETWORK,
    preexec_fn=kill_resume.one_core,
  )
  # One of each kind: anytime, after the first step, during a save.
  assert [k.kind for k in kills] == list(kill_resume.KILL_KINDS)
  assert kills[2].during_save
  assert comparisons, 'no run completed'
  for comparison in comparisons:
    assert comparison['final_step'] == (STEPS, STEPS)
    assert comparison['final_metrics_equal'], comparison['final_metrics']
    assert comparison['arrays_unequal'] == 0
    assert comparison['train_losses_equal']
