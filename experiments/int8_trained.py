r"""int8 drift of fully trained proxy models: the Figure 5 sweeps' runs
(8 epochs on the cluttered digits at 48 pixels) exported to int8.

experiments/int8_peers.py measures the drift after 4 steps on the digits,
where ShuffleNet and NASNet-A drift past the export test's 5% and
MobileNetV2 comes close to it. A model in use is trained: this exports the
sweeps' final checkpoints of each family (as `python -m mnv2_jax.export
--quantize int8` does: calibration on 200 training images, the check on 360
test images) and records the same figures, each export in a fresh process,
with how unevenly each model's activations fill one scale per tensor
(`activation_spread`).
Paper §3 chooses ReLU6 for low-precision robustness, and the peers use ReLU:
one more row trains ShuffleNet 0.5x with the sweep's recipe and seed but
every ReLU replaced by ReLU6 (`flax.linen.relu` swapped in its process, as
in experiments/int8_peers.py), then exports it the same way.
It needs the sweeps' workdirs (the commands in configs/sweep_*.py):

  python experiments/int8_trained.py --runs_dir experiments/runs \
      --output experiments/results/int8_trained.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
# (family, the sweep's workdir under --runs_dir, the point's folder)
POINTS = (
  ('mobilenet_v2', 'mobilenet_v2_48px', 'width_multiplier=0.75_seed=0'),
  ('mobilenet_v1', 'peers_mobilenet_v1', 'width_multiplier=0.5_seed=0'),
  ('shufflenet', 'peers_shufflenet', 'width_multiplier=0.5_seed=0'),
  ('shufflenet', 'peers_shufflenet', 'width_multiplier=1_seed=0'),
  ('nasnet_a', 'peers_nasnet', 'nasnet_filters=12_seed=0'),
  ('nasnet_a', 'peers_nasnet', 'nasnet_filters=20_seed=0'),
)
TOLERANCE = 0.05  # tests/test_convert.py's bound for MobileNetV2
# The ReLU6 row: configs/sweep_shufflenet.py's point at this width and seed.
RELU6_SWEEP, RELU6_POINT = (
  'sweep_shufflenet.py',
  {
    'model.width_multiplier': 0.5,
    'seed': 0,
  },
)


def worker(workdir: str, output: str) -> None:
  """Exports one workdir to int8 TFLite at `output` and prints the figures,
  with the spread of its activations (`activation_spread`)."""
  from mnv2_jax.weights import exporters  # noqa: PLC0415 (the worker only)

  result = exporters.export(workdir, 'tflite', 'int8', output)
  figures = {k: v for k, v in result.items() if k != 'path'}
  print(json.dumps({**figures, **activation_spread(workdir)}))


def activation_spread(workdir: str, count: int = 120) -> dict:
  """How unevenly the network's feature maps fill one int8 scale: for each
  4-D endpoint on `count` held images, the largest channel's range (max
  |activation|) over the median channel's; the median of that ratio over
  the endpoints, and the largest |activation| anywhere."""
  import jax  # noqa: PLC0415 (the worker only)
  import numpy as np  # noqa: PLC0415

  from mnv2_jax.models.building import build_model  # noqa: PLC0415
  from mnv2_jax.training import workdir as workdir_lib  # noqa: PLC0415
  from mnv2_jax.weights import exporters  # noqa: PLC0415

  config, variables, _ = workdir_lib.load(workdir)
  model = build_model(config)
  images = exporters.held_images(config, count)
  _, endpoints = jax.jit(lambda v, x: model.apply(v, x, train=False))(
    variables, images
  )
  ratios, largest = [], 0.0
  for value in endpoints.values():
    value = np.abs(np.asarray(value))
    if value.ndim != 4:
      continue
    per_channel = value.max(axis=(0, 1, 2))
    ratios.append(per_channel.max() / max(np.median(per_channel), 1e-9))
    largest = max(largest, float(per_channel.max()))
  return {
    'median_channel_range_ratio': float(np.median(ratios)),
    'largest_activation': largest,
  }


def relu6_worker(workdir: str, output: str) -> None:
  """Trains the ReLU6 variant into `workdir`, then exports it (`worker`)."""
  import flax.linen as nn  # noqa: PLC0415 (the worker only)
  import jax  # noqa: PLC0415

  nn.relu = jax.nn.relu6  # every nn.relu call in the peers' modules
  from mnv2_jax import configuration  # noqa: PLC0415
  from mnv2_jax.training import trainer  # noqa: PLC0415

  config = configuration.load_file(str(REPOSITORY / 'configs' / RELU6_SWEEP))
  config.update_from_flattened_dict(RELU6_POINT)
  trainer.train_and_evaluate(config, workdir)
  worker(workdir, output)


def _run(args, kind: str, workdir: str, output: str) -> dict:
  run = subprocess.run(
    [
      sys.executable,
      __file__,
      '--runs_dir',
      args.runs_dir,
      '--output',
      args.output,
      f'--{kind}',
      f'{workdir}::{output}',
    ],
    capture_output=True,
    text=True,
    cwd=REPOSITORY,
  )
  if run.returncode:
    sys.exit(f'{workdir}:\n{run.stderr[-3000:]}')
  return json.loads(run.stdout.strip().splitlines()[-1])


def _test_top1(workdir: str) -> float:
  """The run's own test top-1 (float32, its result.json)."""
  with open(os.path.join(workdir, 'result.json')) as f:
    return json.load(f)['final']['test']['top1']


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs_dir', required=True)
  parser.add_argument('--output', required=True)
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument('--relu6_worker', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(*args.worker.split('::'))
    return
  if args.relu6_worker:
    relu6_worker(*args.relu6_worker.split('::'))
    return
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    for family, sweep, point in POINTS:
      workdir = os.path.join(args.runs_dir, sweep, point)
      if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
        sys.exit(
          f'{workdir}: no checkpoints; run the sweep first (configs/sweep_*.py'
          ' give the commands).'
        )
      output = os.path.join(scratch, f'{sweep}_{point}.tflite')
      figures = _run(args, 'worker', workdir, output)
      rows.append(
        {
          'family': family,
          'point': f'{sweep}/{point}',
          'float_test_top1': _test_top1(workdir),
          **figures,
          'within_tolerance': figures['max_rel_diff'] < TOLERANCE,
        }
      )
      print(rows[-1], flush=True)
    workdir = os.path.join(scratch, 'shufflenet_relu6')
    figures = _run(args, 'relu6_worker', workdir, workdir + '.tflite')
    rows.append(
      {
        'family': 'shufflenet, ReLU6 in place of ReLU',
        'point': f'configs/{RELU6_SWEEP} {RELU6_POINT}, trained here',
        'float_test_top1': _test_top1(workdir),
        **figures,
        'within_tolerance': figures['max_rel_diff'] < TOLERANCE,
      }
    )
    print(rows[-1], flush=True)
  record = {
    'command': (
      f'python experiments/int8_trained.py --runs_dir {args.runs_dir} '
      f'--output {args.output}'
    ),
    'date': datetime.date.today().isoformat(),
    'machine': platform.processor() or platform.machine(),
    'tolerance': TOLERANCE,
    'rows': rows,
  }
  pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
  with open(args.output, 'w') as f:
    json.dump(record, f, indent=1)
    f.write('\n')


if __name__ == '__main__':
  main()
