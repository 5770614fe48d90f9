"""MobileNetV2 speed on this machine: mnv2_jax next to Keras and PyTorch.

What is measured (one process, same random inputs for every framework,
MobileNetV2 1.0, 224x224, 1000 classes, float32 by default):

  * inference at batch 1 (latency) and at batch 32 (throughput);
  * one full training step at batch 32: forward, backward, optimizer update and
    BatchNorm statistics.

Rows:

  * ``mnv2_jax``: ``jax.jit`` of ``MobileNetV2.apply(train=False)`` for
    inference, on the whole batch and, on CPU, in micro-batches of
    ``model.CPU_INFERENCE_MICROBATCH`` images as evaluation runs it; for training the package's own ``train.train_step`` with the
    paper's recipe (RMSProp decay 0.9 / momentum 0.9 / eps 1.0, weight decay,
    label smoothing, EMA of the weights), state buffers donated.
  * ``keras``: ``keras.applications.MobileNetV2(weights=None,
    classifier_activation=None)`` on TensorFlow: ``model(x, training=False)``
    in a ``tf.function`` for inference; a ``tf.function`` GradientTape step
    with ``keras.optimizers.RMSprop(rho=0.9, momentum=0.9, epsilon=1.0)`` and
    sparse softmax cross-entropy for training. ``--keras_xla`` adds the
    ``jit_compile=True`` variants (XLA's grouped convolution: very slow on
    CPU, so off by default).
  * ``torch``: torchvision's ``mobilenet_v2()`` if torchvision imports, else
    the same architecture defined below in plain ``torch.nn`` (the reason is
    printed). ``eval()`` + ``inference_mode`` for inference; ``train()`` with
    ``torch.optim.RMSprop(alpha=0.9, momentum=0.9, eps=1.0)`` for training;
    each in NCHW and in ``channels_last`` memory format.

  The peers do not compute the EMA or the weight decay; mnv2_jax's step does.

Timing: the first call (tracing + compilation + one run) is reported on its
own, then ``--warmup`` untimed calls, then ``--repeats`` timed calls; the table
gives the median (and min) per call. Every call is synchronised (JAX
``block_until_ready``, TF ``.numpy()``, PyTorch is synchronous on CPU).
"vs best peer" divides images/s by the fastest peer row of the same kind
(inference or training) and batch.

Memory allocator: by default this script restarts itself once with the glibc
malloc settings of ``mnv2_jax/allocator.py`` (what ``python -m mnv2_jax.main``
uses), so that every framework in the process runs with them;
``--malloc default`` keeps glibc's defaults for everyone.

  pip install -e ".[test]"          # plus, for the peers (optional):
  pip install torch==2.13.0         # CPU build; torchvision optional
  python benchmarks/speed.py        # writes benchmarks/results/speed.{json,md}
"""

from __future__ import annotations

import argparse
import datetime
import functools
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
  parser.add_argument('--latency_batch', type=int, default=1)
  parser.add_argument('--batch', type=int, default=32,
                      help='throughput batch (inference and training)')
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--width_multiplier', type=float, default=1.0)
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16'),
                      help="mnv2_jax's compute dtype (peers stay float32)")
  parser.add_argument('--repeats', type=int, default=None,
                      help='timed calls per row (default 30 at the latency '
                           'batch, 10 for inference, 6 for training)')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--malloc', choices=('tuned', 'default'),
                      default='tuned')
  parser.add_argument('--skip_keras', action='store_true')
  parser.add_argument('--skip_torch', action='store_true')
  parser.add_argument('--skip_training', action='store_true')
  parser.add_argument('--keras_xla', action='store_true',
                      help='also time Keras with jit_compile=True')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json_out', default=str(
      REPO_ROOT / 'benchmarks' / 'results' / 'speed.json'),
                      help='JSON results; the Markdown table goes next to it')
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
  return {'first_call_s': first_call_s, 'median_s': statistics.median(times),
          'min_s': min(times), 'max_s': max(times), 'times_s': times}


