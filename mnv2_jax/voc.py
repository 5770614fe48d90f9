r"""Prepares the PASCAL VOC 2012 segmentation dataset (TFDS) for DeepLab.

  python -m mnv2_jax.voc --manual_dir <dir holding VOCdevkit> --data_dir <dir>

The manual directory holds the extracted VOCtrainval_11-May-2012.tar
(VOCdevkit/VOC2012) and, optionally, SBD's benchmark_RELEASE for the
10,582-image 'train_aug' split (data/voc_builder.py). Damaged image/mask
pairs are skipped, named, and listed at the end.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m mnv2_jax.voc', description=__doc__.split('\n')[0]
  )
  parser.add_argument(
    '--manual_dir',
    required=True,
    help='the directory holding VOCdevkit (and SBD).',
  )
  parser.add_argument('--data_dir', required=True)
  args = parser.parse_args(argv)
  from mnv2_jax.data import voc_builder  # TensorFlow: after parsing

  voc = voc_builder.prepare(args.manual_dir, args.data_dir)
  for name, split in voc.info.splits.items():
    print(f'{name}: {split.num_examples} examples')
  if voc.skipped:
    print(
      f'Skipped {len(voc.skipped)} damaged example(s) (counted once per '
      'split that lists them):'
    )
    for reason in voc.skipped:
      print(f'  {reason}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
