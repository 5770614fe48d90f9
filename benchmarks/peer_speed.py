r"""Training and inference speed of MobileNetV2 and its peers on the proxy.

The next study trains every peer of paper Table 4 on the built-in proxy
(cluttered digits at 48x48, batch 128, on 2 CPU cores), so each one's speed
there decides what that study costs. This times, for each network of Table 4
at the proxy's size and 10 classes, the package's own jitted training step
(forward, backward, RMSProp update, BatchNorm statistics) and its evaluation
forward pass, each network in a fresh process:

  python benchmarks/peer_speed.py --out_dir benchmarks/results

The physical limit is compute: each image costs 2 x multiply-adds FLOPs
forward and about 3 times that for a training step. The matrix-product rate
this machine reaches (float32, a 1024^3 product, measured in its own process)
gives a ceiling in images/s for each network, and the tables print how far
from it each one runs. Networks of equal multiply-adds are compared at the
same ceiling, so a lower fraction is the network's layers being slower per
FLOP on this CPU (depthwise and grouped convolutions are memory-bound).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Table 4's networks: (name, config.model overrides).
NETWORKS = (
  ('MobileNetV2', {'architecture': 'mobilenet_v2', 'width_multiplier': 1.0}),
  (
    'MobileNetV2 (1.4)',
    {'architecture': 'mobilenet_v2', 'width_multiplier': 1.4},
  ),
  ('MobileNetV1', {'architecture': 'mobilenet_v1', 'width_multiplier': 1.0}),
  ('ShuffleNet (1.5)', {'architecture': 'shufflenet', 'width_multiplier': 1.5}),
  ('ShuffleNet (x2)', {'architecture': 'shufflenet', 'width_multiplier': 2.0}),
  ('NASNet-A', {'architecture': 'nasnet_a', 'width_multiplier': 1.0}),
)


def _config(model_overrides: dict, image_size: int, batch: int):
  from mnv2_jax import configuration  # noqa: PLC0415 (in the worker only)

  config = configuration.base_config()
  config.dataset.name = 'cluttered_digits'
  config.num_classes = 10
  config.image_size = image_size
  config.batch_size = batch
  config.model.update(model_overrides)
  configuration.validate(config)
  return config


def _time(fn, warmup: int, repeats: int) -> float:
  """The median seconds of `repeats` calls after `warmup` calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def worker(args) -> dict:
  """One network, this process: compile, then time both steps."""
  import functools  # noqa: PLC0415

  import jax  # noqa: PLC0415 (a fresh process per network)
  import numpy as np  # noqa: PLC0415

  from mnv2_jax import tasks  # noqa: PLC0415
  from mnv2_jax.models import counting  # noqa: PLC0415
  from mnv2_jax.models import initializers  # noqa: PLC0415
  from mnv2_jax.models.building import build_model  # noqa: PLC0415
  from mnv2_jax.training import optimization  # noqa: PLC0415
  from mnv2_jax.training import provenance  # noqa: PLC0415
  from mnv2_jax.training import state as training_state  # noqa: PLC0415
  from mnv2_jax.training import trainer  # noqa: PLC0415

  if args.worker == 'limits':
    n = 1024
    a = jax.numpy.ones((n, n), jax.numpy.float32)
    matmul = jax.jit(lambda u, v: u @ v)
    seconds = _time(lambda: matmul(a, a).block_until_ready(), 3, 20)
    return {
      'matmul_float32_flops_per_s': 2 * n**3 / seconds,
      'machine': provenance.machine(),
      'versions': provenance.versions(),
    }

  overrides = dict(NETWORKS)[args.worker]
  config = _config(overrides, args.image_size, args.batch)
  task = tasks.build_task(config)
  _, learning_rate, optimizer = optimization.build(config, 10_000)
  started = time.perf_counter()
  variables = initializers.host_variables(
    task.model, training_state.model_input_shape(config), 0, train=False
  )
  state = training_state.create_train_state(config, variables, optimizer)
  step = jax.jit(
    functools.partial(
      trainer.train_step,
      model=task.model,
      task=task,
      optimizer=optimizer,
      config=config,
      learning_rate=learning_rate,
    )
  )
  rng = np.random.default_rng(0)
  shape = (args.batch, args.image_size, args.image_size, 3)
  batch = {
    'image': rng.uniform(-1, 1, shape).astype(np.float32),
    'label': rng.integers(0, 10, args.batch).astype(np.int32),
  }
  key = jax.random.key(0)
  holder = {'state': state}

  def train():
    holder['state'], metrics = step(holder['state'], batch, key)
    jax.block_until_ready(metrics)

  train()  # compiles
  compile_seconds = time.perf_counter() - started
  train_seconds = _time(train, args.warmup, args.repeats)
  weights = {
    'params': holder['state'].params,
    'batch_stats': holder['state'].batch_stats,
  }
  forward = jax.jit(
    lambda w, x: task.model.apply(w, x, train=False)[0]  # logits
  )
  images = batch['image']
  forward(weights, images).block_until_ready()
  infer_seconds = _time(
    lambda: forward(weights, images).block_until_ready(),
    args.warmup,
    args.repeats,
  )
  counts = counting.model_statistics(build_model(config), config.image_size)
  return {
    'network': args.worker,
    'model': dict(overrides),
    'implementation': jax.default_backend(),
    'multiply_adds_per_image': counts['multiply_adds'],
    'trainable_parameters': counts['trainable_parameters'],
    'first_step_seconds': compile_seconds,
    'training_images_per_s': args.batch / train_seconds,
    'inference_images_per_s': args.batch / infer_seconds,
  }


