"""Where the ImageNet input pipeline's time goes, per CPU core, and how many
host cores one accelerator needs.

Data: an `imagenet2012`-format TFDS dataset written from scikit-image's
photographs at ImageNet's sizes (mnv2_jax/data/imagenet_like.py; the realised
mean size and JPEG bytes are in the output), and its versions prepared by
`python -m mnv2_jax.prepare_imagenet` with the shorter side at 320 and 256.

Per stage, cumulative, in a fresh process pinned to one core (so the rate is
per core; every stage runs the pipeline's own functions):

  read         records read and parsed, the image left encoded
  decode       + the whole JPEG decoded (what the pipeline avoids)
  decode_crop  + the Inception crop sampled from the JPEG header and only that
               window decoded (what the pipeline does)
  resize       + bilinear resize of the window to --image_size
  augment      + flip and scaling to [-1, 1]: `preprocess_for_train`
  batch        + the whole `image_classification.train_batches` (shuffle, batch, to NumPy)

each with the batch leaving the host as float32 (normalised on the host) and
as uint8 pixels (`config.dataset.train_image_dtype='uint8'`, normalised on the
device). Each figure is images over wall time and over the process's CPU time
(all its threads). Then the
whole pipeline on every core of the machine, the host-to-device copy of a batch
(`jax.device_put`), and with --train_steps the whole training loop
(`python -m mnv2_jax.main` on the generated data) with its input-wait fraction.

  python benchmarks/input_pipeline.py [--examples 1024 --train_steps 12]

Cores one accelerator needs: its training rate divided by the per-core rate;
--accelerator_rate defaults to 11,500 img/s, an H200 training MobileNetV2
1.0-224 in bf16 at batch 256 (measured 2026-11-27, see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

STAGES = ('read', 'decode', 'decode_crop', 'resize', 'augment', 'batch')
IMAGE_DTYPES = ('float32', 'uint8')
SOURCES = ('original', 'shorter_side_320', 'shorter_side_256')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--examples', type=int, default=4096)
  parser.add_argument(
    '--images',
    type=int,
    default=2560,
    help='timed images per stage (within the first epoch: < --examples)',
  )
  parser.add_argument('--warmup_images', type=int, default=256)
  parser.add_argument(
    '--train_steps',
    type=int,
    default=0,
    help='also time the training loop for this many steps (0: skip)',
  )
  parser.add_argument('--train_batch', type=int, default=32)
  parser.add_argument('--accelerator_rate', type=float, default=11_500.0)
  parser.add_argument('--data_dir', default='', help='keep the data here')
  parser.add_argument(
    '--json_out',
    default=str(REPO_ROOT / 'benchmarks' / 'results' / 'input_pipeline.json'),
  )
  # Internal: one measurement in this process.
  parser.add_argument('--worker', default='', help=argparse.SUPPRESS)
  parser.add_argument(
    '--image_dtype', default='float32', help=argparse.SUPPRESS
  )
  return parser.parse_args(argv)


# ------------------------------------------------------------------ workers


def _config(data_dir: str, args):
  """The ImageNet experiment's config (configs/imagenet_mnv2.py) at the
  benchmark's size and batch."""
  from mnv2_jax import configuration

  config = configuration.load_file(
    str(REPO_ROOT / 'configs' / 'imagenet_mnv2.py')
  )
  config.update_from_flattened_dict(
    {
      'dataset.data_dir': data_dir,
      'dataset.shuffle_buffer_size': 1024,
      'dataset.train_image_dtype': args.image_dtype,
      'image_size': args.image_size,
      'batch_size': args.batch,
    }
  )
  return config


def _stage_dataset(stage: str, data_dir: str, args):
  """The records through `stage`, each reduced to a scalar so that nothing
  but the stage's own work is timed."""
  import tensorflow as tf

  from mnv2_jax.data import image_classification
  from mnv2_jax.data import tfds_reading

  builder = tfds_reading.builder(_config(data_dir, args).dataset)
  ds = tfds_reading.read(builder, 'train').repeat()
  size, image_dtype = args.image_size, args.image_dtype
  seed = tf.constant([0, 0], tf.int64)

  def through(example):
    data = example['image']
    if stage == 'read':
      return tf.strings.length(data)
    if stage == 'decode':
      image = tf.io.decode_jpeg(data, channels=3)
    elif stage == 'decode_crop':
      image = image_classification.decode_and_crop(
        data, lambda shape: image_classification.random_crop_window(shape, seed)
      )
    elif stage == 'resize':
      image = image_classification.decode_and_crop(
        data, lambda shape: image_classification.random_crop_window(shape, seed)
      )
      image = tf.image.resize(image, [size, size], method='bilinear')
    else:  # augment
      image = image_classification.preprocess_for_train(
        data, seed, size, 'inception', image_dtype=image_dtype
      )
    return tf.shape(image)[0] + tf.cast(image[0, 0, 0], tf.int32)

  return ds.map(through, num_parallel_calls=tf.data.AUTOTUNE).batch(64)


