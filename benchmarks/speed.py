r"""MobileNetV2 speed: mnv2_jax next to plain Flax, Keras and PyTorch, each
framework in a fresh process of its own.

  python benchmarks/speed.py               # this machine's CPU (batch 1 and 32, float32)
  python benchmarks/speed.py --mode gpu    # a GPU (batch 1 and 256, float32 and bfloat16)

writes benchmarks/results/speed_<device>.{json,md}: <device> is 'cpu' or the
card's name ('nvidia_h200'). Frameworks sharing a process slow each other down
(thread pools, allocators), so every (framework, dtype) runs in a new Python
process (`--worker`), one after the other, on the same random inputs.

Model: MobileNetV2 1.0-224, 1000 classes. Rows:

* ``mnv2_jax``: `jax.jit` of `MobileNetV2.apply(train=False)` for inference
  (on CPU also in micro-batches of `model.CPU_INFERENCE_MICROBATCH`, as
  evaluation runs it); the package's own `trainer.train_step` for training,
  with the paper's RMSProp (decay 0.9, momentum 0.9, epsilon 1.0) and weight
  decay 4e-5; `base_config()` turns off label smoothing and the weight average.
  The state is donated. `--dtype bfloat16` rows compute activations in
  bfloat16 with float32 parameters, BatchNorm statistics, loss and optimizer.
* ``flax``: the same network written the plain Flax way (tests/flax_reference.py:
  nn.Conv with `feature_group_count`, nn.BatchNorm, autodiff), trained by the
  same `trainer.train_step`: what a Flax user would write.
* ``keras`` (CPU): `keras.applications.MobileNetV2(weights=None)` in a
  `tf.function`; training with `keras.optimizers.RMSprop(rho=0.9,
  momentum=0.9, epsilon=1.0)` under a GradientTape.
* ``torch``: torchvision's `mobilenet_v2()` if torchvision imports, else the
  same architecture in plain torch.nn (tests/torch_reference.py; the reason is
  printed); `torch.optim.RMSprop(alpha=0.9, momentum=0.9, eps=1.0)`. On CPU in
  NCHW and channels_last; on GPU channels_last, float32 (cuDNN's default TF32
  convolutions) and autocast bfloat16 (AMP).
* ``torch.compile`` (GPU; `--torch_compile` on CPU): the channels_last model
  under `torch.compile`, AMP bfloat16.

Timing: the first call (tracing, compilation, one run) is reported on its own,
then `--warmup` untimed calls, then `--repeats` timed calls, each synchronised
(JAX `block_until_ready`, `.numpy()`, `torch.cuda.synchronize()`); rows give
the median. "vs best peer" divides images/s by the fastest Keras / PyTorch row
of the same kind, batch and dtype. Peak device memory is each process's peak
(its training step is the largest program it runs).

The physical limit: a `limits` process measures this device's memory
bandwidth (a large array copy) and matrix-product FLOP/s. MobileNetV2's
training step is memory-bound: the report divides its least activation
traffic per image (`models.statistics.activation_traffic`: 5 accesses per convolution
output element) by the bandwidth and gives each training row as a percentage
of that roofline.

Memory allocator (CPU): the driver restarts itself once with the glibc malloc
settings of mnv2_jax/allocator.py, which every worker inherits;
`--malloc default` keeps glibc's defaults for everyone.

  pip install -e ".[test]"           # the peers are optional:
  pip install torch==2.13.0          # CPU build of PyTorch (torchvision optional)
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

MODES = ('auto', 'cpu', 'gpu')
PEERS = ('keras', 'torch', 'torch.compile')
# Whose versions the results record.
VERSIONED_PACKAGES = (
  'jax',
  'jaxlib',
  'jax-cuda12-plugin',
  'jax-cuda13-plugin',
  'flax',
  'optax',
  'torch',
  'torchvision',
  'tensorflow',
  'tensorflow-cpu',
  'keras',
)
# Published memory bandwidth of the cards we expect, bytes/s (NVIDIA's data
# sheets), for the roofline next to the measured copy bandwidth.
SPEC_BANDWIDTH = {
  'H200': 4.8e12,
  'H100 80GB HBM3': 3.35e12,
  'H100 PCIe': 2.0e12,
  'H100 NVL': 3.9e12,
  'A100-SXM4-80GB': 2.039e12,
  'A100-SXM4-40GB': 1.555e12,
  'A100 80GB PCIe': 1.935e12,
  'L4': 0.3e12,
}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--mode',
    choices=MODES,
    default='auto',
    help="'auto': gpu if nvidia-smi lists a GPU, else cpu",
  )
  parser.add_argument('--latency_batch', type=int, default=1)
  parser.add_argument(
    '--batch',
    type=int,
    default=None,
    help='throughput batch (default 32 on CPU, 256 on GPU)',
  )
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--width_multiplier', type=float, default=1.0)
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument(
    '--repeats',
    type=int,
    default=None,
    help='timed calls per row (CPU: 30 at batch 1, 10 '
    'inference, 6 training; GPU: 20)',
  )
  parser.add_argument(
    '--warmup',
    type=int,
    default=None,
    help='untimed calls after the first (CPU 2, GPU 3)',
  )
  parser.add_argument(
    '--frameworks',
    default=None,
    help='comma-separated subset of mnv2_jax,flax,keras,torch,torch.compile',
  )
  parser.add_argument(
    '--dtypes', default=None, help='comma-separated subset of float32,bfloat16'
  )
  parser.add_argument(
    '--torch_compile',
    action='store_true',
    help='also torch.compile on CPU (minutes of compiling)',
  )
  parser.add_argument('--skip_training', action='store_true')
  parser.add_argument('--malloc', choices=('tuned', 'default'), default='tuned')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--worker_timeout', type=float, default=1800)
  parser.add_argument(
    '--out_dir', default=str(REPO_ROOT / 'benchmarks' / 'results')
  )
  # Internal: run one worker and write its rows to --worker_out.
  parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--dtype', default='float32', help=argparse.SUPPRESS)
  parser.add_argument('--worker_out', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.mode == 'auto':
    args.mode = 'gpu' if gpu_names() else 'cpu'
  gpu = args.mode == 'gpu'
  if args.batch is None:
    args.batch = 256 if gpu else 32
  if args.warmup is None:
    args.warmup = 3 if gpu else 2
  return args


def gpu_names() -> list[str]:
  """The GPUs nvidia-smi lists (none without a driver)."""
  if not shutil.which('nvidia-smi'):
    return []
  try:
    out = subprocess.run(
      ['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
      capture_output=True,
      text=True,
      timeout=60,
      check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [line.strip() for line in out.splitlines() if line.strip()]


def repeats_for(args, kind: str, batch: int) -> int:
  if args.repeats is not None:
    return args.repeats
  if args.mode == 'gpu':
    return 20
  if kind == 'training':
    return 6
  return 30 if batch < 8 else 10


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


class Recorder:
  """Collects one worker's rows and prints each as it is measured."""

  def __init__(self, framework: str, dtype: str, args):
    self.framework, self.dtype, self.args = framework, dtype, args
    self.rows = []

  def time(self, variant: str, kind: str, batch: int, call, **extra):
    try:
      timing = time_calls(
        call, self.args.warmup, repeats_for(self.args, kind, batch)
      )
    except Exception as e:
      print(
        f'  {self.framework} {variant} {kind} batch {batch}: FAILED '
        f'({type(e).__name__}: {str(e).splitlines()[0][:200]})',
        flush=True,
      )
      return None
    row = {
      'framework': self.framework,
      'variant': variant,
      'dtype': self.dtype,
      'kind': kind,
      'batch': batch,
      **timing,
      'images_per_s': batch / timing['median_s'],
      **extra,
    }
    self.rows.append(row)
    print(
      f'  {self.framework:<13} {self.dtype:<8} {variant:<30} {kind:<9} '
      f'batch {batch:>3}: first {timing["first_call_s"]:6.2f} s, median '
      f'{timing["median_s"] * 1e3:8.2f} ms, {row["images_per_s"]:8.1f} '
      'img/s',
      flush=True,
    )
    return row


