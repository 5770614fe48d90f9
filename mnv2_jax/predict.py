r"""Classifies image files, or draws detections or segmentations, with a trained
or imported model.

  python -m mnv2_jax.predict --workdir /tmp/mnv2_quickstart digit.png
  python -m mnv2_jax.predict --workdir /tmp/mnv2_keras_1.0_224 cat.jpg dog.jpg
  python -m mnv2_jax.predict --workdir /tmp/ssdlite_quickstart scene.png
      # detection: boxes, names and scores drawn into
      # <workdir>/detections/scene.detections.png
  python -m mnv2_jax.predict --workdir /tmp/deeplab_quickstart scene.png
      # segmentation: the predicted mask in VOC's palette over the image,
      # <workdir>/segmentations/scene.segmentation.png
  python -m mnv2_jax.predict --workdir /tmp/ssdlite_quickstart scene.png \
      --config.detection.max_detections=10
      # any field of the workdir's config, for this prediction only


Prints the top-5 classes with their names and probabilities for each image:
ImageNet class names for a 1000- or 1001-class model (1001: logit 0 is
'background'), digit names for the quickstart. Images are preprocessed as the
workdir's config says (`preprocessing`, `image_size`, `eval_crop_fraction`);
for a digits model the image is turned grey, resized and scaled like the
built-in digits (bright strokes on a dark background). An unreadable file is
reported by name and skipped; the exit status is then 1.

`--config.<key>=<value>` overrides a field of the workdir's config for this
command only (as `main` takes them; the workdir is not changed): e.g. the
evaluation's `eval_crop_fraction`, `image_size`, `detection.max_detections`
or `detection.nms_iou_threshold`. An override that changes the network (its
architecture, its width) is refused: the weights would not fit it.
"""

from __future__ import annotations

import argparse
import os
import sys

from absl import logging

from mnv2_jax import configuration


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m mnv2_jax.predict',
    description=__doc__.split('\n')[0],
    epilog="Any field of the workdir's config can be set for this command "
    'with --config.<key>=<value>.',
  )
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--top', type=int, default=5)
  parser.add_argument(
    '--output_dir',
    default=None,
    help='detection/segmentation: where the annotated '
    'PNGs go (default <workdir>/detections or '
    '<workdir>/segmentations)',
  )
  parser.add_argument(
    '--min_score',
    type=float,
    default=0.3,
    help='detection: smallest score drawn and printed',
  )
  parser.add_argument('images', nargs='+')
  args, rest = parser.parse_known_args(
    configuration.normalise_override_arguments(
      sys.argv[1:] if argv is None else argv
    )
  )
  logging.set_verbosity(logging.ERROR)  # no Orbax / TF / absl chatter
  config_path = os.path.join(args.workdir, 'config.json')
  if not os.path.exists(config_path):
    parser.error(
      f'{config_path} does not exist: --workdir must be the directory of a '
      'training run or of `python -m mnv2_jax.convert`.'
    )
  try:
    config = configuration.from_json(config_path)
    args.overrides = configuration.command_line_overrides(
      config, rest, 'predict'
    )
    config = configuration.apply_overrides(config, args.overrides)
    configuration.validate(config)
  except ValueError as error:
    parser.error(str(error))
  show = _SHOW[config.task]
  status = 0
  try:
    for path, result in _results(args, config.task):
      if isinstance(result, str):  # this image could not be read
        print(f'error: {result}', file=sys.stderr)
        status = 1
        continue
      show(path, result, args)
  except (FileNotFoundError, ValueError) as error:  # the workdir
    print(f'error: {error}', file=sys.stderr)
    return 2
  return status


def _output_dir(args, task_folder: str) -> str:
  return args.output_dir or os.path.join(args.workdir, task_folder)


def _show_classes(path, result, args) -> None:
  del args
  print(path)
  for name, probability in result:
    print(f'  {100 * probability:6.2f}%  {name}')


def _show_detections(path, result, args) -> None:
  print(
    f'{path}: {len(result)} detections -> {_output_dir(args, "detections")}'
  )
  for d in result:
    box = ', '.join(f'{v:.0f}' for v in d['box'])
    print(f'  {100 * d["score"]:6.2f}%  {d["name"]}  [{box}]')


def _show_segmentation(path, result, args) -> None:
  print(f'{path}: mask -> {_output_dir(args, "segmentations")}')
  for name, fraction in sorted(result.items(), key=lambda kv: -kv[1]):
    print(f'  {100 * fraction:6.2f}% of pixels  {name}')


def _results(args, task: str):
  """The results for the command's images, by the workdir's task."""
  from mnv2_jax.weights import prediction  # jax: after parsing

  if task == 'detection':
    return prediction.detect(
      args.workdir,
      args.images,
      _output_dir(args, 'detections'),
      args.min_score,
      args.overrides,
    )
  if task == 'segmentation':
    return prediction.segment(
      args.workdir,
      args.images,
      _output_dir(args, 'segmentations'),
      overrides=args.overrides,
    )
  return prediction.predict(args.workdir, args.images, args.top, args.overrides)


# config.task -> how one image's result is printed.
_SHOW = {
  'classification': _show_classes,
  'detection': _show_detections,
  'segmentation': _show_segmentation,
}

if __name__ == '__main__':
  sys.exit(main())