def _time_images(iterator, per_item: int, args) -> dict:
  seen = 0
  while seen < args.warmup_images:
    next(iterator)
    seen += per_item
  seen, start, cpu = 0, time.perf_counter(), time.process_time()
  while seen < args.images:
    next(iterator)
    seen += per_item
  elapsed = time.perf_counter() - start
  cpu_seconds = time.process_time() - cpu
  return {
    'images_per_s': seen / elapsed,
    'images_per_cpu_second': seen / cpu_seconds,
    'images': seen,
    'seconds': elapsed,
    'cpu_seconds': cpu_seconds,
  }


def run_worker(args) -> dict:
  stage, data_dir = args.worker.split(':', 1)
  if stage in ('batch', 'pipeline'):
    from mnv2_jax.data import datasets

    batches = datasets.train_batches(
      _config(data_dir, args), start_step=0, per_host_batch_size=args.batch
    )
    return _time_images(batches, args.batch, args)
  if stage == 'transfer':
    import jax
    import numpy as np

    result = {}
    for dtype in ('float32', 'uint8'):
      batch = np.zeros((args.batch, args.image_size, args.image_size, 3), dtype)
      batch[...] = 1  # touched, so the pages exist
      for _ in range(3):
        jax.device_put(batch).block_until_ready()
      start, count = time.perf_counter(), 20
      for _ in range(count):
        jax.device_put(batch).block_until_ready()
      elapsed = time.perf_counter() - start
      result[dtype] = {
        'images_per_s': count * args.batch / elapsed,
        'gb_per_s': count * batch.nbytes / elapsed / 1e9,
        'device': str(jax.devices()[0]),
      }
    return result
  return _time_images(
    _stage_dataset(stage, data_dir, args).as_numpy_iterator(), 64, args
  )