def random_inputs(args):
  rng = np.random.default_rng(args.seed)
  size = args.resolution
  images = {
    b: rng.uniform(-1.0, 1.0, (b, size, size, 3)).astype(np.float32)
    for b in {args.latency_batch, args.batch}
  }
  labels = rng.integers(0, args.num_classes, (args.batch,)).astype(np.int32)
  return images, labels


# ------------------------------------------------------------- JAX workers


def jax_peak_memory(jax) -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def bench_jax(args, recorder: Recorder, flavour: str) -> dict:
  """mnv2_jax (`flavour` 'mnv2_jax') or the plain Flax network ('flax')."""
  import jax

  from mnv2_jax import configuration
  from mnv2_jax.models import initializers
  from mnv2_jax.models import layers
  from mnv2_jax.models import mobilenet_v2
  from mnv2_jax.models.building import build_model
  from mnv2_jax.tasks import classification
  from mnv2_jax.tasks import inference
  from mnv2_jax.training import optimization
  from mnv2_jax.training import state as training_state
  from mnv2_jax.training import trainer

  images, labels = random_inputs(args)
  config = configuration.base_config()
  config.num_classes = args.num_classes
  config.image_size = args.resolution
  config.model.width_multiplier = args.width_multiplier
  config.model.dtype = args.dtype
  model = build_model(config, args.num_classes)
  init_model = model
  if flavour == 'flax':
    flax_reference = _test_module('flax_reference')
    model = flax_reference.MobileNetV2(
      num_classes=args.num_classes,
      width_multiplier=args.width_multiplier,
      dtype=mobilenet_v2.DTYPES[args.dtype],
    )
  _, learning_rate, optimizer = optimization.build(
    config, num_train_examples=1_281_167
  )

  # The same variables for both: they share names and shapes.
  start = time.perf_counter()
  variables = initializers.host_variables(
    init_model, training_state.model_input_shape(config), args.seed, train=False
  )
  state = jax.block_until_ready(
    jax.device_put(
      training_state.create_train_state(config, variables, optimizer)
    )
  )
  init_s = time.perf_counter() - start
  info = {
    'init_s': init_s,
    'num_params': int(sum(x.size for x in jax.tree.leaves(state.params))),
    'implementation': (
      layers.resolve_implementation(config.model.implementation)
      if flavour == 'mnv2_jax'
      else 'plain flax'
    ),
    'default_matmul_precision': str(jax.config.jax_default_matmul_precision),
  }
  print(
    f'{flavour} {args.dtype}: state created in {init_s:.2f} s, '
    f'{info["num_params"]:,} parameters, layers: '
    f'{info["implementation"]}',
    flush=True,
  )
  weights = {'params': state.params, 'batch_stats': state.batch_stats}

  variants = [('jit', 0)]
  microbatch = inference.resolve_inference_microbatch(-1)
  if flavour == 'mnv2_jax' and microbatch:
    variants.append((f'jit, micro-batches of {microbatch}', microbatch))
  for variant, size in variants:
    predict = jax.jit(
      functools.partial(
        lambda w, x, size: inference.apply_in_microbatches(
          lambda batch: model.apply(w, batch, train=False)[0], x, size
        ),
        size=size,
      )
    )
    for batch in (args.latency_batch, args.batch):
      if size and batch <= size:
        continue  # the same computation as the whole-batch row
      x = jax.device_put(images[batch])
      recorder.time(
        variant,
        'inference',
        batch,
        lambda x=x, p=predict: p(weights, x).block_until_ready(),
      )
  if args.skip_training:
    return info

  step = jax.jit(
    functools.partial(
      trainer.train_step,
      model=model,
      task=classification.Classification(config),
      optimizer=optimizer,
      config=config,
      learning_rate=learning_rate,
    ),
    donate_argnums=0,
  )
  batch = {
    'image': jax.device_put(images[args.batch]),
    'label': jax.device_put(labels),
  }
  holder = {'state': state}
  rng = jax.random.key(args.seed + 1)

  def train_call():
    holder['state'], metrics = step(holder['state'], batch, rng)
    jax.block_until_ready(metrics)

  recorder.time('jit, donated state', 'training', args.batch, train_call)
  if recorder.rows and recorder.rows[-1]['kind'] == 'training':
    recorder.rows[-1]['peak_memory_bytes'] = jax_peak_memory(jax)
  return info


