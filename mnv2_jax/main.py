r"""Trains or evaluates a MobileNetV2 model described by an ml_collections config.

  python -m mnv2_jax.main --config configs/quickstart.py --workdir /tmp/mnv2
  python -m mnv2_jax.main --config configs/imagenet_mnv2.py \
      --config.dataset.data_dir=/data/tfds --workdir gs://bucket/mnv2

This file is intentionally kept short: everything else is importable from
`mnv2_jax.train` and testable from a notebook.
"""

import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['workdir'])
flags.DEFINE_bool('multihost', False,
                  'Call jax.distributed.initialize() first (multi-host GPU and '
                  'TPU jobs; the cluster environment supplies the addresses).')
config_flags.DEFINE_config_file('config', None, 'An ml_collections config file.',
                                lock_config=True)
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF's C++ start-up chatter
  if not FLAGS['verbosity'].present:
    # Progress goes to stdout; library INFO logs (Orbax writes several lines
    # per save) only with --verbosity=0.
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  from mnv2_jax import allocator  # pylint: disable=g-import-not-at-top
  from mnv2_jax import compilation_cache  # pylint: disable=g-import-not-at-top
  from mnv2_jax import configuration  # pylint: disable=g-import-not-at-top
  from mnv2_jax import train  # pylint: disable=g-import-not-at-top
  configuration.validate(FLAGS.config)
  print(f'malloc: {allocator.status()}', flush=True)
  cache = compilation_cache.enable(FLAGS.config.compilation_cache_dir)
  print(f'compilation cache: {cache or "off"}', flush=True)
  if FLAGS.multihost:
    jax.distributed.initialize()
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir,
                           started_at=_STARTED_AT)


# When the command started (carried over the malloc restart), for the log's
# "first step ... after start".
_STARTED_ENV = 'MNV2_JAX_STARTED_AT'
_STARTED_AT = time.time()


if __name__ == '__main__':
  # Before anything else: restart once with glibc malloc settings that keep
  # XLA:CPU from page-faulting its buffers every step (see allocator.py).
  _STARTED_AT = float(os.environ.pop(_STARTED_ENV, _STARTED_AT))
  os.environ[_STARTED_ENV] = str(_STARTED_AT)
  from mnv2_jax import allocator  # pylint: disable=g-import-not-at-top
  allocator.reexec_with_tuned_malloc()
  del os.environ[_STARTED_ENV]  # not inherited by what this process starts
  app.run(main)
