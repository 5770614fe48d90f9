"""Several processes in one job: JAX's multi-controller runtime.

`initialize` is what `python -m mnv2_jax.main --multihost` calls before any
other JAX call. On a cluster `jax.distributed.initialize()` finds the
coordinator, the number of processes and this process's id itself (SLURM,
Cloud TPU, Open MPI, ...). `python -m mnv2_jax.launch` starts processes on one
machine and passes them in the environment instead (`COORDINATOR_ADDRESS`,
`NUM_PROCESSES`, `PROCESS_ID` below).

A process that dies is noticed by the others through the coordination
service: a missed heartbeat for `HEARTBEAT_TIMEOUT` seconds (JAX's default
100 s; the launcher's default 10 s) ends every other process with an abort
naming the unhealthy task, instead of leaving it blocked in a collective.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax

COORDINATOR_ADDRESS = 'MNV2_JAX_COORDINATOR_ADDRESS'
NUM_PROCESSES = 'MNV2_JAX_NUM_PROCESSES'
PROCESS_ID = 'MNV2_JAX_PROCESS_ID'
HEARTBEAT_TIMEOUT = 'MNV2_JAX_HEARTBEAT_TIMEOUT'
# `main` exits with this status after saving at a preemption notice
# (EX_TEMPFAIL: run the same command again to resume).
PREEMPTED_EXIT_STATUS = 75


def initialize_arguments(
  environ: Mapping[str, str] = os.environ,
) -> dict[str, object]:
  """`jax.distributed.initialize`'s arguments from the environment: none on
  a cluster (JAX detects it), the launcher's when it set them.

  Raises:
    ValueError: a variable is set but not a valid number, or only some of
      the three launcher variables are set.
  """
  arguments: dict[str, object] = {}
  given = [
    name
    for name in (COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID)
    if environ.get(name)
  ]
  if given and len(given) != 3:
    missing = sorted(
      {COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID} - set(given)
    )
    raise ValueError(
      f'{", ".join(given)} set without {", ".join(missing)}: set all three '
      '(python -m mnv2_jax.launch does) or none (a cluster that JAX detects).'
    )

  def number(name: str) -> int:
    try:
      value = int(environ[name])
    except ValueError:
      raise ValueError(f'{name}={environ[name]!r} is not an integer.') from None
    if value < 0:
      raise ValueError(f'{name}={value} must be >= 0.')
    return value

  if given:
    arguments.update(
      coordinator_address=environ[COORDINATOR_ADDRESS],
      num_processes=number(NUM_PROCESSES),
      process_id=number(PROCESS_ID),
    )
  if environ.get(HEARTBEAT_TIMEOUT):
    seconds = number(HEARTBEAT_TIMEOUT)
    arguments.update(
      heartbeat_timeout_seconds=seconds,
      # A process that failed waits this long at the exit barrier for the
      # others; they then all end instead of waiting JAX's default 300 s.
      shutdown_timeout_seconds=seconds,
    )
  return arguments


def initialize() -> None:
  """Joins this process to the job (before any other JAX call)."""
  jax.distributed.initialize(**initialize_arguments())