def bench_limits(args, recorder: Recorder) -> dict:
  """This device's memory bandwidth (copy) and float32/bfloat16 GEMM rate."""
  del recorder
  import jax
  import jax.numpy as jnp

  # Sizes by the backend JAX runs on (the GPU mode also runs on a CPU).
  gpu = jax.default_backend() != 'cpu'
  elements = (1 << 28) if gpu else (1 << 27)  # 1 GiB / 512 MiB of float32
  x = jnp.ones((elements,), jnp.float32)
  copy = jax.jit(lambda v: v * 1.0001)
  timing = time_calls(lambda: copy(x).block_until_ready(), 2, 10)
  # The limit is what the device can do: the fastest call, not the median.
  bandwidth = 2 * 4 * elements / timing['min_s']  # read + write
  limits = {'copy_bandwidth_bytes_per_s': bandwidth}
  for dtype in ('float32', 'bfloat16'):
    n = 8192 if gpu else 1024
    a = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda u, v: u @ v)
    timing = time_calls(lambda a=a: matmul(a, a).block_until_ready(), 2, 10)
    limits[f'matmul_{dtype}_flops_per_s'] = 2 * n**3 / timing['min_s']
  print(
    f'limits: copy {bandwidth / 1e9:.1f} GB/s, matmul float32 '
    f'{limits["matmul_float32_flops_per_s"] / 1e12:.2f} TFLOP/s, '
    f'bfloat16 {limits["matmul_bfloat16_flops_per_s"] / 1e12:.2f} '
    'TFLOP/s',
    flush=True,
  )
  return limits


