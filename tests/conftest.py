"""Test setup: CPU only, quiet TensorFlow, the repository importable."""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The suite is dominated by XLA compiling small programs that then run for
# milliseconds: LLVM's -O0 halves the compile time (the init of the tiny
# SSDLite: 26 s -> 14 s). Set before jax is imported; the subprocesses of the
# tests (tests/kill_resume.py) inherit it.
os.environ.setdefault('XLA_FLAGS', '--xla_backend_optimization_level=0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

# Many tests build the same small networks; a persistent compilation cache
# compiles each program once per session instead of once per test.
_CACHE_DIR = os.path.join(REPO_ROOT, '.pytest_cache', 'jax_compilation_cache')
jax.config.update('jax_compilation_cache_dir', _CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture
def small_scenes(monkeypatch):
  """The built-in scenes with 48 train and 16 test scenes instead of 2,000 and
  200 (generating the full train split takes ~10 s): enough for the batching
  tests, which need several batches, not the whole set."""
  from mnv2_jax import scenes  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(scenes, 'SPLIT_SIZES', {'train': 48, 'test': 16})
  scenes.load_split.cache_clear()
  yield
  scenes.load_split.cache_clear()