class Recorder:
  """Collects rows and prints each as it is measured."""

  def __init__(self):
    self.rows = []

  def time(self, framework, variant, kind, batch, call, warmup, repeats):
    try:
      timing = time_calls(call, warmup, repeats)
    except Exception as e:  # pylint: disable=broad-except
      print(f'  {framework} {variant} {kind} batch {batch}: FAILED '
            f'({type(e).__name__}: {str(e).splitlines()[0][:200]})',
            flush=True)
      return
    row = {'framework': framework, 'variant': variant, 'kind': kind,
           'batch': batch, 'repeats': repeats, **timing,
           'images_per_s': batch / timing['median_s']}
    self.rows.append(row)
    print(f'  {framework:<9} {variant:<28} {kind:<9} batch {batch:>3}: '
          f'first {timing["first_call_s"]:6.2f} s, median '
          f'{timing["median_s"] * 1e3:8.1f} ms, min '
          f'{timing["min_s"] * 1e3:8.1f} ms, {row["images_per_s"]:7.1f} img/s',
          flush=True)


# ------------------------------------------------------------------ mnv2_jax


def bench_ours(args, images, labels, recorder, repeats_for):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mnv2_jax import configuration  # pylint: disable=g-import-not-at-top
  from mnv2_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from mnv2_jax import train  # pylint: disable=g-import-not-at-top

  config = configuration.base_config()
  config.num_classes = args.num_classes
  config.image_size = args.resolution
  config.model.width_multiplier = args.width_multiplier
  config.model.dtype = args.dtype
  model = model_lib.from_config(config.model, args.num_classes)
  schedule = train.make_schedule(config, num_train_examples=1_281_167)
  learning_rate = train.learning_rate_fn(config, schedule)
  optimizer = train.create_optimizer(config, learning_rate)

  start = time.perf_counter()
  state = jax.jit(functools.partial(train.create_train_state, config, model,
                                    optimizer))(jax.random.key(args.seed))
  state = jax.block_until_ready(state)
  init_s = time.perf_counter() - start
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  print(f'mnv2_jax: jit(init) {init_s:.1f} s, {num_params:,} parameters, '
        f'dtype {args.dtype}', flush=True)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}

  # What evaluation runs (tasks.Classification.eval_step): on CPU, micro-batches of
  # model.CPU_INFERENCE_MICROBATCH images; the whole batch as a reference row.
  microbatch = model_lib.resolve_inference_microbatch(-1)
  variants = [('jit', 0)]
  if microbatch:
    variants.append((f'jit, micro-batches of {microbatch}', microbatch))
  for variant, size in variants:
    predict = jax.jit(functools.partial(
        lambda v, x, size: model_lib.apply_in_microbatches(
            lambda images: model.apply(v, images, train=False)[0], x, size),
        size=size))
    for batch in (args.latency_batch, args.batch):
      if size and batch <= size:
        continue  # the same computation as the whole-batch row
      x = jax.device_put(images[batch])
      recorder.time('mnv2_jax', variant, 'inference', batch,
                    lambda x=x, p=predict: p(variables, x).block_until_ready(),
                    args.warmup, repeats_for('inference', batch))
  if args.skip_training:
    return {'init_s': init_s, 'num_params': int(num_params)}

  step = jax.jit(functools.partial(train.train_step, model=model,
                                   optimizer=optimizer, config=config,
                                   learning_rate=learning_rate),
                 donate_argnums=0)
  batch = {'image': jax.device_put(images[args.batch]),
           'label': jax.device_put(labels)}
  holder = {'state': state}
  rng = jax.random.key(args.seed + 1)

  def train_call():
    holder['state'], metrics = step(holder['state'], batch, rng)
    jax.block_until_ready(metrics)

  recorder.time('mnv2_jax', 'jit, donated state', 'training', args.batch,
                train_call, args.warmup, repeats_for('training', args.batch))
  return {'init_s': init_s, 'num_params': int(num_params)}


# --------------------------------------------------------------------- Keras


