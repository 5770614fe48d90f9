r"""Exports a trained or imported model to a TensorFlow SavedModel or TFLite.

  python -m mnv2_jax.export --workdir /tmp/mnv2_quickstart --format tflite
  python -m mnv2_jax.export --workdir /tmp/mnv2_quickstart --format tflite \
      --quantize int8 [--calibration_images 500]
  python -m mnv2_jax.export --workdir /tmp/mnv2_quickstart --format savedmodel

The export and its check against JAX are weights/exporters.py's.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from absl import logging

from mnv2_jax import choices


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m mnv2_jax.export', description=__doc__.split('\n')[0]
  )
  parser.add_argument('--workdir', required=True)
  parser.add_argument(
    '--format', choices=choices.EXPORT_FORMATS, default='tflite'
  )
  parser.add_argument('--quantize', choices=('int8',), default=None)
  parser.add_argument(
    '--calibration_images',
    type=int,
    default=None,
    help='int8: how many built-in images (training digits, or crops of '
    'the sample photos) set the activation ranges (default 200; '
    'docs/model.md compares 200 and 500)',
  )
  parser.add_argument(
    '--output',
    default=None,
    help='default: <workdir>/export/model[_int8][.tflite]',
  )
  parser.add_argument(
    '--result_file',
    default=None,
    help="also write the check's figures, with the command, machine, date "
    'and versions, to this JSON file (e.g. experiments/results/...)',
  )
  argv_used = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv_used)
  if args.calibration_images is not None and not args.quantize:
    parser.error(
      '--calibration_images sets the int8 ranges: add --quantize int8, or '
      'drop it.'
    )
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # jax and TensorFlow: after parsing.
  from mnv2_jax.training import provenance
  from mnv2_jax.weights import exporters

  logging.set_verbosity(logging.ERROR)  # no Orbax / TF / absl chatter
  try:
    result = exporters.export(
      args.workdir,
      args.format,
      args.quantize,
      args.output,
      num_calibration_images=args.calibration_images,
    )
  except (FileNotFoundError, ValueError, exporters.ExportError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(
    f'Wrote {result["path"]} ({result["bytes"] / 1e6:.2f} MB) from step '
    f'{result["step"]}.\nOn {result["num_images"]} held images: largest '
    f'logit difference to JAX {result["max_abs_diff"]:.2e} (relative '
    f'{result["max_rel_diff"]:.2e}), top-1 agreement '
    f'{100 * result["top1_agreement"]:.2f}%. On 8 random inputs: relative '
    f'difference {result["random_max_rel_diff"]:.2e}.'
  )
  if 'median_top2_margin' in result:
    widest = result['changed_max_top2_margin']
    print(
      'Top-two logit margin, relative: median image '
      f'{result["median_top2_margin"]:.2e}; '
      + (
        'no top-1 changed.'
        if widest is None
        else f'widest among the images whose top-1 changed {widest:.2e}.'
      )
    )
  if args.result_file:
    command = shlex.join(['python', '-m', 'mnv2_jax.export'] + argv_used)
    provenance.write(args.result_file, provenance.record(command, **result))
    print(f'Wrote {args.result_file}.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
