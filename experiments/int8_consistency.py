r"""int8 drift after fine-tuning with the int8 consistency term
(`config.quantization_consistency`, models/quantization.py).

experiments/int8_trained.py found the trained peers' int8 exports drifting
about 14% (ShuffleNet 0.5x, NASNet-A with 12 filters) against MobileNetV2's
3.4%. For each point this trains the float model (the Figure 5 sweep's
point: 8 epochs on the cluttered digits at 48 pixels, seed 0), then
fine-tunes it from that checkpoint with the same recipe: once plainly (the
control: what more training alone does) and once with the consistency term
at weight 300 (ShuffleNet with three fine-tuning seeds; NASNet-A, about
four times slower, with one). Every run and export is its own process. Each
model is exported as `python -m mnv2_jax.export --quantize int8
--calibration_images N` does, for N = 200 (the default) and 500 (the check
on 360 held test images either way), and the int8 model's top-1 is scored
on the whole test split, next to the float model's.

  python experiments/int8_consistency.py --runs_dir /tmp/int8_consistency \
      --output experiments/results/int8_consistency.json

Runs already in --runs_dir (a result.json) are reused, and each row says
whether its run was. --points picks the points (ShuffleNet 1.5x, Table 4's,
only when named), --calibrations the calibration counts, --ranges the
term's `config.quantization_ranges` (one run each: 'others' rounds each
image with the other images' ranges, so that the term sees clipping), and
--skip_controls leaves out the runs without the term:

  python experiments/int8_consistency.py --runs_dir /tmp/int8_consistency \
      --points nasnet_a_12 --ranges batch others --skip_controls \
      --output experiments/results/int8_consistency_ranges/nasnet_a_12.json
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

from mnv2_jax import choices

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
# (name, sweep config, the point's overrides, fine-tuning seeds with the term)
POINTS = (
  (
    'shufflenet_0.5x',
    'sweep_shufflenet.py',
    {'model.width_multiplier': 0.5},
    (0, 1, 2),
  ),
  ('nasnet_a_12', 'sweep_nasnet.py', {'model.nasnet_filters': 12}, (0,)),
  (
    'shufflenet_1.5x',
    'sweep_shufflenet.py',
    {'model.width_multiplier': 1.5},
    (0,),
  ),
)
# What the command runs without --points (experiments/results/
# int8_consistency.json); ShuffleNet 1.5x only when named.
DEFAULT_POINTS = ('shufflenet_0.5x', 'nasnet_a_12')
SEED = 0
TOLERANCE = 0.05  # tests/test_convert.py's bound for MobileNetV2
# The fine-tuning recipe: 12 epochs from the float checkpoint, the sweep's
# cosine schedule from a tenth of its learning rate, no warm-up.
FINE_TUNING = {
  'num_epochs': 12.0,
  'base_learning_rate': 0.0045,
  'warmup_epochs': 0.0,
}
CONSISTENCY = 300.0
CALIBRATIONS = (200, 500)  # training images that set the int8 ranges


def _train(workdir: str, sweep: str, overrides: dict) -> bool:
  """Trains `workdir` unless it holds a finished run; whether it was
  reused."""
  if os.path.exists(os.path.join(workdir, 'result.json')):
    return True
  command = [
    sys.executable,
    '-m',
    'mnv2_jax.main',
    '--config',
    str(REPOSITORY / 'configs' / sweep),
    '--workdir',
    workdir,
    *(f'--config.{key}={value}' for key, value in overrides.items()),
  ]
  run = subprocess.run(command, capture_output=True, text=True, check=False)
  if run.returncode:
    sys.exit(f'{" ".join(command)}:\n{run.stderr[-3000:]}')
  return False


def worker(workdir: str, output: str, calibration: str) -> None:
  """Exports `workdir` to int8 at `output`, calibrated on `calibration`
  images; prints the export's figures and the int8 model's top-1 on the
  test split."""
  import numpy as np  # noqa: PLC0415 (the worker only)

  from mnv2_jax.data import datasets  # noqa: PLC0415
  from mnv2_jax.training import workdir as workdir_lib  # noqa: PLC0415
  from mnv2_jax.weights import exporters  # noqa: PLC0415

  result = exporters.export(
    workdir, 'tflite', 'int8', output, num_calibration_images=int(calibration)
  )
  config, _, _ = workdir_lib.load(workdir)
  correct = total = 0
  for batch in datasets.eval_batches(
    config, per_host_batch_size=200, split='test'
  ):
    mask = np.asarray(batch['mask'], bool)
    logits = exporters.run_exported(output, np.asarray(batch['image'])[mask])
    correct += int(
      np.sum(logits.argmax(-1) == np.asarray(batch['label'])[mask])
    )
    total += int(mask.sum())
  figures = {k: v for k, v in result.items() if k != 'path'}
  print(json.dumps({**figures, 'int8_test_top1': correct / total}))


def _export(workdir: str, calibration: int) -> dict:
  output = os.path.join(workdir, f'model_int8_calibrated_{calibration}.tflite')
  run = subprocess.run(
    [
      sys.executable,
      __file__,
      '--worker',
      f'{workdir}::{output}::{calibration}',
    ],
    capture_output=True,
    text=True,
    cwd=REPOSITORY,
    check=False,
  )
  if run.returncode:
    sys.exit(f'{workdir}:\n{run.stderr[-3000:]}')
  return json.loads(run.stdout.strip().splitlines()[-1])


def _rows(
  name: str, variant: str, workdir: str, reused: bool, calibrations
) -> list[dict]:
  with open(os.path.join(workdir, 'result.json')) as f:
    float_top1 = json.load(f)['final']['test']['top1']
  rows = []
  for calibration in calibrations:
    figures = _export(workdir, calibration)
    rows.append(
      {
        'point': name,
        'variant': variant,
        'float_test_top1': float_top1,
        'run_reused': reused,
        **figures,
        'within_tolerance': figures['max_rel_diff'] < TOLERANCE,
      }
    )
    print(rows[-1], flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs_dir')
  parser.add_argument('--output')
  parser.add_argument(
    '--points',
    nargs='+',
    choices=[point[0] for point in POINTS],
    default=list(DEFAULT_POINTS),
    help='the points to train and export (default: %(default)s)',
  )
  parser.add_argument(
    '--calibrations',
    nargs='+',
    type=int,
    default=list(CALIBRATIONS),
    help='training images that set the int8 ranges, one export each '
    '(default: %(default)s)',
  )
  parser.add_argument(
    '--ranges',
    nargs='+',
    choices=choices.QUANTIZATION_RANGES,
    default=['batch'],
    help='config.quantization_ranges of the runs with the term, one run '
    'each (default: %(default)s)',
  )
  parser.add_argument(
    '--skip_controls',
    action='store_true',
    help='no fine-tuning without the term',
  )
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(*args.worker.split('::'))
    return
  if not (args.runs_dir and args.output):
    parser.error('--runs_dir and --output are required.')
  # One export per count and one run per kind of range: repeats dropped.
  args.calibrations = list(dict.fromkeys(args.calibrations))
  args.ranges = list(dict.fromkeys(args.ranges))
  if min(args.calibrations) < 1:
    parser.error(
      f'--calibrations are counts of images, got {args.calibrations}.'
    )
  rows = []
  for name, sweep, point, seeds in POINTS:
    if name not in args.points:
      continue
    float_dir = os.path.join(args.runs_dir, name, 'float')
    reused = _train(float_dir, sweep, {**point, 'seed': SEED})
    rows += _rows(
      name, 'float (8 epochs)', float_dir, reused, args.calibrations
    )
    epochs = f'{FINE_TUNING["num_epochs"]:g}'
    control = [('fine-tuned, no consistency term', 0.0, SEED, 'batch')]
    runs = ([] if args.skip_controls else control) + [
      (
        f'fine-tuned, quantization_consistency={CONSISTENCY:g}'
        + ('' if ranges == 'batch' else f', ranges {ranges}')
        + f', seed {seed}',
        CONSISTENCY,
        seed,
        ranges,
      )
      for ranges in args.ranges
      for seed in seeds
    ]
    for variant, weight, seed, ranges in runs:
      # 'batch' runs keep the directory names they had before --ranges.
      ranges_tag = '' if ranges == 'batch' else f'_{ranges}'
      tuned_dir = os.path.join(
        args.runs_dir,
        name,
        f'tuned_{epochs}ep_{weight:g}{ranges_tag}_seed{seed}',
      )
      reused = _train(
        tuned_dir,
        sweep,
        {
          **point,
          **FINE_TUNING,
          'seed': seed,
          'init_from': float_dir,
          'quantization_consistency': weight,
          'quantization_ranges': ranges,
        },
      )
      rows += _rows(name, variant, tuned_dir, reused, args.calibrations)
  record = {
    'command': (
      f'python experiments/int8_consistency.py --runs_dir {args.runs_dir} '
      f'--output {args.output} --points {" ".join(args.points)} '
      f'--calibrations {" ".join(map(str, args.calibrations))} '
      f'--ranges {" ".join(args.ranges)}'
      + (' --skip_controls' if args.skip_controls else '')
    ),
    'date': datetime.date.today().isoformat(),
    'machine': platform.processor() or platform.machine(),
    'tolerance': TOLERANCE,
    'fine_tuning': FINE_TUNING,
    'consistency': CONSISTENCY,
    'calibrations': args.calibrations,
    'rows': rows,
  }
  pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
  with open(args.output, 'w') as f:
    json.dump(record, f, indent=1)
    f.write('\n')


if __name__ == '__main__':
  main()