def bench_keras(args, images, labels, recorder, repeats_for):
  try:
    import keras  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f'keras: skipped, import failed ({e})', flush=True)
    return None
  model = keras.applications.MobileNetV2(
      input_shape=(args.resolution, args.resolution, 3),
      alpha=args.width_multiplier, weights=None, classes=args.num_classes,
      classifier_activation=None)
  num_params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
  print(f'keras {keras.__version__} / tensorflow {tf.__version__}: '
        f'{num_params:,} trainable parameters', flush=True)
  for jit_compile in ([False, True] if args.keras_xla else [False]):
    variant = 'tf.function' + (' jit_compile' if jit_compile else '')
    forward = tf.function(lambda x: model(x, training=False),
                          jit_compile=jit_compile)
    for batch in (args.latency_batch, args.batch):
      x = tf.constant(images[batch])
      recorder.time('keras', variant, 'inference', batch,
                    lambda x=x, f=forward: f(x).numpy(), args.warmup,
                    repeats_for('inference', batch))
    if args.skip_training:
      continue
    optimizer = keras.optimizers.RMSprop(learning_rate=0.01, rho=0.9,
                                         momentum=0.9, epsilon=1.0)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=jit_compile)
    def train_step(x, y):
      with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      return loss

    x, y = tf.constant(images[args.batch]), tf.constant(labels)
    recorder.time('keras', variant + ' GradientTape', 'training', args.batch,
                  lambda: train_step(x, y).numpy(), args.warmup,
                  repeats_for('training', args.batch))
  return {'keras': keras.__version__, 'tensorflow': tf.__version__,
          'num_params': num_params}


# ------------------------------------------------------------------- PyTorch


def torch_mobilenet_v2(torch, num_classes, width_multiplier):
  """MobileNetV2 (Sandler et al. Table 2) in plain torch.nn with torchvision's
  layout: the model the PyTorch parity tests use (tests/torch_reference.py)."""
  sys.path.insert(0, str(REPO_ROOT / 'tests'))
  try:
    import torch_reference  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  return torch_reference.mobilenet_v2(torch, num_classes, width_multiplier)


def bench_torch(args, images, labels, recorder, repeats_for):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f'torch: skipped, import failed ({e}); `pip install torch==2.13.0` '
          'gives a CPU build', flush=True)
    return None
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
    model = torchvision.models.mobilenet_v2(
        num_classes=args.num_classes, width_mult=args.width_multiplier)
    source = f'torchvision {torchvision.__version__} mobilenet_v2'
  except Exception as e:  # pylint: disable=broad-except
    reason = str(e).splitlines()[0][:160] if str(e) else ''
    print(f'torch: torchvision unavailable ({type(e).__name__}: {reason}); '
          'using the torch.nn MobileNetV2 defined in this script', flush=True)
    model = torch_mobilenet_v2(torch, args.num_classes, args.width_multiplier)
    source = 'torch.nn MobileNetV2 defined in benchmarks/speed.py'
  num_params = int(sum(p.numel() for p in model.parameters()))
  print(f'torch {torch.__version__} ({torch.get_num_threads()} threads): '
        f'{source}, {num_params:,} parameters', flush=True)

  def to_nchw(array, channels_last):
    x = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    return x.to(memory_format=torch.channels_last) if channels_last else x

  for channels_last in (False, True):
    variant = 'channels_last' if channels_last else 'NCHW'
    model = model.to(memory_format=(torch.channels_last if channels_last
                                    else torch.contiguous_format))
    model.eval()
    for batch in (args.latency_batch, args.batch):
      x = to_nchw(images[batch], channels_last)

      def infer(x=x):
        with torch.inference_mode():
          model(x)

      recorder.time('torch', variant, 'inference', batch, infer, args.warmup,
                    repeats_for('inference', batch))
    if args.skip_training:
      continue
    model.train()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01, alpha=0.9,
                                    momentum=0.9, eps=1.0)
    x = to_nchw(images[args.batch], channels_last)
    y = torch.from_numpy(labels.astype(np.int64))

    def train_step(x=x):
      optimizer.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(model(x), y)
      loss.backward()
      optimizer.step()

    recorder.time('torch', variant, 'training', args.batch, train_step,
                  args.warmup, repeats_for('training', args.batch))
  return {'torch': torch.__version__, 'model': source,
          'threads': torch.get_num_threads(), 'num_params': num_params}


# --------------------------------------------------------------------- main


