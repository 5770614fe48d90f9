"""Applying trained or imported weights to image files: the top classes of a
classifier, a detector's boxes drawn into the image, a segmenter's classes
blended over it (`python -m mnv2_jax.predict`). Each reads a workdir (a
training run's or `python -m mnv2_jax.convert`'s), preprocesses as its config
says, and yields one result per image, or an error message for an image that
cannot be read."""

from __future__ import annotations

import os
from typing import Any
from typing import Optional
from typing import Sequence

import jax
import numpy as np
from PIL import Image
from PIL import ImageDraw

from mnv2_jax import configuration
from mnv2_jax import tasks
from mnv2_jax.data import image_files
from mnv2_jax.models import deeplab
from mnv2_jax.tasks import detection
from mnv2_jax.tasks import inference
from mnv2_jax.training import state as training_state
from mnv2_jax.training import workdir as workdir_lib

Overrides = Optional[dict[str, Any]]


def load(workdir: str, overrides: Overrides):
  """(config, variables) of `workdir`, with `overrides` ({'dotted.key':
  value}) applied to its config and checked."""
  config, variables, _ = workdir_lib.load(workdir)
  if overrides:
    config = configuration.apply_overrides(config, overrides)
    configuration.validate(config)
    model = tasks.build_task(config).model
    expected = training_state.abstract_variables(config, model)
    if _shapes(expected) != _shapes(variables):
      raise ValueError(
        f'--config overrides of {", ".join(sorted(overrides))} build a '
        f'network the weights in {workdir} do not fit: override the '
        'evaluation (e.g. eval_crop_fraction, detection.max_detections), '
        'not the architecture.'
      )
  return config, variables


def _shapes(variables) -> dict[str, tuple[int, ...]]:
  return {
    jax.tree_util.keystr(path): tuple(np.shape(leaf))
    for path, leaf in jax.tree_util.tree_flatten_with_path(
      {k: variables[k] for k in ('params', 'batch_stats') if k in variables}
    )[0]
  }


def _images(paths: Sequence[str], config):
  """Yields (path, (original image, network input)) or (path, error)."""
  for path in paths:
    try:
      yield path, image_files.load_original_and_input(path, config)
    except ValueError as error:
      yield path, str(error)


def draw_detections(
  image: np.ndarray, detections: list[dict], path: str
) -> None:
  """Saves `image` with each detection's box, name and score as a PNG."""
  canvas = Image.fromarray(image)
  draw = ImageDraw.Draw(canvas)
  for d in detections:
    ymin, xmin, ymax, xmax = d['box']
    draw.rectangle([xmin, ymin, xmax, ymax], outline=(255, 40, 40), width=2)
    draw.text(
      (xmin + 2, ymin + 1), f'{d["name"]} {d["score"]:.2f}', fill=(255, 255, 0)
    )
  canvas.save(path)


def detect(
  workdir: str,
  paths: Sequence[str],
  output_dir: str,
  min_score: float = 0.3,
  overrides: Overrides = None,
):
  """Yields (path, detections above `min_score` or an error message); saves
  `<output_dir>/<image name>.detections.png` for each image. Non-maximum
  suppression and the number kept are the config's, as in evaluation."""
  config, variables = load(workdir, overrides)
  task = tasks.build_task(config)
  names = image_files.detection_names(config)

  @jax.jit
  def run(images):
    box_encodings, class_logits, _ = task.model.apply(variables, images)
    return detection.postprocess(
      box_encodings,
      class_logits,
      task.anchors,
      score_threshold=min_score,
      iou_threshold=config.detection.nms_iou_threshold,
      max_detections=config.detection.max_detections,
    )

  os.makedirs(output_dir, exist_ok=True)
  for path, loaded in _images(paths, config):
    if isinstance(loaded, str):
      yield path, loaded
      continue
    original, image = loaded
    out = jax.device_get(run(image[None]))
    height, width = original.shape[:2]
    detections = [
      {
        'name': names[int(c)],
        'score': float(s),
        'box': [float(v) for v in b * [height, width, height, width]],
      }
      for b, s, c, v in zip(
        out['boxes'][0], out['scores'][0], out['classes'][0], out['valid'][0]
      )
      if v
    ]
    stem = os.path.splitext(os.path.basename(path))[0]
    draw_detections(
      original, detections, os.path.join(output_dir, f'{stem}.detections.png')
    )
    yield path, detections


def voc_palette() -> np.ndarray:
  """VOC's colour map [256, 3] uint8 (class c's colour from the bits of c;
  255, 'ignore', is the palette's cream)."""
  palette = np.zeros((256, 3), np.uint8)
  for index in range(256):
    c, r, g, b = index, 0, 0, 0
    for shift in range(7, -1, -1):
      r |= ((c >> 0) & 1) << shift
      g |= ((c >> 1) & 1) << shift
      b |= ((c >> 2) & 1) << shift
      c >>= 3
    palette[index] = r, g, b
  return palette


def segment(
  workdir: str,
  paths: Sequence[str],
  output_dir: str,
  opacity: float = 0.6,
  overrides: Overrides = None,
):
  """Yields (path, {class name: fraction of pixels} or an error message);
  saves `<output_dir>/<image name>.segmentation.png`: the image with the
  predicted classes in VOC's palette blended over it."""
  config, variables = load(workdir, overrides)
  task = tasks.build_task(config)
  names = image_files.segmentation_names(config)
  palette = voc_palette()

  @jax.jit
  def run(image):
    logits = task.logits(variables, image)
    return deeplab.resize_bilinear(logits, image.shape[1:3]).argmax(-1)

  os.makedirs(output_dir, exist_ok=True)
  for path, loaded in _images(paths, config):
    if isinstance(loaded, str):
      yield path, loaded
      continue
    original, image = loaded
    classes = np.asarray(run(image[None])[0], np.uint8)
    height, width = original.shape[:2]
    classes = np.asarray(
      Image.fromarray(classes).resize((width, height), Image.NEAREST)
    )
    overlay = (1 - opacity) * original + opacity * palette[classes]
    stem = os.path.splitext(os.path.basename(path))[0]
    Image.fromarray(np.clip(overlay, 0, 255).astype(np.uint8)).save(
      os.path.join(output_dir, f'{stem}.segmentation.png')
    )
    counts = np.bincount(classes.ravel(), minlength=len(names))
    yield (
      path,
      {
        names[c]: float(counts[c]) / classes.size for c in np.nonzero(counts)[0]
      },
    )


def predict(
  workdir: str,
  paths: Sequence[str],
  top: int = 5,
  overrides: Overrides = None,
):
  """Yields (path, [(name, probability), ...] or an error message)."""
  config, variables = load(workdir, overrides)
  fn = jax.jit(inference.logits_function(config, variables))
  names = image_files.class_names(config)
  for path in paths:
    try:
      image = image_files.load_image(path, config)
    except ValueError as error:
      yield path, str(error)
      continue
    probabilities = np.asarray(jax.nn.softmax(fn(image[None])[0]))
    best = np.argsort(-probabilities)[:top]
    yield path, [(names[i], float(probabilities[i])) for i in best]
