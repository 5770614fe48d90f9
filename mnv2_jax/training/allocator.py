"""glibc malloc settings that stop XLA:CPU from page-faulting every step.

XLA:CPU allocates each step's outputs and temporaries afresh. Under glibc's
defaults a block over 32 MiB is mmap'ed and handed back to the kernel when
freed, and blocks from worker threads come from per-thread arenas that are
unmapped just as eagerly. So every step touches gigabytes of new pages: a
MobileNetV2 1.0-224 training step at batch 32 takes ~765,000 minor page faults
(3.1 GB zero-filled by the kernel), about a third of its time on a 2-core
machine (benchmarks/speed.py measures both ways).

With one arena, no mmap for large blocks and no trimming of the heap's top,
freed memory stays in the process and the next step reuses it: 0 faults per
step. The price is that the peak heap is not returned to the OS until exit,
which a training or benchmark process does not mind.

The settings are read by glibc at start-up only (`mallopt` cannot set a trim
threshold above 2 GiB), so `reexec_with_tuned_malloc` restarts the Python
process once with `GLIBC_TUNABLES` set. It does nothing off Linux/glibc, when
the user already set `GLIBC_TUNABLES`, or with MNV2_JAX_MALLOC=default.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping
from typing import Optional
from typing import Sequence

TUNABLES = ':'.join(
  [
    'glibc.malloc.arena_max=1',  # worker threads share the main heap
    'glibc.malloc.mmap_max=0',  # large blocks come from the heap, not mmap
    'glibc.malloc.trim_threshold=68719476736',  # never shrink the heap
  ]
)
# Set to 'default' to keep glibc's defaults; set by us in the restarted process.
SWITCH = 'MNV2_JAX_MALLOC'


def tuned_environment(environ: Mapping[str, str]) -> Optional[dict[str, str]]:
  """The environment to restart with, or None if no restart is wanted."""
  if environ.get(SWITCH) in ('default', 'tuned'):
    return None
  if 'GLIBC_TUNABLES' in environ:  # the user's own choice wins
    return None
  if sys.platform != 'linux' or platform.libc_ver()[0] != 'glibc':
    return None
  return {**environ, 'GLIBC_TUNABLES': TUNABLES, SWITCH: 'tuned'}


def reexec_with_tuned_malloc(argv: Optional[Sequence[str]] = None) -> None:
  """Restarts this Python process with `TUNABLES` if `tuned_environment` says.

  `argv` defaults to the interpreter's original command line, so
  `python -m mnv2_jax.main ...` restarts as itself. Call it before any work.
  """
  environ = tuned_environment(os.environ)
  if environ is None:
    return
  argv = list(sys.orig_argv if argv is None else argv)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + argv[1:], environ)


def status() -> str:
  """One line for logs: which malloc settings this process runs with."""
  if os.environ.get(SWITCH) == 'tuned':
    return 'glibc malloc tuned for XLA (GLIBC_TUNABLES set by mnv2_jax)'
  if 'GLIBC_TUNABLES' in os.environ:
    return f'GLIBC_TUNABLES={os.environ["GLIBC_TUNABLES"]} (set by the user)'
  return 'glibc malloc defaults'
