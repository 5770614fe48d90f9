r"""int8 drift of the peers' TFLite exports, with ReLU and with ReLU6, where it
comes from, and MobileNetV2 and V1 under the same protocol.

`python -m mnv2_jax.export --quantize int8` holds MobileNetV2 to 5% of its
logits' range (tests/test_convert.py; measured 0.75%); MobileNetV1 exports
within 1.1%. ShuffleNet and NASNet-A do not (docs/model.md). Paper §3 chooses
ReLU6 "because of its robustness when used with low-precision computation";
both peers use ReLU, whose range is unbounded. This checks whether that is
what costs them: each peer is trained for a few steps on the digits and
exported to int8, once as built and once with every ReLU replaced by ReLU6
(`flax.linen.relu` swapped in the worker process, nothing else changed).
MobileNetV2 0.35 and MobileNetV1 0.25 (ReLU6 as built) run the same protocol,
so that the bound is read against the networks it was set on.

Besides the export's own figures (`weights/exporters.py`: the largest logit
difference over the held digits relative to the largest logit), each row
gives where the drift comes from:
- `weights_only_max_rel_diff`: the JAX model with every kernel rounded to
  int8 per output channel (as the converter does) and float activations;
- `median_image_rel_diff`: the export's drift on the median held image
  rather than the worst;
- `largest_tensor_rms_steps`: TFLite's quantization debugger on 50
  calibration images, the largest root-mean-square error of any quantized
  tensor, in units of its quantization step (ideal rounding: 0.29).

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
  ('mobilenet_v2', 0.35, {}),
  ('mobilenet_v1', 0.25, {}),
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
# MobileNetV1 and V2 use ReLU6 as built: one row each.
RELU6_AS_BUILT = ('mobilenet_v2', 'mobilenet_v1')
DEBUG_IMAGES = 50
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
  sources = drift_sources(workdir, result['path'])
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
        **sources,
      }
    )
  )


def per_channel_int8(kernel):
  """`kernel` rounded to 8 bits per output channel (its last axis),
  symmetric, as TFLite quantizes convolution weights."""
  import numpy as np  # noqa: PLC0415 (the worker process only)

  kernel = np.asarray(kernel)
  step = np.abs(kernel).max(axis=tuple(range(kernel.ndim - 1))) / 127
  step = np.where(step == 0, 1.0, step)
  return (np.round(kernel / step) * step).astype(kernel.dtype)


def drift_sources(workdir: str, exported_path: str) -> dict:
  """The three figures the module docstring lists."""
  import csv  # noqa: PLC0415 (the worker process only)
  import io  # noqa: PLC0415

  import flax  # noqa: PLC0415
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415

  from mnv2_jax.tasks import inference  # noqa: PLC0415
  from mnv2_jax.training import workdir as workdir_lib  # noqa: PLC0415
  from mnv2_jax.weights import exporters  # noqa: PLC0415

  config, variables, _ = workdir_lib.load(workdir)
  images = exporters.held_images(config)
  reference = np.asarray(
    jax.jit(inference.logits_function(config, variables))(images)
  )
  scale = np.max(np.abs(reference))
  flat = flax.traverse_util.flatten_dict(variables['params'])
  rounded = {
    k: per_channel_int8(v) if k[-1] == 'kernel' else v for k, v in flat.items()
  }
  weights_only = np.asarray(
    jax.jit(
      inference.logits_function(
        config,
        {**variables, 'params': flax.traverse_util.unflatten_dict(rounded)},
      )
    )(images)
  )
  exported = exporters.run_exported(exported_path, images)
  per_image = np.max(np.abs(exported - reference), axis=-1) / scale

  calibration = exporters.calibration_images(config, DEBUG_IMAGES)
  tf_fn = exporters.to_tf_function(
    inference.logits_function(config, variables, implementation='xla'),
    config.image_size,
    batch=1,
  )
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
    [tf_fn.get_concrete_function()], tf_fn
  )
  converter.optimizations = [tf.lite.Optimize.DEFAULT]

  def representative():
    for image in calibration:
      yield [image[None]]

  converter.representative_dataset = representative
  debugger = tf.lite.experimental.QuantizationDebugger(
    converter=converter, debug_dataset=representative
  )
  debugger.run()
  dump = io.StringIO()
  debugger.layer_statistics_dump(dump)
  steps = [
    float(row['mean_squared_error']) ** 0.5 / float(row['scale'])
    for row in csv.DictReader(io.StringIO(dump.getvalue()))
    if float(row['scale']) > 0
  ]
  return {
    'weights_only_max_rel_diff': float(
      np.max(np.abs(weights_only - reference)) / scale
    ),
    'median_image_rel_diff': float(np.median(per_image)),
    'largest_tensor_rms_steps': max(steps),
    'quantized_tensors': len(steps),
  }


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
      activations = (
        ('relu6',) if architecture in RELU6_AS_BUILT else ACTIVATIONS
      )
      for activation in activations:
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
