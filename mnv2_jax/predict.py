r"""Classifies image files with a trained or imported model.

  python -m mnv2_jax.predict --workdir /tmp/mnv2_quickstart digit.png
  python -m mnv2_jax.predict --workdir /tmp/mnv2_keras_1.0_224 cat.jpg dog.jpg

Prints the top-5 classes with their names and probabilities for each image:
ImageNet class names for a 1000- or 1001-class model (1001: logit 0 is
'background'), digit names for the quickstart. Images are preprocessed as the
workdir's config says (`preprocessing`, `image_size`, `eval_crop_fraction`);
for a digits model the image is turned grey, resized and scaled like the
built-in digits (bright strokes on a dark background). An unreadable file is
reported by name and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Sequence

import jax
import numpy as np

from mnv2_jax import export


def class_names(config) -> list[str]:
  """Names of the model's logits."""
  if config.dataset.name == 'digits':
    return [f'digit {d}' for d in range(config.num_classes)]
  # The 1000 ImageNet names in TFDS label order, shipped with TFDS.
  from tensorflow_datasets.datasets.siscore import labels  # pylint: disable=g-import-not-at-top
  names = list(labels.IMAGENET_LABELS_LIST)
  if config.background_class:
    names = ['background'] + names
  if len(names) != config.num_classes:
    return [f'class {i}' for i in range(config.num_classes)]
  return names


def load_image(path: str, config) -> np.ndarray:
  """One preprocessed image [S, S, 3]; raises ValueError naming the file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mnv2_jax import imagenet  # pylint: disable=g-import-not-at-top
  try:
    data = tf.io.read_file(path)
    if config.dataset.name == 'digits':
      image = tf.io.decode_image(data, channels=1, expand_animations=False)
      image = tf.image.resize(tf.cast(image, tf.float32),
                              [config.image_size] * 2, method='bilinear')
      image = image / 127.5 - 1.0
      return np.repeat(image.numpy(), 3, axis=-1)
    return imagenet.preprocess_for_eval(
        data, config.image_size, config.eval_crop_fraction,
        config.preprocessing).numpy()
  except (tf.errors.OpError, ValueError) as error:
    message = getattr(error, 'message', str(error)).strip().split('\n')[0]
    # TF prefixes the op's device and appends its name: keep the reason.
    message = re.sub(r'^\{\{.*?\}\}\s*|\s*\[Op:.*$', '', message)
    raise ValueError(f'{path}: not a readable image ({message})') from error


def predict(workdir: str, paths: Sequence[str], top: int = 5):
  """Yields (path, [(name, probability), ...] or an error message)."""
  config, variables, _ = export.load_workdir(workdir)
  fn = jax.jit(export.inference_function(config, variables, xla_conv=False))
  names = class_names(config)
  for path in paths:
    try:
      image = load_image(path, config)
    except ValueError as error:
      yield path, str(error)
      continue
    probabilities = np.asarray(jax.nn.softmax(fn(image[None])[0]))
    best = np.argsort(-probabilities)[:top]
    yield path, [(names[i], float(probabilities[i])) for i in best]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m mnv2_jax.predict',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--top', type=int, default=5)
  parser.add_argument('images', nargs='+')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  export.quiet_logs()
  status = 0
  try:
    for path, result in predict(args.workdir, args.images, args.top):
      if isinstance(result, str):
        print(f'error: {result}', file=sys.stderr)
        status = 1
        continue
      print(path)
      for name, probability in result:
        print(f'  {100 * probability:6.2f}%  {name}')
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  return status


if __name__ == '__main__':
  sys.exit(main())