def _measure(
  args, worker: str, cores: set[int] | None, image_dtype: str = 'float32'
) -> dict:
  """Runs one measurement in a fresh process, pinned to `cores`."""
  command = [
    sys.executable,
    __file__,
    '--worker',
    worker,
    '--image_dtype',
    image_dtype,
    '--image_size',
    str(args.image_size),
    '--batch',
    str(args.batch),
    '--images',
    str(args.images),
    '--warmup_images',
    str(args.warmup_images),
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  preexec = (lambda: os.sched_setaffinity(0, cores)) if cores else None
  out = subprocess.run(
    command,
    env=env,
    preexec_fn=preexec,
    capture_output=True,
    text=True,
    check=False,
  )
  if out.returncode:
    raise RuntimeError(f'{worker} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------- the training loop


def _train_loop(args, data_dir: str, workdir: str) -> dict:
  command = [
    sys.executable,
    '-m',
    'mnv2_jax.main',
    '--config',
    str(REPO_ROOT / 'configs' / 'imagenet_mnv2.py'),
    '--workdir',
    workdir,
    f'--config.dataset.data_dir={data_dir}',
    f'--config.num_train_steps={args.train_steps}',
    f'--config.batch_size={args.train_batch}',
    '--config.dataset.shuffle_buffer_size=256',
    '--config.log_every_steps=4',
    '--config.mode=train',
  ]
  start = time.perf_counter()
  out = subprocess.run(
    command, cwd=REPO_ROOT, capture_output=True, text=True, check=False
  )
  wall = time.perf_counter() - start
  if out.returncode:
    raise RuntimeError(f'training loop failed:\n{out.stderr[-3000:]}')
  from mnv2_jax.training import metric_writers

  lines = [
    line
    for line in metric_writers.read_jsonl(workdir)
    if line.get('split') == 'train' and 'input_wait_fraction' in line
  ]
  # The first logged interval holds compilation; the rest is steady state.
  steady = lines[1:] or lines
  rate = sum(line['images_per_second'] for line in steady) / len(steady)
  wait = sum(line['input_wait_fraction'] for line in steady) / len(steady)
  return {
    'command': ' '.join(command[1:]),
    'wall_seconds': wall,
    'images_per_s': rate,
    'input_wait_fraction': wait,
    # The step alone: the loop's rate with the input wait taken out.
    'step_alone_images_per_s': rate / max(1.0 - wait, 1e-9),
    'logged_intervals': len(steady),
  }


# -------------------------------------------------------------------- report


def _prepare_data(root: str, args) -> dict:
  from mnv2_jax.data import imagenet_like
  from mnv2_jax.data import imagenet_records

  info = {}
  original = os.path.join(root, 'original')
  if not os.path.isdir(os.path.join(original, 'imagenet2012')):
    info['original'] = imagenet_like.write(
      original, train_examples=args.examples, validation_examples=64
    )
  for side in (320, 256):
    target = os.path.join(root, f'shorter_side_{side}')
    if os.path.isdir(os.path.join(target, 'imagenet2012')):
      continue
    start = time.perf_counter()
    summary = imagenet_records.resize(
      original, target, shorter_side=side, quality=90
    )
    summary['seconds'] = time.perf_counter() - start
    summary['images_per_s'] = (
      summary['train']['examples_written']
      + summary['validation']['examples_written']
    ) / summary['seconds']
    info[f'shorter_side_{side}'] = summary
  return info


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.worker:
    print(json.dumps(run_worker(args)))
    return 0
  cores = sorted(os.sched_getaffinity(0))
  one_core = {cores[-1]}
  results: dict = {'config': vars(args), 'cores': len(cores), 'per_core': {}}
  with tempfile.TemporaryDirectory() as scratch:
    root = args.data_dir or scratch
    results['data'] = _prepare_data(root, args)
    for source in SOURCES:
      data_dir = os.path.join(root, source)
      for image_dtype in IMAGE_DTYPES:
        key = f'{source}/{image_dtype}'
        rows = {}
        for stage in STAGES:
          if image_dtype != 'float32' and stage not in ('augment', 'batch'):
            rows[stage] = results['per_core'][f'{source}/float32'][stage]
            continue  # the same work up to the resize
          rows[stage] = _measure(
            args, f'{stage}:{data_dir}', one_core, image_dtype
          )
          print(
            f'{key:32s} {stage:12s} '
            f'{rows[stage]["images_per_s"]:8.0f} img/s on one core',
            flush=True,
          )
        results['per_core'][key] = rows
      for image_dtype in IMAGE_DTYPES:
        key = f'{source}/{image_dtype}'
        whole = _measure(args, f'pipeline:{data_dir}', None, image_dtype)
        results.setdefault('all_cores', {})[key] = whole
        print(
          f'{key:32s} whole pipeline {whole["images_per_s"]:8.0f} img/s on '
          f'{len(cores)} cores ({whole["images_per_cpu_second"]:.0f} per '
          'CPU-second)',
          flush=True,
        )
    results['transfer'] = _measure(args, f'transfer:{root}', None)
    if args.train_steps:
      results['train_loop'] = _train_loop(
        args,
        os.path.join(root, 'original'),
        os.path.join(scratch, 'train_loop'),
      )
  needs = {}
  for key, rows in results['per_core'].items():
    rate = rows['batch']['images_per_s']
    needs[key] = {
      'images_per_s_per_core': rate,
      'cores_for_accelerator': args.accelerator_rate / rate,
    }
  results['cores_needed'] = needs
  for key, need in needs.items():
    print(
      f'{key:32s} {need["images_per_s_per_core"]:6.0f} img/s per core: '
      f'{need["cores_for_accelerator"]:5.1f} cores for '
      f'{args.accelerator_rate:,.0f} img/s'
    )
  if 'train_loop' in results:
    loop = results['train_loop']
    print(
      f'training loop: {loop["images_per_s"]:.1f} img/s, input wait '
      f'{100 * loop["input_wait_fraction"]:.1f}% (step alone '
      f'{loop["step_alone_images_per_s"]:.1f} img/s)'
    )
  from mnv2_jax.training import provenance

  results.update(
    provenance.record(
      'python benchmarks/input_pipeline.py ' + ' '.join(argv or sys.argv[1:])
    )
  )
  path = pathlib.Path(args.json_out)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(results, indent=2) + '\n')
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
