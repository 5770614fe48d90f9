"""Test setup: CPU only, quiet TensorFlow, the repository importable."""

import datetime
import importlib.metadata
import json
import os
import resource
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The suite is dominated by XLA compiling small programs that then run for
# milliseconds: LLVM's -O0 halves the compile time (the init of the tiny
# SSDLite: 26 s -> 14 s), and XLA:CPU's older loop emitters in place of its
# fusion emitters take another third off (the tiny classifier's train step:
# 21 s -> 14 s, the same loss to the last bit). Set before jax is imported;
# the subprocesses of the tests (tests/kill_resume.py) inherit it.
# (XLA 0.11 and later no longer have the old emitters, nor the flag.)
_OLD_EMITTERS = tuple(
  int(part) for part in importlib.metadata.version('jaxlib').split('.')[:2]
) < (0, 11)
# Flags given by the user come after ours (XLA reads the last of a repeated
# flag): e.g. XLA_FLAGS="--xla_cpu_max_isa=AVX2
# --xla_cpu_experimental_ynn_fusion_type=" runs the suite without AVX-512
# (docs/development.md).
_TEST_XLA_FLAGS = '--xla_backend_optimization_level=0' + (
  ' --xla_cpu_use_fusion_emitters=false' if _OLD_EMITTERS else ''
)
if _TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
    f'{_TEST_XLA_FLAGS} {os.environ.get("XLA_FLAGS", "")}'.strip()
  )
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import jax  # noqa: E402 (after XLA_FLAGS)

# Many tests build the same small networks; a persistent compilation cache
# compiles each program once per session instead of once per test.
_CACHE_DIR = os.path.join(REPO_ROOT, '.pytest_cache', 'jax_compilation_cache')
jax.config.update('jax_compilation_cache_dir', _CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
# Commands the tests start (`python -m mnv2_jax.main`, the sweeps) use it too,
# instead of the user's own cache (mnv2_jax/training/compilation_cache.py).
os.environ.setdefault('MNV2_JAX_COMPILATION_CACHE', _CACHE_DIR)


import pytest  # noqa: E402


@pytest.fixture
def small_scenes(monkeypatch):
  """The built-in scenes with 48 train and 16 test scenes instead of 2,000 and
  200 (generating the full train split takes ~10 s): enough for the batching
  tests, which need several batches, not the whole set."""
  from mnv2_jax.data import scenes

  monkeypatch.setattr(
    scenes, 'SPLIT_SIZES', {'train': 48, 'validation': 16, 'test': 16}
  )
  scenes.load_split.cache_clear()
  yield
  scenes.load_split.cache_clear()


# pytest.ini runs each test file on one of two workers (--dist loadfile), in
# the order below: a file's tests share compiled programs and module fixtures,
# which `--dist load` would compile on both workers at once. The slowest files
# go first (xdist hands each worker two files, then one as each finishes), by
# their measured CPU times in tests/durations.json (robust to a busy machine,
# unlike wall times); files not in it go last.
# MNV2_JAX_RECORD_DURATIONS=1 python -m pytest tests rewrites that file from
# the run: each file's wall time (setup, call and teardown of its tests) and
# CPU time (the test processes' and their subprocesses').
DURATIONS_FILE = os.path.join(REPO_ROOT, 'tests', 'durations.json')
RECORD_DURATIONS = 'MNV2_JAX_RECORD_DURATIONS'


def _measured_durations() -> dict:
  try:
    with open(DURATIONS_FILE) as f:
      return json.load(f)['files']
  except (OSError, ValueError, KeyError):
    return {}


def pytest_collection_modifyitems(items):
  seconds = _measured_durations()

  def rank(item):
    path = os.path.relpath(str(item.path), REPO_ROOT)
    measured = seconds.get(path, {}).get('cpu_seconds')
    return (0, -measured) if measured is not None else (1, 0.0)

  items.sort(key=rank)  # stable: a file's own order is kept


def _cpu_seconds() -> float:
  """CPU time of this process and its finished subprocesses."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(phase: str):
  @pytest.hookimpl(hookwrapper=True)
  def hook(item):
    started = _cpu_seconds()
    yield
    item.user_properties.append(
      (f'cpu_seconds_{phase}', _cpu_seconds() - started)
    )

  return hook


pytest_runtest_setup = _timed('setup')
pytest_runtest_call = _timed('call')
pytest_runtest_teardown = _timed('teardown')

_RECORDED: dict[str, dict[str, float]] = {}


def pytest_runtest_logreport(report):
  """On the controller: each test phase's wall and CPU seconds, by file."""
  path = report.nodeid.split('::')[0]
  entry = _RECORDED.setdefault(
    path, {'wall_seconds': 0.0, 'cpu_seconds': 0.0, 'tests': 0}
  )
  entry['wall_seconds'] += report.duration
  entry['cpu_seconds'] += sum(
    value
    for key, value in report.user_properties
    if key == f'cpu_seconds_{report.when}'
  )
  if report.when == 'call':
    entry['tests'] += 1


def pytest_sessionfinish(session, exitstatus):
  del exitstatus
  worker = hasattr(session.config, 'workerinput')
  if worker or not os.environ.get(RECORD_DURATIONS) or not _RECORDED:
    return
  files = {
    path: {key: round(value, 1) for key, value in entry.items()}
    for path, entry in sorted(
      _RECORDED.items(), key=lambda item: -item[1]['wall_seconds']
    )
  }
  record = {
    'command': f'{RECORD_DURATIONS}=1 python -m pytest '
    + ' '.join(session.config.invocation_params.args),
    'date': datetime.date.today().isoformat(),
    'cpu_cores': os.cpu_count(),
    'files': files,
  }
  with open(DURATIONS_FILE, 'w') as f:
    json.dump(record, f, indent=2)
    f.write('\n')