# ----------------------------------------------------------------- Keras


def bench_keras(args, recorder: Recorder) -> dict | None:
  try:
    import keras
    import tensorflow as tf
  except ImportError as e:
    print(f'keras: skipped, import failed ({e})', flush=True)
    return None
  images, labels = random_inputs(args)
  model = keras.applications.MobileNetV2(
    input_shape=(args.resolution, args.resolution, 3),
    alpha=args.width_multiplier,
    weights=None,
    classes=args.num_classes,
    classifier_activation=None,
  )
  forward = tf.function(lambda x: model(x, training=False))
  for batch in (args.latency_batch, args.batch):
    x = tf.constant(images[batch])
    recorder.time(
      'tf.function', 'inference', batch, lambda x=x: forward(x).numpy()
    )
  if not args.skip_training:
    optimizer = keras.optimizers.RMSprop(
      learning_rate=0.01, rho=0.9, momentum=0.9, epsilon=1.0
    )
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y):
      with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      return loss

    x, y = tf.constant(images[args.batch]), tf.constant(labels)
    recorder.time(
      'tf.function GradientTape',
      'training',
      args.batch,
      lambda: train_step(x, y).numpy(),
    )
  return {'keras': keras.__version__, 'tensorflow': tf.__version__}


# --------------------------------------------------------------- PyTorch


def _test_module(name: str):
  """tests/<name>.py (the plain Flax and PyTorch references) as a module."""
  spec = importlib.util.spec_from_file_location(
    name, REPO_ROOT / 'tests' / f'{name}.py'
  )
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # flax's dataclasses look their module up
  spec.loader.exec_module(module)
  return module


def torch_model(torch, args):
  """torchvision's mobilenet_v2, or tests/torch_reference.py's (the reason
  printed)."""
  torch_reference = _test_module('torch_reference')
  model, description, fallback = torch_reference.torchvision_or_reference(
    torch, args.num_classes, args.width_multiplier
  )
  if fallback:
    print(f'torch: {fallback}; using tests/torch_reference.py', flush=True)
  return model, description


def bench_torch(args, recorder: Recorder, compiled: bool) -> dict | None:
  try:
    import torch
  except ImportError as e:
    print(
      f'torch: skipped, import failed ({e}); `pip install torch==2.13.0` '
      'gives a CPU build',
      flush=True,
    )
    return None
  gpu = args.mode == 'gpu'
  device = torch.device('cuda' if gpu else 'cpu')
  if gpu and not torch.cuda.is_available():
    print('torch: skipped, no CUDA device', flush=True)
    return None
  if gpu:
    # cuDNN's autotuner, as XLA autotunes its convolutions: without it eager
    # PyTorch takes heuristic algorithms, often slow for depthwise ones.
    torch.backends.cudnn.benchmark = True
  images, labels = random_inputs(args)
  model, source = torch_model(torch, args)
  model = model.to(device)
  bf16 = args.dtype == 'bfloat16'

  def sync():
    if gpu:
      torch.cuda.synchronize()

  def autocast():
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

  formats = [True] if gpu or compiled else [False, True]
  for channels_last in formats:
    variant = ('channels_last' if channels_last else 'NCHW') + (
      ', AMP' if bf16 else ''
    )
    memory_format = (
      torch.channels_last if channels_last else torch.contiguous_format
    )
    model = model.to(memory_format=memory_format)
    run = torch.compile(model) if compiled else model

    def to_device(array):
      x = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
      return x.to(device).to(memory_format=memory_format)

    model.eval()
    for batch in (args.latency_batch, args.batch):
      x = to_device(images[batch])

      def infer(x=x):
        with torch.inference_mode(), autocast():
          run(x)
        sync()

      recorder.time(variant, 'inference', batch, infer)
    if args.skip_training:
      continue
    model.train()
    optimizer = torch.optim.RMSprop(
      model.parameters(), lr=0.01, alpha=0.9, momentum=0.9, eps=1.0
    )
    x = to_device(images[args.batch])
    y = torch.from_numpy(labels.astype(np.int64)).to(device)

    def train_step(x=x):
      optimizer.zero_grad(set_to_none=True)
      with autocast():
        loss = torch.nn.functional.cross_entropy(run(x), y)
      loss.backward()
      optimizer.step()
      sync()

    if gpu:
      torch.cuda.reset_peak_memory_stats()
    row = recorder.time(variant, 'training', args.batch, train_step)
    if row and gpu:
      row['peak_memory_bytes'] = int(torch.cuda.max_memory_allocated())
  info = {
    'torch': torch.__version__,
    'model': source,
    'threads': torch.get_num_threads(),
  }
  if gpu:
    info.update(
      cudnn_benchmark=torch.backends.cudnn.benchmark,
      cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
      matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
      cuda=torch.version.cuda,
    )
  return info