def _in_fresh_process(args, name: str) -> dict:
  print(f'{name}: in a new process', flush=True)
  command = [
    sys.executable,
    os.path.abspath(__file__),
    f'--worker={name}',
    f'--image_size={args.image_size}',
    f'--batch={args.batch}',
    f'--warmup={args.warmup}',
    f'--repeats={args.repeats}',
  ]
  output = subprocess.run(
    command, cwd=REPO_ROOT, capture_output=True, text=True, check=False
  )
  if output.returncode != 0:
    raise RuntimeError(f'{name} failed:\n{output.stderr[-3000:]}')
  return json.loads(output.stdout.strip().splitlines()[-1])


def table(result: dict) -> str:
  flops = result['limits']['matmul_float32_flops_per_s']
  lines = [
    f'# Peers on the proxy: {result["image_size"]}x{result["image_size"]}, '
    f'batch {result["batch"]}, 10 classes, float32',
    '',
    f'{result["command"]}  ',
    f'{result["limits"]["machine"]["cpu"]}, '
    f'{result["limits"]["machine"]["cpu_cores"]} cores, {result["date"]}. '
    'Matrix-product ceiling: '
    f'{flops / 1e9:.0f} GFLOP/s (float32).',
    '',
    '| network | MAdds/image | train img/s | % of ceiling | infer img/s | '
    '% of ceiling | first step s |',
    '|---|---:|---:|---:|---:|---:|---:|',
  ]
  for row in result['rows']:
    macs = row['multiply_adds_per_image']
    train_ceiling = flops / (2 * 3 * macs)
    infer_ceiling = flops / (2 * macs)
    lines.append(
      f'| {row["network"]} | {macs / 1e6:.1f}M | '
      f'{row["training_images_per_s"]:.0f} | '
      f'{100 * row["training_images_per_s"] / train_ceiling:.0f}% | '
      f'{row["inference_images_per_s"]:.0f} | '
      f'{100 * row["inference_images_per_s"] / infer_ceiling:.0f}% | '
      f'{row["first_step_seconds"]:.0f} |'
    )
  return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--image_size', type=int, default=48)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument(
    '--networks',
    default=','.join(name for name, _ in NETWORKS),
    help='comma-separated names of NETWORKS',
  )
  parser.add_argument('--out_dir', default=None)
  parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(worker(args)))
    return
  names = [name.strip() for name in args.networks.split(',')]
  unknown = set(names) - set(dict(NETWORKS))
  if unknown:
    parser.error(
      f'unknown --networks {sorted(unknown)}; choose from '
      f'{[name for name, _ in NETWORKS]}'
    )
  result = {
    'command': 'python benchmarks/peer_speed.py '
    + shlex.join(argv if argv is not None else sys.argv[1:]),
    'date': time.strftime('%Y-%m-%d'),
    'image_size': args.image_size,
    'batch': args.batch,
    'limits': _in_fresh_process(args, 'limits'),
    'rows': [_in_fresh_process(args, name) for name in names],
  }
  text = table(result)
  print(text)
  if args.out_dir:
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, 'peer_speed.json'), 'w') as f:
      json.dump(result, f, indent=2)
    with open(os.path.join(args.out_dir, 'peer_speed.md'), 'w') as f:
      f.write(text)


if __name__ == '__main__':
  main()
