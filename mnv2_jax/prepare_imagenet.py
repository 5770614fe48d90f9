r"""Re-encodes a prepared ImageNet smaller, once, for a faster input pipeline.

  python -m mnv2_jax.prepare_imagenet --data_dir /data/tfds \
      --output_data_dir /data/tfds_256 --shorter_side 256 [--quality 90]

Reads TFDS `imagenet2012` from --data_dir and writes it to --output_data_dir
with every image's shorter side at most --shorter_side (data/
imagenet_records.py); train and evaluate on it with
`--config.dataset.data_dir=<output_data_dir>`. Images that do not decode are
left out and counted; an existing output is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m mnv2_jax.prepare_imagenet',
    description=__doc__.split('\n')[0],
  )
  parser.add_argument('--data_dir', required=True, help='the TFDS data_dir')
  parser.add_argument('--output_data_dir', required=True)
  parser.add_argument('--shorter_side', type=int, default=256)
  parser.add_argument('--quality', type=int, default=90)
  parser.add_argument('--splits', default='train,validation')
  args = parser.parse_args(argv)
  from mnv2_jax.data import imagenet_records  # TensorFlow: after parsing

  try:
    summary = imagenet_records.resize(
      args.data_dir,
      args.output_data_dir,
      shorter_side=args.shorter_side,
      quality=args.quality,
      splits=args.splits.split(','),
    )
  except (FileNotFoundError, FileExistsError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
