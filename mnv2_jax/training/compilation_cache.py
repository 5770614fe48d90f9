"""JAX's persistent compilation cache, on by default for every command.

XLA compiles the training and evaluation steps when a run starts: tens of
seconds on a CPU or a GPU (where cuDNN also autotunes its convolutions), paid
again by every rerun, resume and sweep point. With the cache, a process that
compiles a program it compiled before (same program, same backend, same
versions) loads it from disk instead; on GPU the autotuning results are kept
with it.

Where (`config.compilation_cache_dir`):

* 'auto' (default): `$MNV2_JAX_COMPILATION_CACHE` if set, else
  `$XDG_CACHE_HOME/mnv2_jax/jax_compilation_cache` (`~/.cache/...`), unless
  the user already gave JAX a directory (`JAX_COMPILATION_CACHE_DIR`);
* a path: that directory (local or `gs://...`);
* '' or 'off' (also as the variable's value): no cache.

The cache only saves time: an entry that cannot be read or written is
compiled again (JAX warns), and deleting the directory is always safe. The
default directory is capped at `MAX_BYTES` (least recently used entries go
first; needs the `filelock` package). On several hosts, only process 0
writes entries: give every host the same shared directory (a path on a
shared file system or a bucket) for the others to read them.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Mapping
from typing import Optional

import jax

ENVIRONMENT_VARIABLE = 'MNV2_JAX_COMPILATION_CACHE'
OFF = ('', 'off', 'none', 'false', '0')
# Programs that compile faster than this are not written (the many tiny ones
# of eager operations); the steps and the evaluation are. JAX's own
# JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS, if set, wins.
MIN_COMPILE_SECONDS = 0.2
MAX_BYTES = 4 << 30  # of the default directory


def default_directory(environ: Mapping[str, str] = os.environ) -> str:
  home = environ.get('HOME') or os.path.expanduser('~')
  cache_home = environ.get('XDG_CACHE_HOME') or os.path.join(home, '.cache')
  return os.path.join(cache_home, 'mnv2_jax', 'jax_compilation_cache')


def directory_for(
  setting: str, environ: Mapping[str, str] = os.environ
) -> Optional[str]:
  """The cache directory `setting` (a config value) asks for; None: off."""
  if setting == 'auto':
    if ENVIRONMENT_VARIABLE in environ:
      setting = environ[ENVIRONMENT_VARIABLE]
    else:
      return default_directory(environ)
  if setting.strip().lower() in OFF:
    return None
  return os.path.expanduser(setting)


class _Counts:
  """Programs this process loaded from the cache or compiled while it was
  on, from JAX's monitoring events."""

  def __init__(self):
    self.requests = 0
    self.hits = 0
    self._lock = threading.Lock()

  def __call__(self, event: str, **kwargs) -> None:
    del kwargs
    with self._lock:
      if event == '/jax/compilation_cache/compile_requests_use_cache':
        self.requests += 1
      elif event == '/jax/compilation_cache/cache_hits':
        self.hits += 1


_COUNTS = _Counts()
jax.monitoring.register_event_listener(_COUNTS)


def enable(setting: str = 'auto') -> Optional[str]:
  """Points JAX at the cache directory `setting` asks for (or turns the
  cache off). Call before the first compilation. Returns the directory."""
  if setting == 'auto' and ENVIRONMENT_VARIABLE not in os.environ:
    users_own = jax.config.jax_compilation_cache_dir
    if users_own:
      return users_own
  directory = directory_for(setting)
  if directory is None:
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  remote = '://' in directory
  if not remote:
    try:
      os.makedirs(directory, exist_ok=True)
      if not os.access(directory, os.W_OK):
        raise PermissionError(13, 'not writable')
    except OSError as error:
      print(
        f'WARNING: no compilation cache: cannot write to {directory} '
        f'({error.strerror}); set {ENVIRONMENT_VARIABLE} or '
        '--config.compilation_cache_dir to a writable directory.',
        flush=True,
      )
      jax.config.update('jax_enable_compilation_cache', False)
      return None
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', directory)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update(
      'jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS
    )
  if remote:
    # XLA's GPU autotuning cache takes local paths only.
    jax.config.update('jax_persistent_cache_enable_xla_caches', 'none')
  if (
    directory == default_directory()
    and importlib.util.find_spec('filelock') is not None
  ):
    jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  return directory


def counts() -> dict[str, int]:
  """{'hits': programs loaded from the cache, 'misses': compiled while the
  cache was on} so far in this process."""
  return {'hits': _COUNTS.hits, 'misses': _COUNTS.requests - _COUNTS.hits}


def is_enabled() -> bool:
  return bool(
    jax.config.jax_enable_compilation_cache
    and jax.config.jax_compilation_cache_dir
  )
