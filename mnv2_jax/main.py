r"""Trains or evaluates a MobileNetV2 model described by an ml_collections config.

  python -m mnv2_jax.main --config configs/quickstart.py --workdir /tmp/mnv2
  python -m mnv2_jax.main --config configs/imagenet_mnv2.py \
      --config.dataset.data_dir=/data/tfds --workdir gs://bucket/mnv2

This file is intentionally kept short: everything else is importable from
`mnv2_jax.training.trainer` and testable from a notebook. As every tool, it
parses its command line before importing the layers that need jax, so that
`--help` and a usage error answer at once (benchmarks/cli_help.py).
"""

import os
import shlex
import sys
import time

from absl import logging

from mnv2_jax.training import allocator

# When the command started, carried over the malloc restart below, for the
# log's "first step ... after start".
_STARTED_ENV = 'MNV2_JAX_STARTED_AT'
if __name__ == '__main__' and not {'-h', '--help'} & set(sys.argv[1:]):
  # Before the heavy imports: restart once with glibc malloc settings that
  # keep XLA:CPU from page-faulting its buffers every step (allocator.py).
  os.environ.setdefault(_STARTED_ENV, str(time.time()))
  allocator.reexec_with_tuned_malloc()
_STARTED_AT = float(os.environ.pop(_STARTED_ENV, time.time()))

import argparse  # noqa: E402

from mnv2_jax import configuration  # noqa: E402


def parse_arguments(argv):
  """(the validated config, the parsed flags) of a command line; a bad one
  exits with status 2 and one `error:` line naming the fix."""
  parser = argparse.ArgumentParser(
    prog='python -m mnv2_jax.main',
    description=__doc__.split('\n')[0],
    epilog='Any config field can be set with --config.<key>=<value> '
    '(e.g. --config.num_epochs=10 --config.model.width_multiplier=0.5).',
  )
  parser.add_argument(
    '--config',
    required=True,
    help='An ml_collections config file, optionally followed by '
    ':<config string> (the argument of its get_config).',
  )
  parser.add_argument(
    '--workdir', required=True, help='Directory for checkpoints and metrics.'
  )
  parser.add_argument(
    '--multihost',
    action='store_true',
    help='Join a job of several processes first (jax.distributed.initialize(): '
    'on a GPU cluster or TPU pod slice the environment supplies the '
    'addresses; python -m mnv2_jax.launch sets them on one machine).',
  )
  parser.add_argument(
    '--result_file',
    default=None,
    help='Also write the run record (as <workdir>/result.json: the final '
    'metrics of each split, config, command, machine, versions) to this '
    'path, e.g. experiments/results/...; with --config.mode=eval, the '
    "evaluation's.",
  )
  parser.add_argument(
    '--verbose',
    action='store_true',
    help="Show the libraries' INFO logs (Orbax writes several lines per "
    'save); progress goes to stdout either way.',
  )
  args, overrides = parser.parse_known_args(argv)
  try:
    config = configuration.from_command_line(args.config, overrides, 'main')
  except (FileNotFoundError, ValueError) as error:
    parser.error(str(error))
  return config, args


def main(argv=None) -> None:
  arguments = sys.argv[1:] if argv is None else list(argv)
  config, args = parse_arguments(arguments)
  # The command line is good: now the layers that import jax.
  from mnv2_jax.data import datasets
  from mnv2_jax.training import compilation_cache
  from mnv2_jax.training import distributed
  from mnv2_jax.training import trainer

  if args.multihost:  # before any other JAX call
    distributed.initialize()
  logging.set_verbosity(logging.INFO if args.verbose else logging.WARNING)
  try:
    configuration.validate(config)
    datasets.check_available(config)
  except ValueError as error:
    # The message names the field or the missing files and the fix; a
    # traceback above it would bury it (the other tools print the same).
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.exit(2)
  print(f'malloc: {allocator.status()}', flush=True)
  cache = compilation_cache.enable(config.compilation_cache_dir)
  print(f'compilation cache: {cache or "off"}', flush=True)
  command = shlex.join(['python', '-m', 'mnv2_jax.main'] + arguments)
  try:
    trainer.train_and_evaluate(
      config,
      args.workdir,
      started_at=_STARTED_AT,
      command=command,
      result_file=args.result_file,
    )
  except trainer.Preempted as preempted:
    print(preempted, flush=True)
    sys.exit(distributed.PREEMPTED_EXIT_STATUS)


if __name__ == '__main__':
  main()