def markdown_table(rows) -> str:
  best_peer = {}
  for row in rows:
    if row['framework'] != 'mnv2_jax':
      key = (row['kind'], row['batch'])
      best_peer[key] = max(best_peer.get(key, 0.0), row['images_per_s'])
  lines = ['| framework | variant | kind | batch | median ms | min ms '
           '| images/s | vs best peer | first call s |',
           '|---|---|---|---:|---:|---:|---:|---:|---:|']
  order = {'inference': 0, 'training': 1}
  for row in sorted(rows, key=lambda r: (order[r['kind']], r['batch'],
                                         -r['images_per_s'])):
    best = best_peer.get((row['kind'], row['batch']))
    row['vs_best_peer'] = row['images_per_s'] / best if best else None
    ratio = f'{row["vs_best_peer"]:.2f}x' if best else 'n/a'
    name = (f'**{row["framework"]}**' if row['framework'] == 'mnv2_jax'
            else row['framework'])
    lines.append(
        f'| {name} | {row["variant"]} | {row["kind"]} | {row["batch"]} '
        f'| {row["median_s"] * 1e3:.1f} | {row["min_s"] * 1e3:.1f} '
        f'| {row["images_per_s"]:.1f} | {ratio} '
        f'| {row["first_call_s"]:.1f} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  args = parse_args(argv)
  from mnv2_jax import allocator  # pylint: disable=g-import-not-at-top
  if args.malloc == 'tuned':
    allocator.reexec_with_tuned_malloc()
  else:
    os.environ.setdefault(allocator.SWITCH, 'default')
  wall_start = time.perf_counter()

  import jax  # pylint: disable=g-import-not-at-top
  machine = {
      'cpu_model': cpu_model(), 'logical_cpus': os.cpu_count(),
      'usable_cores': usable_cores(), 'platform': platform.platform(),
      'python': platform.python_version(), 'jax': jax.__version__,
      'jax_backend': jax.default_backend(),
      'jax_devices': [str(d) for d in jax.devices()],
      'malloc': allocator.status(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  print('# MobileNetV2 speed benchmark')
  print(f'date: {datetime.datetime.now().isoformat(timespec="seconds")}')
  for key, value in machine.items():
    print(f'{key}: {value}')
  print(flush=True)

  rng = np.random.default_rng(args.seed)
  res = args.resolution
  images = {b: rng.uniform(-1.0, 1.0, (b, res, res, 3)).astype(np.float32)
            for b in {args.latency_batch, args.batch}}
  labels = rng.integers(0, args.num_classes, (args.batch,)).astype(np.int32)

  def repeats_for(kind, batch):
    if args.repeats is not None:
      return args.repeats
    if kind == 'training':
      return 6
    return 30 if batch < 8 else 10

  recorder = Recorder()
  info = {'mnv2_jax': bench_ours(args, images, labels, recorder, repeats_for)}
  if not args.skip_keras:
    info['keras'] = bench_keras(args, images, labels, recorder, repeats_for)
  if not args.skip_torch:
    info['torch'] = bench_torch(args, images, labels, recorder, repeats_for)

  table = markdown_table(recorder.rows)
  total_s = time.perf_counter() - wall_start
  date = datetime.datetime.now().isoformat(timespec='seconds')
  header = (
      f'MobileNetV2 {args.width_multiplier}-{res}, {args.num_classes} '
      f'classes, mnv2_jax in {args.dtype}, peers in float32; one process, '
      f'same random inputs. {date}. Machine: {machine["cpu_model"]}, '
      f'{machine["usable_cores"]} usable cores, no accelerator; malloc: '
      f'{machine["malloc"]}. Median (and min) per call after {args.warmup} '
      'warm-up calls; "first call" = tracing + compilation + one run. '
      f'Total run time {total_s:.0f} s. Command: `python benchmarks/speed.py'
      + ''.join(f' {a}' for a in (sys.argv[1:] if argv is None else argv))
      + '`.')
  print()
  print(table)
  print(f'\ntotal run time: {total_s:.1f} s')

  json_path = pathlib.Path(args.json_out)
  json_path.parent.mkdir(parents=True, exist_ok=True)
  result = {'date': date, 'machine': machine, 'config': vars(args),
            'frameworks': info, 'rows': recorder.rows, 'total_run_s': total_s}
  json_path.write_text(json.dumps(result, indent=2) + '\n')
  json_path.with_suffix('.md').write_text(header + '\n\n' + table + '\n')
  print(f'wrote {json_path} and {json_path.with_suffix(".md")}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
