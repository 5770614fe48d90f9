"""Test setup: CPU only, quiet TensorFlow, the repository importable."""

import importlib.metadata
import os
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
# go first (xdist hands each worker two files, then one as each finishes), and
# the SIGKILL test's subprocesses come after test_reliability on the same
# worker, so that they find the tiny classifier's programs (the same config,
# tests/test_train.py's tiny_digits_config) in the compilation cache.
_SLOWEST_FILES_FIRST = (
  'test_multihost',
  'test_peers',
  'test_reliability',
  'test_ssd',
  'test_kill_resume',
  'test_train',
  'test_learning',
  'test_model',
  'test_convert',
  'test_deeplab',
  'test_predict',
  'test_compilation_cache',
  'test_benchmarks',
  'test_pipeline_pins',
  'test_stats',
  'test_layers',
  'test_imagenet',
  'test_imagenet_paths',
  'test_paper_tables',
  'test_config_fuzz',
)


def pytest_collection_modifyitems(items):
  def rank(item):
    name = item.module.__name__ if item.module else ''
    return (
      _SLOWEST_FILES_FIRST.index(name)
      if name in _SLOWEST_FILES_FIRST
      else len(_SLOWEST_FILES_FIRST)
    )

  items.sort(key=rank)  # stable: a file's own order is kept
