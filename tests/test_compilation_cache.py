"""The persistent compilation cache: where it goes, and that a second run of
the same command loads its programs instead of compiling them."""

import os
import re
import subprocess

import kill_resume  # tests/kill_resume.py: the tiny digits run's command

from mnv2_jax.training import compilation_cache
from mnv2_jax.training import metric_writers


def test_cache_directory_settings():
  home = {'HOME': '/home/u'}
  default = '/home/u/.cache/mnv2_jax/jax_compilation_cache'
  assert compilation_cache.directory_for('auto', home) == default
  assert compilation_cache.directory_for(
    'auto', {**home, 'XDG_CACHE_HOME': '/x'}
  ) == ('/x/mnv2_jax/jax_compilation_cache')
  assert compilation_cache.directory_for(
    'auto', {**home, compilation_cache.ENVIRONMENT_VARIABLE: '/fast'}
  ) == ('/fast')
  for off in ('', 'off', 'OFF', 'none'):
    assert compilation_cache.directory_for(off, home) is None
    assert (
      compilation_cache.directory_for(
        'auto', {**home, compilation_cache.ENVIRONMENT_VARIABLE: off}
      )
      is None
    )
  assert compilation_cache.directory_for('/my/cache', home) == '/my/cache'
  assert compilation_cache.directory_for('gs://b/c', home) == 'gs://b/c'


def _cache_line(output: str) -> tuple[int, int]:
  match = re.search(
    r'First step done [\d.]+ s after start \(compilation '
    r'cache: (\d+) programs loaded, (\d+) compiled\)',
    output,
  )
  assert match, output[-2000:]
  return int(match.group(1)), int(match.group(2))


def test_second_run_loads_its_programs_from_the_cache(tmp_path):
  cache = str(tmp_path / 'cache')
  env = kill_resume.environment(None)
  env[compilation_cache.ENVIRONMENT_VARIABLE] = cache
  # Every program written, however fast it compiles: the counts below do
  # not then depend on compile times near the threshold.
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  results = []
  for run in ('first', 'second'):
    workdir = str(tmp_path / run)
    output = subprocess.run(
      kill_resume.command(workdir, 2, kill_resume.SUITE_NETWORK),
      cwd=kill_resume.REPO_ROOT,
      env=env,
      check=True,
      capture_output=True,
      text=True,
    ).stdout
    assert f'compilation cache: {cache}' in output
    results.append(
      (
        _cache_line(output),
        [l for l in metric_writers.read_jsonl(workdir) if l['split'] == 'test'][
          -1
        ],
      )
    )
  (first_loaded, first_compiled), first_metrics = results[0]
  (second_loaded, second_compiled), second_metrics = results[1]
  # Before the first step: the state's creation, the training step and the
  # small programs of eager operations; all of them loaded the second time.
  assert first_loaded == 0 and first_compiled >= 2
  assert second_compiled == 0 and second_loaded == first_compiled
  assert os.listdir(cache)
  # A loaded program computes what the compiled one did, to the last bit.
  assert second_metrics == first_metrics