def run_worker(args) -> int:
  """One (framework, dtype) in this process; rows to --worker_out."""
  recorder = Recorder(args.worker, args.dtype, args)
  if args.worker in ('mnv2_jax', 'flax'):
    info = bench_jax(args, recorder, args.worker)
  elif args.worker == 'limits':
    info = bench_limits(args, recorder)
  elif args.worker == 'keras':
    info = bench_keras(args, recorder)
  elif args.worker in ('torch', 'torch.compile'):
    info = bench_torch(args, recorder, compiled=args.worker == 'torch.compile')
  else:
    raise ValueError(f'unknown worker {args.worker!r}')
  pathlib.Path(args.worker_out).write_text(
    json.dumps({'rows': recorder.rows, 'info': info})
  )
  return 0


# ---------------------------------------------------------------- driver


def plan(args) -> list[tuple[str, str]]:
  """(framework, dtype) of every worker process, in order."""
  if args.mode == 'gpu':
    workers = [('limits', 'float32')]
    for framework in ('mnv2_jax', 'flax', 'torch'):
      workers += [(framework, 'float32'), (framework, 'bfloat16')]
    workers.append(('torch.compile', 'bfloat16'))
  else:
    workers = [
      ('limits', 'float32'),
      ('mnv2_jax', 'float32'),
      ('flax', 'float32'),
      ('keras', 'float32'),
      ('torch', 'float32'),
    ]
    if args.torch_compile:
      workers.append(('torch.compile', 'float32'))
  if args.frameworks:
    wanted = set(args.frameworks.split(',')) | {'limits'}
    workers = [w for w in workers if w[0] in wanted]
  if args.dtypes:
    wanted = set(args.dtypes.split(','))
    workers = [w for w in workers if w[0] == 'limits' or w[1] in wanted]
  return workers


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def machine_info(args) -> dict:
  info = {
    'platform': platform.platform(),
    'python': platform.python_version(),
    'cpu_model': cpu_model(),
    'usable_cores': len(os.sched_getaffinity(0))
    if hasattr(os, 'sched_getaffinity')
    else os.cpu_count(),
    'malloc': os.environ.get('GLIBC_TUNABLES', 'glibc defaults'),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  for package in VERSIONED_PACKAGES:
    if _version(package):
      info[package] = _version(package)
  if args.mode == 'gpu':
    try:
      out = subprocess.run(
        [
          'nvidia-smi',
          '--query-gpu=name,driver_version,memory.total',
          '--format=csv,noheader',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
      ).stdout.splitlines()[0]
      name, driver, memory = [part.strip() for part in out.split(',')]
      info.update(gpu=name, driver=driver, gpu_memory=memory)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
      info['gpu'] = 'unknown'
  return info


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def device_slug(args, machine: dict) -> str:
  if args.mode == 'cpu' or machine.get('gpu', 'unknown') == 'unknown':
    return 'cpu'
  return re.sub(r'[^a-z0-9]+', '_', machine.get('gpu', 'gpu').lower()).strip(
    '_'
  )


def spec_bandwidth(gpu_name: str) -> float | None:
  for name, bandwidth in SPEC_BANDWIDTH.items():
    if name.lower() in gpu_name.lower():
      return bandwidth
  return None


def compare(rows: list[dict]) -> None:
  """Adds 'vs_best_peer': images/s over the fastest peer row of the same
  kind, batch and dtype."""
  best = {}
  for row in rows:
    if row['framework'] in PEERS:
      key = (row['kind'], row['batch'], row['dtype'])
      best[key] = max(best.get(key, 0.0), row['images_per_s'])
  for row in rows:
    peer = best.get((row['kind'], row['batch'], row['dtype']))
    row['vs_best_peer'] = row['images_per_s'] / peer if peer else None


@functools.lru_cache(maxsize=None)
def _model_counts(width_multiplier: float, resolution: int, num_classes: int):
  from mnv2_jax.models import counting
  from mnv2_jax.models import mobilenet_v2

  model = mobilenet_v2.MobileNetV2(
    num_classes=num_classes, width_multiplier=width_multiplier
  )
  multiply_adds = counting.model_statistics(model, resolution)['multiply_adds']
  traffic = {
    dtype: counting.activation_traffic(model, resolution, size)
    for dtype, size in (('float32', 4), ('bfloat16', 2))
  }
  return multiply_adds, traffic


def model_counts(args) -> tuple[int, dict]:
  """Forward multiply-adds and least activation traffic of the benchmark's
  model (mnv2_jax.stats)."""
  return _model_counts(args.width_multiplier, args.resolution, args.num_classes)


def roofline(args, rows: list[dict], limits: dict, machine: dict) -> dict:
  """Each row as a percentage of its roofline: the lower of the memory limit
  (least activation traffic / bandwidth) and the compute limit (multiply-adds
  / the measured matrix-product rate; a training step does three times the
  forward pass's: forward, input gradients, weight gradients)."""
  multiply_adds, traffic_of = model_counts(args)
  result = {
    'bandwidth_measured': limits.get('copy_bandwidth_bytes_per_s'),
    'bandwidth_spec': spec_bandwidth(machine.get('gpu', '')),
    'multiply_adds_per_image': multiply_adds,
  }
  bandwidth = result['bandwidth_spec'] or result['bandwidth_measured']
  result['bandwidth_used'] = bandwidth
  for dtype in ('float32', 'bfloat16'):
    traffic = traffic_of[dtype]
    entry = result[dtype] = {**traffic}
    flops = limits.get(f'matmul_{dtype}_flops_per_s')
    for kind, passes in (('training', 3), ('inference', 1)):
      limit = {}
      if bandwidth:
        limit['memory'] = bandwidth / traffic[f'{kind}_bytes']
      if flops:
        limit['compute'] = flops / (2 * passes * multiply_adds)
      for bound, value in limit.items():
        entry[f'{kind}_{bound}_images_per_s'] = value
      if limit:
        bound = min(limit, key=limit.get)
        entry[f'{kind}_images_per_s'] = limit[bound]
        entry[f'{kind}_bound'] = bound
  for row in rows:
    limit = result.get(row['dtype'], {}).get(f'{row["kind"]}_images_per_s')
    row['percent_of_roofline'] = (
      100 * row['images_per_s'] / limit if limit else None
    )
  return result


def targets(args, rows: list[dict]) -> list[tuple[str, str, str]]:
  """(target, measured, met?) lines of the issue's speed targets."""

  def rate(framework, kind, dtype, batch):
    found = [
      r['images_per_s']
      for r in rows
      if r['framework'] == framework
      and r['kind'] == kind
      and r['dtype'] == dtype
      and r['batch'] == batch
    ]
    return max(found) if found else None

  def line(name, ours, theirs, bar, higher=True):
    if not ours or not theirs:
      return (name, 'not measured', '-')
    ratio = ours / theirs
    met = ratio >= bar if higher else ratio <= bar
    return (name, f'{ratio:.2f}x', 'met' if met else 'NOT met')

  b, lb = args.batch, args.latency_batch
  if args.mode == 'cpu':
    peers = lambda kind: max(
      [
        r['images_per_s']
        for r in rows
        if r['framework'] in PEERS and r['kind'] == kind and r['batch'] == b
      ]
      or [0.0]
    )
    return [
      line(
        f'inference, batch {b}: >= 1.4x the best peer',
        rate('mnv2_jax', 'inference', 'float32', b),
        peers('inference'),
        1.4,
      ),
      line(
        f'training, batch {b}: >= 1.2x the best peer',
        rate('mnv2_jax', 'training', 'float32', b),
        peers('training'),
        1.2,
      ),
    ]
  torch_latency = max(
    [
      r['images_per_s']
      for r in rows
      if r['framework'] in ('torch', 'torch.compile')
      and r['kind'] == 'inference'
      and r['batch'] == lb
    ]
    or [0.0]
  )
  ours_latency = [
    rate('mnv2_jax', 'inference', d, lb) for d in ('float32', 'bfloat16')
  ]
  lines = [
    line(
      f'bfloat16 training, batch {b}: >= 1.6x torch.compile (AMP)',
      rate('mnv2_jax', 'training', 'bfloat16', b),
      rate('torch.compile', 'training', 'bfloat16', b),
      1.6,
    ),
    line(
      f'float32 training, batch {b}: >= 1.2x PyTorch eager channels_last',
      rate('mnv2_jax', 'training', 'float32', b),
      rate('torch', 'training', 'float32', b),
      1.2,
    ),
    line(
      f'bfloat16 inference, batch {b}: >= 1.3x torch.compile',
      rate('mnv2_jax', 'inference', 'bfloat16', b),
      rate('torch.compile', 'inference', 'bfloat16', b),
      1.3,
    ),
    # Latency: our time over PyTorch's best time = their rate over ours.
    line(
      f"latency, batch {lb}: <= 0.5x PyTorch's best",
      torch_latency,
      max(ours_latency) if all(ours_latency) else None,
      0.5,
      higher=False,
    ),
  ]
  if all(ours_latency):
    lines.append(
      (
        'latency: bfloat16 no slower than float32',
        f'{ours_latency[1] / ours_latency[0]:.2f}x the float32 rate',
        'met' if ours_latency[1] >= ours_latency[0] else 'NOT met',
      )
    )
  return lines


def markdown(args, machine, rows, infos, roof, command, date, total_s) -> str:
  device = machine.get('gpu') or machine['cpu_model']
  versions = ', '.join(
    f'{k} {machine[k]}' for k in VERSIONED_PACKAGES if k in machine
  )
  lines = [
    f'# MobileNetV2 {args.width_multiplier}-{args.resolution} speed, '
    f'{args.mode.upper()}',
    '',
    f'{date}; {device}'
    + (f', driver {machine["driver"]}' if 'driver' in machine else '')
    + f'; {machine["usable_cores"]} usable CPU cores ({machine["cpu_model"]});'
    f' Python {machine["python"]}; {versions}; malloc: {machine["malloc"]}.',
    f'Command: `{command}` ({total_s:.0f} s). Each framework and dtype ran '
    'in a fresh process of its own, on the same random inputs; median of '
    'the timed calls after the first (tracing + compilation) and the '
    'warm-up calls.',
    '',
    '| framework | dtype | variant | kind | batch | median ms | images/s '
    '| vs best peer | % of roofline | first call s | peak memory GiB |',
    '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ]
  order = {'inference': 0, 'training': 1}
  for row in sorted(
    rows,
    key=lambda r: (
      order[r['kind']],
      r['batch'],
      r['dtype'],
      -r['images_per_s'],
    ),
  ):
    name = (
      f'**{row["framework"]}**'
      if row['framework'] == 'mnv2_jax'
      else row['framework']
    )
    ratio = f'{row["vs_best_peer"]:.2f}x' if row.get('vs_best_peer') else ''
    roof_pct = (
      f'{row["percent_of_roofline"]:.1f}%'
      if row.get('percent_of_roofline')
      else ''
    )
    memory = (
      f'{row["peak_memory_bytes"] / 2**30:.2f}'
      if row.get('peak_memory_bytes')
      else ''
    )
    lines.append(
      f'| {name} | {row["dtype"]} | {row["variant"]} | {row["kind"]} '
      f'| {row["batch"]} | {row["median_s"] * 1e3:.2f} '
      f'| {row["images_per_s"]:.1f} | {ratio} | {roof_pct} '
      f'| {row["first_call_s"]:.1f} | {memory} |'
    )
  lines += ['', '## Targets', '', '| target | measured | |', '|---|---|---|']
  lines += [
    f'| {name} | {value} | {met} |' for name, value, met in targets(args, rows)
  ]
  lines += ['', '## The physical limit', '']
  measured = roof.get('bandwidth_measured')
  if measured:
    lines.append(
      f'- Memory bandwidth: {measured / 1e9:.0f} GB/s measured '
      '(an array copy, read + write)'
      + (
        f'; {roof["bandwidth_spec"] / 1e12:.2f} TB/s published '
        '(used for the roofline)'
        if roof.get('bandwidth_spec')
        else ' (used for the roofline)'
      )
      + '.'
    )
  limits = infos.get(('limits', 'float32')) or {}
  if roof.get('multiply_adds_per_image'):
    lines.append(
      f'- {roof["multiply_adds_per_image"] / 1e6:.0f}M multiply-'
      'adds per image in the forward pass.'
    )
  for dtype in ('float32', 'bfloat16'):
    if f'matmul_{dtype}_flops_per_s' in limits:
      precision = (
        ' (JAX default precision: TF32 on NVIDIA GPUs)'
        if dtype == 'float32'
        else ''
      )
      lines.append(
        f'- Matrix products ({dtype} inputs{precision}): '
        f'{limits[f"matmul_{dtype}_flops_per_s"] / 1e12:.2f} '
        'TFLOP/s measured.'
      )
  for dtype in ('float32', 'bfloat16'):
    traffic = roof.get(dtype, {})
    if 'training_images_per_s' not in traffic:
      continue
    lines.append(
      f'- {dtype} activations: {traffic["conv_output_elements"]:,} '
      'convolution outputs per image; at least '
      f'{traffic["training_bytes"] / 1e6:.1f} MB of memory traffic per '
      'image in a training step (5 accesses each) and '
      f'{traffic["inference_bytes"] / 1e6:.1f} MB in inference (2).'
    )
    for kind in ('training', 'inference'):
      bounds = ', '.join(
        f'{bound} {traffic[f"{kind}_{bound}_images_per_s"]:,.0f}'
        for bound in ('memory', 'compute')
        if f'{kind}_{bound}_images_per_s' in traffic
      )
      lines.append(
        f'  - {kind} roofline: {bounds} images/s; the row '
        f'percentages use the {traffic[f"{kind}_bound"]} bound.'
      )
  lines += ['', '## Versions and settings', '']
  for (framework, dtype), info in infos.items():
    if info and framework != 'limits':
      lines.append(
        f'- {framework} ({dtype}): '
        + ', '.join(f'{k} {v}' for k, v in info.items())
      )
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.worker:
    return run_worker(args)
  from mnv2_jax.training import allocator

  if args.malloc == 'tuned' and args.mode == 'cpu':
    allocator.reexec_with_tuned_malloc()
  elif args.malloc == 'default':
    os.environ.setdefault(allocator.SWITCH, 'default')
  start = time.perf_counter()
  date = datetime.datetime.now().isoformat(timespec='seconds')
  machine = machine_info(args)
  command = 'python benchmarks/speed.py' + ''.join(
    f' {a}' for a in (sys.argv[1:] if argv is None else argv)
  )
  print(f'# MobileNetV2 speed, {args.mode}: {date}', flush=True)
  rows, infos = [], {}
  forwarded = [
    f'--mode={args.mode}',
    f'--batch={args.batch}',
    f'--latency_batch={args.latency_batch}',
    f'--resolution={args.resolution}',
    f'--width_multiplier={args.width_multiplier}',
    f'--num_classes={args.num_classes}',
    f'--warmup={args.warmup}',
    f'--seed={args.seed}',
  ]
  if args.repeats is not None:
    forwarded.append(f'--repeats={args.repeats}')
  if args.skip_training:
    forwarded.append('--skip_training')
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  stem = out_dir / f'speed_{device_slug(args, machine)}'

  def write_results() -> str:
    """The table so far: a run cut short keeps the rows it measured."""
    compare(rows)
    roof = roofline(args, rows, infos.get(('limits', 'float32')) or {}, machine)
    total_s = time.perf_counter() - start
    text = markdown(args, machine, rows, infos, roof, command, date, total_s)
    stem.with_suffix('.json').write_text(
      json.dumps(
        {
          'date': date,
          'command': command,
          'machine': machine,
          'config': {
            k: v for k, v in vars(args).items() if not k.startswith('worker')
          },
          'rows': rows,
          'roofline': roof,
          'total_run_s': total_s,
          'frameworks': {f'{f} {d}': i for (f, d), i in infos.items()},
        },
        indent=2,
      )
      + '\n'
    )
    stem.with_suffix('.md').write_text(text)
    return text

  with tempfile.TemporaryDirectory() as scratch:
    for framework, dtype in plan(args):
      out = os.path.join(scratch, f'{framework}_{dtype}.json')
      print(f'\n[{framework}, {dtype}] in a new process', flush=True)
      try:
        subprocess.run(
          [
            sys.executable,
            os.path.abspath(__file__),
            *forwarded,
            f'--worker={framework}',
            f'--dtype={dtype}',
            f'--worker_out={out}',
          ],
          check=True,
          timeout=args.worker_timeout,
        )
      except (
        subprocess.CalledProcessError,
        subprocess.TimeoutExpired,
      ) as error:
        print(f'[{framework}, {dtype}] FAILED: {error}', flush=True)
        continue
      result = json.loads(pathlib.Path(out).read_text())
      rows += result['rows']
      infos[(framework, dtype)] = result['info']
      write_results()
  print('\n' + write_results())
  print(f'wrote {stem}.json and {stem}.md')
  return 0


if __name__ == '__main__':
  sys.exit(main())
