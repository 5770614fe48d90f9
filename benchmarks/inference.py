"""Inference speed of mnv2_jax's MobileNetV2 next to Keras' MobileNetV2.

What is measured:
  One process, the same random float32 NHWC images (uniform in [-1, 1]), the
  same architecture (MobileNetV2, width multiplier 1.0, 224x224 by default,
  1000 classes), inference mode only:

  * ``ours (auto)``: ``jax.jit`` of ``MobileNetV2.apply(..., train=False)``
    returning the logits. On CPU 'auto' is the 'shifted' depthwise
    convolution (a sum of k*k shifted slices, fused by XLA).
  * ``ours (grouped)``: the same model with ``depthwise_implementation=
    'grouped'``, i.e. XLA's plain grouped convolution. A reference row: it shows
    why the shifted formulation exists on CPU.
  * ``keras tf.function``: ``keras.applications.MobileNetV2(weights=None)``
    (Keras 3, TensorFlow backend, ``classifier_activation=None`` so that both
    sides return logits) called as ``model(x, training=False)`` inside a
    ``tf.function`` -- TensorFlow's default graph path (``jit_compile=False``).
  * ``keras tf.function jit_compile=True``: the same, compiled with XLA.

  For every (implementation, batch size): the first call (tracing + compilation
  + one run) is timed on its own, then ``--warmup`` untimed calls, then
  ``--repeats`` timed calls (default 10 at batch >= 8, 30 below). Every call is
  synchronised before the clock stops (``block_until_ready`` for JAX,
  ``.numpy()`` for TensorFlow). The table reports the median (and the min) time
  per call, images/s from the median, and the ratio of images/s to the fastest
  Keras row at the same batch size. TensorFlow's thread pools are left at their
  defaults (all cores). Batch 1 gives latency, the larger batch throughput.

  Once, at batch 2, the logits of 'auto' and 'grouped' (same parameters) are
  compared and must agree to 1e-4.

How to run (from the repository root; no install needed):

  python benchmarks/inference.py
  python benchmarks/inference.py --batch_sizes 1,32 --repeats 20 --skip_keras

Results go to stdout (machine description and a Markdown table), to
``--json_out`` (default ``benchmarks/results/inference.json``) and to the
Markdown file next to it (``inference.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_sizes', default='1,32',
                      help='comma-separated batch sizes')
  parser.add_argument('--repeats', type=int, default=None,
                      help='timed calls per row (default: 30 for batch < 8, '
                           '10 otherwise)')
  parser.add_argument('--warmup', type=int, default=3,
                      help='untimed calls after the first call')
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--width_multiplier', type=float, default=1.0)
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument('--skip_keras', action='store_true',
                      help='time only the JAX model')
  parser.add_argument('--skip_grouped', action='store_true',
                      help="skip the depthwise_implementation='grouped' rows")
  parser.add_argument('--skip_keras_xla', action='store_true',
                      help='skip the Keras jit_compile=True rows')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json_out',
                      default=str(REPO_ROOT / 'benchmarks' / 'results' /
                                  'inference.json'),
                      help='JSON results; the Markdown goes next to it (.md)')
  return parser.parse_args(argv)


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def time_calls(call, warmup: int, repeats: int) -> dict:
  """Times `call` (which must synchronise): first call, warm-up, repeats."""
  start = time.perf_counter()
  call()
  first_call_s = time.perf_counter() - start
  for _ in range(warmup):
    call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return {
      'first_call_s': first_call_s,
      'median_s': statistics.median(times),
      'min_s': min(times),
      'max_s': max(times),
      'times_s': times,
  }


def build_jax(args, images_small):
  """Returns (variables, {name: jitted apply}) for the JAX rows."""
  import jax  # pylint: disable=g-import-not-at-top
  from mnv2_jax import model as model_lib  # pylint: disable=g-import-not-at-top

  def make(implementation):
    return model_lib.MobileNetV2(num_classes=args.num_classes,
                                 width_multiplier=args.width_multiplier,
                                 depthwise_implementation=implementation)

  # Parameter shapes do not depend on the resolution (global average pooling),
  # so initialise once on a small input; both implementations share them.
  start = time.perf_counter()
  variables = jax.jit(make('auto').init)(jax.random.key(args.seed),
                                         images_small)
  variables = jax.block_until_ready(variables)
  init_s = time.perf_counter() - start

  applies = {}
  for implementation in ('auto', 'grouped'):
    module = make(implementation)
    applies[implementation] = jax.jit(
        lambda v, x, module=module: module.apply(v, x, train=False)[0])
  return variables, applies, init_s


def main(argv=None) -> int:
  args = parse_args(argv)
  batch_sizes = [int(b) for b in args.batch_sizes.split(',') if b.strip()]
  wall_start = time.perf_counter()

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  tf = keras = None
  if not args.skip_keras:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import keras  # pylint: disable=g-import-not-at-top

  machine = {
      'cpu_model': cpu_model(),
      'logical_cpus': os.cpu_count(),
      'usable_cores': usable_cores(),
      'platform': platform.platform(),
      'python': platform.python_version(),
      'jax': jax.__version__,
      'jax_backend': jax.default_backend(),
      'jax_devices': [str(d) for d in jax.devices()],
  }
  if tf is not None:
    machine.update({
        'tensorflow': tf.__version__,
        'keras': keras.__version__,
        'keras_backend': keras.backend.backend(),
        # 0 means "let TensorFlow choose" (all cores): left untouched.
        'tf_intra_op_threads': tf.config.threading.get_intra_op_parallelism_threads(),
        'tf_inter_op_threads': tf.config.threading.get_inter_op_parallelism_threads(),
    })
  try:
    import flax  # pylint: disable=g-import-not-at-top
    machine['flax'] = flax.__version__
  except ImportError:
    pass

  print('# MobileNetV2 inference benchmark')
  print(f'date: {datetime.datetime.now().isoformat(timespec="seconds")}')
  for key, value in machine.items():
    print(f'{key}: {value}')
  print(f'model: MobileNetV2 alpha={args.width_multiplier} '
        f'{args.resolution}x{args.resolution}, {args.num_classes} classes, '
        f'float32, inference')
  print(flush=True)

  rng = np.random.default_rng(args.seed)
  res = args.resolution
  images = {
      b: rng.uniform(-1.0, 1.0, size=(b, res, res, 3)).astype(np.float32)
      for b in batch_sizes}

  def repeats_for(batch):
    if args.repeats is not None:
      return args.repeats
    return 30 if batch < 8 else 10

  # ---------------------------------------------------------------- JAX
  variables, applies, init_s = build_jax(
      args, jnp.zeros((1, 32, 32, 3), jnp.float32))
  num_params = sum(x.size for x in jax.tree.leaves(variables['params']))
  print(f'ours: jit(init) {init_s:.1f} s, {num_params:,} parameters',
        flush=True)

  # Numerical check: 'auto' (shifted on CPU) and 'grouped' agree.
  check_images = jnp.asarray(
      rng.uniform(-1.0, 1.0, size=(2, res, res, 3)).astype(np.float32))
  logits_auto = np.asarray(applies['auto'](variables, check_images))
  logits_grouped = np.asarray(applies['grouped'](variables, check_images))
  max_abs_diff = float(np.max(np.abs(logits_auto - logits_grouped)))
  max_abs_logit = float(np.max(np.abs(logits_grouped)))
  check_ok = bool(np.allclose(logits_auto, logits_grouped, rtol=1e-4,
                              atol=1e-4))
  numerics = {
      'batch': 2,
      'max_abs_diff': max_abs_diff,
      'max_abs_logit': max_abs_logit,
      'tolerance': 'rtol=1e-4, atol=1e-4',
      'ok': check_ok,
  }
  print(f"numerics: ours 'auto' vs 'grouped' logits at batch 2: max |diff| "
        f"{max_abs_diff:.2e} (max |logit| {max_abs_logit:.2f}) -> "
        f"{'OK' if check_ok else 'MISMATCH'} (rtol=atol=1e-4)", flush=True)

  rows = []

  def record(name, family, batch, timing):
    row = {'implementation': name, 'family': family, 'batch': batch,
           'repeats': len(timing['times_s']), **timing}
    row['images_per_s'] = batch / timing['median_s']
    rows.append(row)
    print(f'  {name:<36} batch {batch:>3}: first call '
          f'{timing["first_call_s"]:7.2f} s, median '
          f'{timing["median_s"] * 1e3:9.2f} ms, min '
          f'{timing["min_s"] * 1e3:9.2f} ms, '
          f'{row["images_per_s"]:8.1f} img/s', flush=True)

  jax_rows = [('ours (auto = shifted on CPU)', 'auto')]
  if not args.skip_grouped:
    jax_rows.append(("ours (grouped, XLA's grouped conv)", 'grouped'))
  for name, implementation in jax_rows:
    fn = applies[implementation]
    for batch in batch_sizes:
      x = jax.device_put(images[batch])
      call = lambda fn=fn, x=x: jax.block_until_ready(fn(variables, x))
      record(name, 'jax', batch, time_calls(call, args.warmup,
                                            repeats_for(batch)))

  # ---------------------------------------------------------------- Keras
  keras_params = None
  if tf is not None:
    keras_model = keras.applications.MobileNetV2(
        input_shape=(res, res, 3), alpha=args.width_multiplier,
        weights=None, classes=args.num_classes, classifier_activation=None)
    keras_params = int(sum(np.prod(w.shape)
                           for w in keras_model.trainable_weights))
    print(f'keras: {keras_params:,} trainable parameters', flush=True)
    keras_rows = [('keras tf.function', False)]
    if not args.skip_keras_xla:
      keras_rows.append(('keras tf.function jit_compile=True', True))
    for name, jit_compile in keras_rows:
      # A fresh tf.function per row so that the first call includes tracing.
      @tf.function(jit_compile=jit_compile, reduce_retracing=False)
      def forward(x):
        return keras_model(x, training=False)
      for batch in batch_sizes:
        x = tf.constant(images[batch])
        call = lambda forward=forward, x=x: forward(x).numpy()
        try:
          timing = time_calls(call, args.warmup, repeats_for(batch))
        except Exception as e:  # pylint: disable=broad-except
          print(f'  {name} batch {batch}: FAILED ({type(e).__name__}: '
                f'{str(e).splitlines()[0][:200]})', flush=True)
          continue
        record(name, 'keras', batch, timing)

  # ---------------------------------------------------------------- report
  best_keras = {}
  for row in rows:
    if row['family'] == 'keras':
      best_keras[row['batch']] = max(best_keras.get(row['batch'], 0.0),
                                     row['images_per_s'])
  for row in rows:
    best = best_keras.get(row['batch'])
    row['ratio_to_best_keras'] = row['images_per_s'] / best if best else None

  lines = [
      '| implementation | batch | median ms | min ms | images/s '
      '| vs fastest Keras | first call s |',
      '|---|---:|---:|---:|---:|---:|---:|',
  ]
  for row in sorted(rows, key=lambda r: (r['batch'], -r['images_per_s'])):
    ratio = row['ratio_to_best_keras']
    ratio_text = f'{ratio:.2f}x' if ratio is not None else 'n/a'
    lines.append(
        f'| {row["implementation"]} | {row["batch"]} '
        f'| {row["median_s"] * 1e3:.1f} | {row["min_s"] * 1e3:.1f} '
        f'| {row["images_per_s"]:.1f} | {ratio_text} '
        f'| {row["first_call_s"]:.1f} |')
  table = '\n'.join(lines)
  total_s = time.perf_counter() - wall_start

  header = [
      '# MobileNetV2 inference benchmark (CPU)',
      '',
      f'MobileNetV2 alpha={args.width_multiplier}, '
      f'{res}x{res}, {args.num_classes} classes, float32, inference mode, '
      'same random inputs for every row.',
      f'Machine: {machine["cpu_model"]}, {machine["usable_cores"]} usable '
      f'cores; jax {machine["jax"]}'
      + (f', tensorflow {machine["tensorflow"]}, keras {machine["keras"]} '
         f'(TF threads: defaults)' if tf is not None else '') + '.',
      f'Warm-up {args.warmup} calls excluded; median/min over '
      + (f'{args.repeats} timed calls per row' if args.repeats is not None
         else '10 timed calls per row at batch >= 8, 30 below')
      + '; images/s from the '
      'median; "vs fastest Keras" = images/s / images/s of the fastest Keras '
      'row at the same batch size; "first call" = tracing + compilation + '
      'one run.',
      f"Numerics: ours 'auto' vs 'grouped' logits (batch 2) max |diff| "
      f"{max_abs_diff:.2e} -> {'OK' if check_ok else 'MISMATCH'} "
      '(rtol=atol=1e-4).',
      f'Total run time: {total_s:.0f} s.',
      '',
  ]
  markdown = '\n\n'.join(h for h in header if h) + '\n\n' + table + '\n'
  print()
  print(table)
  print()
  print(f'total run time: {total_s:.1f} s')

  json_path = pathlib.Path(args.json_out)
  json_path.parent.mkdir(parents=True, exist_ok=True)
  md_path = json_path.with_suffix('.md')
  result = {
      'date': datetime.datetime.now().isoformat(timespec='seconds'),
      'machine': machine,
      'config': {k: v for k, v in vars(args).items()},
      'ours_init_s': init_s,
      'ours_num_params': int(num_params),
      'keras_num_params': keras_params,
      'numerics': numerics,
      'rows': rows,
      'total_run_s': total_s,
  }
  json_path.write_text(json.dumps(result, indent=2) + '\n')
  md_path.write_text(markdown)
  print(f'wrote {json_path} and {md_path}')
  return 0 if check_ok else 1


if __name__ == '__main__':
  sys.exit(main())
