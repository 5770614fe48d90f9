r"""Runs `python -m mnv2_jax.main` as a job of several processes on this
machine: what a cluster does with one process per host, for testing a
multi-host run without a cluster.

  python -m mnv2_jax.launch --num_processes 2 --devices_per_process 4 -- \
      --config configs/quickstart.py --workdir /tmp/mnv2_two_processes

Each process runs `python -m mnv2_jax.main --multihost <the arguments after
-->` with the coordinator's address, the number of processes and its id in
the environment (training/distributed.py), and, on CPU, its own
`--devices_per_process` devices; the processes talk through JAX's
coordination service and CPU collectives (gloo). Their output is prefixed
with `[process i]`.

SIGTERM or SIGINT to the launcher is passed to every process (each saves at
the next step all of them reach and exits; see docs/training.md). When a
process ends with an error or a signal, the others are given
`--grace_seconds` to end (the coordination service stops them after
`--heartbeat_timeout` seconds without news) and are then killed; the
launcher exits with the first failing process's status.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
  """A TCP port no one listens on now (the coordinator binds it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


def parse_args(argv):
  parser = argparse.ArgumentParser(
    prog='python -m mnv2_jax.launch', description=__doc__.split('\n')[0]
  )
  parser.add_argument('--num_processes', type=int, default=2)
  parser.add_argument(
    '--devices_per_process',
    type=int,
    default=4,
    help='CPU devices of each process (JAX_NUM_CPU_DEVICES); ignored on '
    'GPU and TPU.',
  )
  parser.add_argument(
    '--port', type=int, default=0, help='the coordinator port (0: a free one)'
  )
  parser.add_argument(
    '--heartbeat_timeout',
    type=int,
    default=10,
    help='seconds without a heartbeat before the job ends',
  )
  parser.add_argument('--grace_seconds', type=float, default=60.0)
  parser.add_argument('main_args', nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)
  if args.main_args[:1] == ['--']:
    args.main_args = args.main_args[1:]
  if args.num_processes < 1 or args.devices_per_process < 1:
    parser.error('--num_processes and --devices_per_process must be >= 1.')
  if not args.main_args:
    parser.error('give the arguments of mnv2_jax.main after --.')
  return args


def _describe(status: int) -> str:
  from mnv2_jax.training import distributed  # jax: after parsing

  if status == distributed.PREEMPTED_EXIT_STATUS:
    return 'preempted: saved and stopped'
  if status < 0:
    return f'killed by {signal.Signals(-status).name}'
  return f'exit status {status}'


def _forward_output(index: int, stream) -> None:
  for line in iter(stream.readline, ''):
    if line.startswith('[Gloo]'):  # each collective group's connection notice
      continue
    sys.stdout.write(f'[process {index}] {line}')
    sys.stdout.flush()


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  address = f'localhost:{args.port or free_port()}'
  processes = [
    _start(args, address, index) for index in range(args.num_processes)
  ]
  print(
    f'[launch] {args.num_processes} processes, coordinator {address}, pids '
    f'{[p.pid for p in processes]}',
    flush=True,
  )

  def forward(signum, frame):
    del frame
    for process in processes:
      if process.poll() is None:
        process.send_signal(signum)

  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)
  statuses, first_failure = _supervise(processes, args.grace_seconds)
  if first_failure is None:
    return 0
  index, status = first_failure
  print(
    '[launch] '
    + ', '.join(f'process {i}: {_describe(s)}' for i, s in enumerate(statuses))
    + f'. First to fail: process {index}.',
    flush=True,
  )
  return status if status > 0 else 128 - status


def _start(args, address: str, index: int) -> subprocess.Popen:
  """Process `index` of the job: `main --multihost` with the coordinator's
  address and its place in the environment, its output prefixed."""
  from mnv2_jax.training import distributed  # jax: after parsing

  env = dict(
    os.environ,
    **{
      distributed.COORDINATOR_ADDRESS: address,
      distributed.NUM_PROCESSES: str(args.num_processes),
      distributed.PROCESS_ID: str(index),
      distributed.HEARTBEAT_TIMEOUT: str(args.heartbeat_timeout),
      'JAX_NUM_CPU_DEVICES': str(args.devices_per_process),
    },
  )
  process = subprocess.Popen(
    [sys.executable, '-m', 'mnv2_jax.main', '--multihost', *args.main_args],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  threading.Thread(
    target=_forward_output, args=(index, process.stdout), daemon=True
  ).start()
  return process


def _supervise(processes, grace_seconds: float):
  """Waits for every process; once one fails, the others get
  `grace_seconds` to end before they are killed. Returns (exit statuses,
  (index, status) of the first to fail or None)."""
  first_failure, failed_at = None, None
  reported = set()

  def ended(index, status):
    print(
      f'[launch] process {index} ended ({_describe(status)}) '
      f'{time.monotonic() - failed_at:.1f} s after process '
      f'{first_failure[0]}.',
      flush=True,
    )

  while any(p.poll() is None for p in processes):
    time.sleep(0.1)
    for index, process in enumerate(processes):
      status = process.poll()
      if status is None or index in reported:
        continue
      reported.add(index)
      if first_failure is None and status != 0:
        first_failure, failed_at = (index, status), time.monotonic()
        print(
          f'[launch] process {index} ended ({_describe(status)}); waiting '
          f'up to {grace_seconds:.0f} s for the others.',
          flush=True,
        )
      elif first_failure is not None:
        ended(index, status)
    if (
      first_failure is not None and time.monotonic() - failed_at > grace_seconds
    ):
      for index, process in enumerate(processes):
        if process.poll() is None:
          print(f'[launch] killing process {index}.', flush=True)
          process.kill()
  statuses = [p.wait() for p in processes]
  for index, status in enumerate(statuses):
    if first_failure is not None and index not in reported:
      ended(index, status)
  return statuses, first_failure


if __name__ == '__main__':
  sys.exit(main())
