r"""int8 drift of the peers' TFLite exports, with ReLU and with ReLU6.

`python -m mnv2_jax.export --quantize int8` holds MobileNetV2 to 5% of its
logits' range (tests/test_convert.py; measured 0.75%); MobileNetV1 exports
within 1.1%. ShuffleNet and NASNet-A do not (docs/model.md). Paper §3 chooses
ReLU6 "because of its robustness when used with low-precision computation";
both peers use ReLU, whose range is unbounded. This checks whether that is
what costs them: each peer is trained for a few steps on the digits and
exported to int8, once as built and once with every ReLU replaced by ReLU6
(`flax.linen.relu` swapped in the worker process, nothing else changed).
Each variant runs in a fresh process:

  python experiments/int8_peers.py --output experiments/results/int8_peers.json
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
# (architecture, width multiplier, config overrides): the suite's small peers
# (tests/test_peers.py) and ShuffleNet at its other scales.
VARIANTS = (
  ('shufflenet', 0.5, {}),
  ('shufflenet', 1.0, {}),
  ('shufflenet', 2.0, {}),
  (
    'nasnet_a',
    1.0,
    {
      'model.nasnet_filters': 8,
      'model.nasnet_cells_per_stack': 1,
      'model.implementation': 'xla',
    },
  ),
)
ACTIVATIONS = ('relu', 'relu6')
STEPS = 4
TOLERANCE = 0.05  # tests/test_convert.py's bound for MobileNetV2


def worker(architecture: str, width: float, activation: str, workdir: str):
  """Trains one variant for STEPS steps, exports it to int8, prints JSON."""
  import flax.linen as nn  # noqa: PLC0415 (the worker process only)
  import jax  # noqa: PLC0415

  if activation == 'relu6':
    nn.relu = jax.nn.relu6  # every nn.relu call in the peers' modules
  from mnv2_jax.training import trainer  # noqa: PLC0415
  from mnv2_jax.weights import exporters  # noqa: PLC0415

  overrides = next(o for a, w, o in VARIANTS if (a, w) == (architecture, width))
  spec = importlib.util.spec_from_file_location(
    'quickstart', REPOSITORY / 'configs' / 'quickstart.py'
  )
  quickstart = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(quickstart)
  config = quickstart.get_config()
  config.update_from_flattened_dict(
    {
      'model.architecture': architecture,
      'model.width_multiplier': width,
      'num_train_steps': STEPS,
      'warmup_epochs': 0.0,
      'lr_schedule': 'exponential',
      'base_learning_rate': 0.01,
      'batch_size': 32,
      'eval_every_epochs': 1000.0,
      'checkpoint_every_steps': STEPS,
      'log_every_steps': STEPS,
      **overrides,
    }
  )
  trainer.train_and_evaluate(config, workdir)
  result = exporters.export(workdir, 'tflite', 'int8')
  print(
    json.dumps(
      {
        'architecture': architecture,
        'width_multiplier': width,
        'activation': activation,
        'train_steps': STEPS,
        'max_rel_diff': result['max_rel_diff'],
        'top1_agreement': result['top1_agreement'],
        'within_tolerance': result['max_rel_diff'] < TOLERANCE,
      }
    )
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--output', required=True)
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    architecture, width, activation, workdir = args.worker.split(':')
    worker(architecture, float(width), activation, workdir)
    return
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for architecture, width, _ in VARIANTS:
      for activation in ACTIVATIONS:
        workdir = os.path.join(root, f'{architecture}_{width}_{activation}')
        run = subprocess.run(
          [
            sys.executable,
            __file__,
            '--output',
            args.output,
            '--worker',
            f'{architecture}:{width}:{activation}:{workdir}',
          ],
          capture_output=True,
          text=True,
          cwd=REPOSITORY,
          env={**os.environ, 'PYTHONPATH': str(REPOSITORY)},
        )
        if run.returncode:
          sys.exit(
            f'{architecture} {width} {activation}:\n{run.stderr[-3000:]}'
          )
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
  record = {
    'command': 'python experiments/int8_peers.py --output ' + args.output,
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
