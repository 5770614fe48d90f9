r"""Trains or evaluates a MobileNetV2 model described by an ml_collections config.

  python -m mnv2_jax.main --config configs/quickstart.py --workdir /tmp/mnv2
  python -m mnv2_jax.main --config configs/imagenet_mnv2.py \
      --config.dataset.data_dir=/data/tfds --workdir gs://bucket/mnv2

This file is intentionally kept short: everything else is importable from
`mnv2_jax.training.trainer` and testable from a notebook.
"""

import os
import shlex
import sys
import time

from mnv2_jax.training import allocator

# When the command started, carried over the malloc restart below, for the
# log's "first step ... after start".
_STARTED_ENV = 'MNV2_JAX_STARTED_AT'
if __name__ == '__main__':
  # Before the heavy imports: restart once with glibc malloc settings that
  # keep XLA:CPU from page-faulting its buffers every step (allocator.py).
  os.environ.setdefault(_STARTED_ENV, str(time.time()))
  allocator.reexec_with_tuned_malloc()
_STARTED_AT = float(os.environ.pop(_STARTED_ENV, time.time()))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mnv2_jax import configuration  # noqa: E402
from mnv2_jax.data import datasets  # noqa: E402
from mnv2_jax.training import compilation_cache  # noqa: E402
from mnv2_jax.training import distributed  # noqa: E402
from mnv2_jax.training import trainer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['workdir'])
flags.DEFINE_bool(
  'multihost',
  False,
  'Join a job of several processes first (jax.distributed.initialize(): '
  'on a GPU cluster or TPU pod slice the environment supplies the '
  'addresses; python -m mnv2_jax.launch sets them on one machine).',
)
flags.DEFINE_string(
  'result_file',
  None,
  'Also write the run record (as <workdir>/result.json: the final metrics '
  'of each split, config, command, machine, versions) to this path, e.g. '
  "experiments/results/...; with --config.mode=eval, the evaluation's.",
)
config_flags.DEFINE_config_file(
  'config', None, 'An ml_collections config file.', lock_config=True
)
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.multihost:  # before any other JAX call
    distributed.initialize()
  if not FLAGS['verbosity'].present:
    # Progress goes to stdout; library INFO logs (Orbax writes several lines
    # per save) only with --verbosity=0.
    logging.set_verbosity(logging.WARNING)
  try:
    configuration.validate(FLAGS.config)
    datasets.check_available(FLAGS.config)
  except ValueError as error:
    # The message names the field or the missing files and the fix; a
    # traceback above it would bury it (the argparse tools print the same).
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.exit(2)
  print(f'malloc: {allocator.status()}', flush=True)
  cache = compilation_cache.enable(FLAGS.config.compilation_cache_dir)
  print(f'compilation cache: {cache or "off"}', flush=True)
  command = shlex.join(['python', '-m', 'mnv2_jax.main'] + sys.argv[1:])
  try:
    trainer.train_and_evaluate(
      FLAGS.config,
      FLAGS.workdir,
      started_at=_STARTED_AT,
      command=command,
      result_file=FLAGS.result_file,
    )
  except trainer.Preempted as preempted:
    print(preempted, flush=True)
    sys.exit(distributed.PREEMPTED_EXIT_STATUS)


if __name__ == '__main__':
  app.run(main)
