"""A run's workdir: the training run's claim on it, and what it holds.

Two training runs on one workdir would interleave their checkpoints and
metrics, so `claim` takes an exclusive lock on `<workdir>/.lock` for the life
of the run. The kernel releases it when the process ends in any way (SIGKILL
included), so a preempted run never leaves a stale lock behind. The same call
checks that the workdir can be written to, before any training.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from typing import Any
from typing import Iterator

from mnv2_jax import configuration
from mnv2_jax.training import checkpointing


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir."""


class WorkdirNotWritableError(OSError):
  """The workdir cannot be created or written to."""


LOCK_NAME = '.lock'


def check_writable(workdir: str) -> None:
  """Creates `workdir` and writes a probe file in it.

  Raises:
    WorkdirNotWritableError: naming the directory, the OS error and the fix.
  """
  probe = os.path.join(workdir, f'.write_probe.{os.getpid()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'wb') as f:
      f.write(b'0' * 4096)
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as error:
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    raise WorkdirNotWritableError(
      f'Cannot write to --workdir={workdir}: {error.strerror or error}. '
      + (
        'Free some space there'
        if full
        else 'Check that it is a directory you may write to'
      )
      + ', or pass another --workdir. Nothing was trained.'
    ) from error


@contextlib.contextmanager
def claim(workdir: str) -> Iterator[None]:
  """Holds `<workdir>/.lock` (exclusive, non-blocking) while the body runs.

  Local and network file systems with flock only; cloud paths (gs://) are not
  locked: one job per bucket path is the scheduler's business there.

  Raises:
    WorkdirNotWritableError: the workdir cannot be written.
    WorkdirBusyError: another live process holds it; says which.
  """
  if '://' in workdir:
    yield
    return
  import fcntl  # noqa: PLC0415 (POSIX only)

  check_writable(workdir)
  path = os.path.join(workdir, LOCK_NAME)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 256, 0).decode(errors='replace').strip()
      raise WorkdirBusyError(
        f'Another training run is using --workdir={workdir} '
        f'({holder or "holder unknown"}). Two runs on one workdir would '
        "overwrite each other's checkpoints: wait for it to finish, stop "
        'it, or pass another --workdir.'
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(
      fd,
      (
        f'pid {os.getpid()} on {socket.gethostname()}, started '
        f'{time.strftime("%Y-%m-%d %H:%M:%S")}'
      ).encode(),
      0,
    )
    yield
  finally:
    os.close(fd)  # releases the lock


def load(workdir: str) -> tuple[Any, dict[str, Any], int]:
  """(config, variables, step) of `workdir`'s latest checkpoint: a training
  run's, or one `python -m mnv2_jax.convert` wrote."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise FileNotFoundError(
      f'{config_path} does not exist: --workdir must be the directory of a '
      'training run or of `python -m mnv2_jax.convert`.'
    )
  config = configuration.from_json(config_path)
  step, variables = checkpointing.read_variables(workdir)
  return config, variables, step
