r"""Imports released MobileNetV2 weights (Keras, TF-slim, PyTorch) into a workdir.

  python -m mnv2_jax.convert keras --width_multiplier 1.0 --image_size 224 \
      --weights mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5 \
      --workdir /tmp/mnv2_keras_1.0_224
  python -m mnv2_jax.convert slim --checkpoint mobilenet_v2_1.0_224.ckpt \
      --workdir /tmp/mnv2_slim_1.0_224
  python -m mnv2_jax.convert torch --state_dict mobilenet_v2-b0353104.pth \
      --workdir /tmp/mnv2_torchvision

writes an Orbax checkpoint (step 0), config.json and config.py with what the
release needs (padding, BatchNorm epsilon, classes, preprocessing). The
conversion is weights/importers.py's; a file that does not fit fails with the
expected and found names and shapes, and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  import ml_collections

  from mnv2_jax.weights import importers


def _parse_args(argv) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog='python -m mnv2_jax.convert', description=__doc__.split('\n')[0]
  )
  sub = parser.add_subparsers(dest='source', required=True)
  keras_parser = sub.add_parser(
    'keras', help='a Keras MobileNetV2 weights file'
  )
  keras_parser.add_argument('--weights', required=True)
  keras_parser.add_argument('--width_multiplier', type=float, default=1.0)
  keras_parser.add_argument('--image_size', type=int, default=224)
  keras_parser.add_argument(
    '--no_top',
    action='store_true',
    help='the file has no classifier (_no_top.h5)',
  )
  slim_parser = sub.add_parser(
    'slim', help='a TF-slim checkpoint (1001 classes)'
  )
  slim_parser.add_argument('--checkpoint', required=True)
  slim_parser.add_argument('--image_size', type=int, default=224)
  slim_parser.add_argument('--no_moving_average', action='store_true')
  torch_parser = sub.add_parser('torch', help='a torchvision/timm state dict')
  torch_parser.add_argument('--state_dict', required=True)
  torch_parser.add_argument('--width_multiplier', type=float, default=None)
  torch_parser.add_argument('--image_size', type=int, default=224)
  for p in (keras_parser, slim_parser, torch_parser):
    p.add_argument('--workdir', required=True)
  return parser.parse_args(argv)


def _load(args) -> tuple[ml_collections.ConfigDict, importers.Variables, str]:
  from mnv2_jax.weights import importers  # jax and TensorFlow: after parsing

  if args.source == 'keras':
    config, variables = importers.from_keras_weights(
      args.weights,
      width_multiplier=args.width_multiplier,
      image_size=args.image_size,
      include_top=not args.no_top,
    )
    return config, variables, f'Keras weights {args.weights}'
  if args.source == 'slim':
    config, variables = importers.from_slim_checkpoint(
      args.checkpoint,
      use_moving_average=not args.no_moving_average,
      image_size=args.image_size,
    )
    return config, variables, f'TF-slim checkpoint {args.checkpoint}'
  state_dict = importers.read_torch_state_dict(args.state_dict)
  config, variables = importers.from_torch(
    state_dict,
    width_multiplier=args.width_multiplier,
    image_size=args.image_size,
  )
  return config, variables, f'PyTorch state dict {args.state_dict}'


def main(argv=None) -> int:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  import jax
  import numpy as np

  from mnv2_jax.weights import importers

  try:
    config, variables, source = _load(args)
    directory = importers.save(args.workdir, config, variables, source=source)
  except importers.ConversionError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  num_params = sum(np.size(x) for x in jax.tree.leaves(variables['params']))
  print(
    f'Converted {source}: MobileNetV2 width_multiplier='
    f'{config.model.width_multiplier}, {config.num_classes} classes, '
    f'{num_params:,} parameters, padding {config.model.padding!r}, '
    f'preprocessing {config.preprocessing!r}.\nWrote {directory} and '
    f'{os.path.join(args.workdir, "config.py")}. Evaluate with:\n'
    f'  python -m mnv2_jax.main --config {args.workdir}/config.py '
    f'--workdir {args.workdir} --config.mode=eval '
    '--config.dataset.data_dir=<your TFDS dir>'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
