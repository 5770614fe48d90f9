"""SIGKILL anywhere, resume, same result: the CI variant (2 kills: one
during a checkpoint's save, one at any moment) of tests/kill_resume.py, whose
docstring describes the harness (its default run kills 25 times)."""

import os
import subprocess
import time

import jax
import kill_resume

STEPS = 20  # checkpoints at 5, 10, 15, 20


def test_sigkills_resume_to_the_uninterrupted_result(tmp_path):
  reference = str(tmp_path / 'uninterrupted')
  killed = str(tmp_path / 'killed')
  # The suite's compilation cache (tests/conftest.py): the runs' programs are
  # those of test_train.py's tiny_digits_config, compiled by earlier tests.
  cache = jax.config.jax_compilation_cache_dir
  os.makedirs(reference)
  start = time.monotonic()
  subprocess.run(
    kill_resume.command(reference, STEPS),
    cwd=kill_resume.REPO_ROOT,
    env=kill_resume.environment(cache),
    check=True,
    stdout=subprocess.DEVNULL,
    preexec_fn=kill_resume.one_core,
  )
  kills, comparisons = kill_resume.run_with_kills(
    killed,
    reference,
    2,
    seed=1,
    cache_dir=cache,
    typical_seconds=time.monotonic() - start,
    steps=STEPS,
    preexec_fn=kill_resume.one_core,
  )
  # The kinds in KILL_KINDS' order: during a save, then at any moment.
  assert [k.kind for k in kills] == list(kill_resume.KILL_KINDS[:2])
  assert kills[0].during_save
  assert comparisons, 'no run completed'
  for comparison in comparisons:
    assert comparison['final_step'] == (STEPS, STEPS)
    assert comparison['final_metrics_equal'], comparison['final_metrics']
    assert comparison['arrays_unequal'] == 0
    assert comparison['train_losses_equal']
