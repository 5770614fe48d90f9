"""How far float rounding moves MobileNetV2's gradient: the yardstick for
comparing runs that differ only in the order of their sums (1 device against
8, one process against several).

The quickstart's network and first training batch (digits, or the same shape
of standard-normal images with --images normal), at initialization. Each
gradient comes from the trainer's own model and mesh, in a fresh process:

  float32 on 1 device and on 8 (JAX_NUM_CPU_DEVICES=8): what training uses;
  float64 on 1 device and on 8: the reference (the same network with
      model.dtype float64, as tests/test_layers.py builds it);
  float64 with the images times (1 + 1e-7 x standard normal), and 1e-9:
      how much a change the size of float32's rounding (and one 100 times
      smaller), made once at the input, moves the exact gradient.

For each, the relative L2 difference of each parameter's gradient from the
float64 1-device one, over the parameters whose gradient norm is above 1e-4
(the projections' BatchNorm biases have an exactly zero gradient: a shift
the next BatchNorm removes; theirs is rounding noise). Written to
benchmarks/results/gradient_conditioning.json.

  python benchmarks/gradient_conditioning.py [--images digits|normal]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# (name, dtype, devices, input perturbation)
RUNS = (
  ('float32_1_device', 'float32', 1, 0.0),
  ('float32_8_devices', 'float32', 8, 0.0),
  ('float64_1_device', 'float64', 1, 0.0),
  ('float64_8_devices', 'float64', 8, 0.0),
  ('float64_input_times_1e-7_noise', 'float64', 1, 1e-7),
  ('float64_input_times_1e-9_noise', 'float64', 1, 1e-9),
)
SMALLEST_NORM = 1e-4


def gradient(dtype: str, devices: int, perturbation: float, images: str):
  """The gradient of the training loss, {parameter path: array} (run in a
  child process: float64 needs jax_enable_x64 before anything is made)."""
  import jax  # noqa: PLC0415 (the parent process never imports JAX)
  import jax.numpy as jnp  # noqa: PLC0415

  if dtype == 'float64':
    jax.config.update('jax_enable_x64', True)
  from configs import quickstart  # noqa: PLC0415
  from mnv2_jax.data import datasets  # noqa: PLC0415
  from mnv2_jax.models import mobilenet_v2  # noqa: PLC0415
  from mnv2_jax.training import trainer as trainer_lib  # noqa: PLC0415

  mobilenet_v2.DTYPES.setdefault('float64', jnp.float64)
  config = quickstart.get_config()
  config.model.dtype = dtype
  batch = next(
    datasets.train_batches(
      config, start_step=0, per_host_batch_size=config.batch_size
    )
  )
  if images == 'normal':
    batch['image'] = np.random.RandomState(0).standard_normal(
      batch['image'].shape
    )
  if perturbation:
    noise = np.random.RandomState(1).standard_normal(batch['image'].shape)
    batch['image'] = batch['image'] * (1.0 + perturbation * noise)
  batch['image'] = batch['image'].astype(dtype)

  trainer = trainer_lib.Trainer(config, devices=jax.devices()[:devices])
  state = trainer.init_state()
  variables = jax.tree.map(
    lambda x: x.astype(dtype), (state.params, state.batch_stats)
  )

  def loss_gradient(params, batch_stats, batch):
    def loss(params):
      outputs, _ = trainer.model.apply(
        {'params': params, 'batch_stats': batch_stats},
        batch['image'],
        train=True,
        mutable=['batch_stats'],
      )
      return trainer.task.loss(outputs, batch)[0]

    return jax.grad(loss)(params)

  grads = jax.jit(loss_gradient, out_shardings=trainer.replicated)(
    *variables, trainer_lib.global_batch(batch, trainer.data_sharding)
  )
  return {
    jax.tree_util.keystr(path): np.asarray(leaf, np.float64)
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads)
  }


def child(args) -> None:
  grads = gradient(args.dtype, args.devices, args.perturbation, args.images)
  np.savez(args.output, **grads)


def cpu_name() -> str:
  with open('/proc/cpuinfo') as f:
    for line in f:
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  return 'unknown'


def relative_differences(grads, reference) -> dict[str, float]:
  return {
    name: float(
      np.linalg.norm(grads[name] - reference[name])
      / np.linalg.norm(reference[name])
    )
    for name in reference
    if np.linalg.norm(reference[name]) > SMALLEST_NORM
  }


def summary(differences: dict[str, float]) -> dict[str, float]:
  values = np.array(list(differences.values()))
  return {
    'median': float(np.median(values)),
    'max': float(values.max()),
    'max_parameter': max(differences, key=differences.get),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--images', choices=('digits', 'normal'), default='digits'
  )
  parser.add_argument(
    '--output',
    default=str(REPO_ROOT / 'benchmarks/results/gradient_conditioning.json'),
  )
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--dtype', help=argparse.SUPPRESS)
  parser.add_argument('--devices', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--perturbation', type=float, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child(args)
    return 0

  grads = {}
  with tempfile.TemporaryDirectory() as scratch:
    for name, dtype, devices, perturbation in RUNS:
      path = os.path.join(scratch, f'{name}.npz')
      environment = {
        **os.environ,
        'JAX_PLATFORMS': 'cpu',  # 8 CPU devices even where a GPU is
        'JAX_NUM_CPU_DEVICES': str(devices),
      }
      subprocess.run(
        [
          sys.executable,
          __file__,
          '--child',
          f'--images={args.images}',
          f'--dtype={dtype}',
          f'--devices={devices}',
          f'--perturbation={perturbation}',
          f'--output={path}',
        ],
        check=True,
        env=environment,
        cwd=REPO_ROOT,
      )
      with np.load(path) as arrays:
        grads[name] = dict(arrays)

  reference = grads['float64_1_device']
  results = {
    name: summary(relative_differences(grads[name], reference))
    for name in grads
    if name != 'float64_1_device'
  }
  results['float32_1_device_vs_8_devices'] = summary(
    relative_differences(grads['float32_8_devices'], grads['float32_1_device'])
  )
  previous = {}
  if os.path.exists(args.output):
    with open(args.output) as f:
      previous = json.load(f)
  previous[args.images] = {
    'what': 'relative L2 difference of each parameter gradient from the '
    'float64 1-device gradient (float32_1_device_vs_8_devices: from the '
    'float32 1-device gradient), median and max over the parameters whose '
    'gradient norm is > 1e-4',
    'command': f'python benchmarks/gradient_conditioning.py --images '
    f'{args.images}',
    'machine': {
      'cpu': cpu_name(),
      'jax': importlib.metadata.version('jax'),
      'date': datetime.date.today().isoformat(),
    },
    **results,
  }
  with open(args.output, 'w') as f:
    json.dump(previous, f, indent=2)
    f.write('\n')
  for name, row in results.items():
    print(
      f'{name:36s} median {row["median"]:.2e}  max {row["max"]:.2e} '
      f'({row["max_parameter"]})'
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())
