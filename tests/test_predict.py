"""`python -m mnv2_jax.predict` for detection and segmentation: what it
prints and the images it draws."""

import os

import helpers
import numpy as np
import pytest
from PIL import Image

from mnv2_jax import predict
from mnv2_jax import tasks
from mnv2_jax.data import image_files
from mnv2_jax.models import initializers
from mnv2_jax.training import state as training_state
from mnv2_jax.weights import importers
from mnv2_jax.weights import prediction

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _workdir(path, config) -> str:
  """A workdir holding freshly initialised weights for `config`, as
  `convert` writes one."""
  model = tasks.build_task(config).model
  variables = initializers.host_variables(
    model, training_state.model_input_shape(config), 0, train=False
  )
  importers.save(str(path), config, variables, source='test')
  return str(path)


def _photo(path, height=90, width=120) -> np.ndarray:
  """A non-square RGB image (the drawings come back at the original size)."""
  pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3))
  pixels = pixels.astype(np.uint8)
  Image.fromarray(pixels).save(path)
  return pixels


def test_draw_detections_puts_the_box_where_it_says(tmp_path):
  image = np.zeros((60, 80, 3), np.uint8)
  path = str(tmp_path / 'boxes.png')
  prediction.draw_detections(
    image, [{'name': 'digit 3', 'score': 0.9, 'box': [10, 20, 40, 70]}], path
  )
  drawn = np.asarray(Image.open(path))
  red = (255, 40, 40)
  # The box's edges (ymin 10, xmin 20, ymax 40, xmax 70), 2 pixels wide.
  for y, x in [(10, 45), (40, 45), (25, 20), (25, 70), (11, 45), (25, 21)]:
    assert tuple(drawn[y, x]) == red, (y, x)
  # Outside and well inside (away from the label text) it is untouched.
  for y, x in [(5, 45), (45, 45), (25, 10), (25, 75), (35, 60)]:
    assert tuple(drawn[y, x]) == (0, 0, 0), (y, x)
  # The label is drawn inside the top-left corner, in yellow (antialiased).
  label = drawn[11:24, 22:68].astype(int)
  yellow = (label[..., 0] > 128) & (label[..., 1] > 128) & (label[..., 2] < 64)
  assert yellow.sum() > 20


def test_predict_detection_prints_and_draws(tmp_path, capsys):
  config = helpers.config_file('ssdlite_quickstart')
  config.image_size = 96
  config.model.architecture = helpers.TINY_ARCHITECTURE  # compiles sooner
  config.model.width_multiplier = 0.35
  workdir = _workdir(tmp_path / 'ssdlite', config)
  pixels = _photo(tmp_path / 'scene.png')
  status = predict.main(
    ['--workdir', workdir, '--min_score', '0', str(tmp_path / 'scene.png')]
  )
  assert status == 0
  out = capsys.readouterr().out
  drawn_path = os.path.join(workdir, 'detections', 'scene.detections.png')
  assert f'detections -> {os.path.join(workdir, "detections")}' in out
  detections = [line for line in out.splitlines() if line.startswith('  ')]
  # Untrained, every anchor clears a score of 0: max_detections are kept.
  assert len(detections) == config.detection.max_detections
  assert all('digit ' in line for line in detections)
  drawn = np.asarray(Image.open(drawn_path))
  assert drawn.shape == pixels.shape  # drawn on the original, not the input
  changed = np.any(drawn != pixels, axis=-1)
  assert 0 < changed.mean() < 1
  red = np.all(drawn == (255, 40, 40), axis=-1)
  assert red.sum() > 4 * 30  # at least one box's four edges
  # A corrupt image is named, the others are still drawn; status 1.
  (tmp_path / 'broken.png').write_bytes(b'\x89PNG not an image')
  status = predict.main(
    [
      '--workdir',
      workdir,
      str(tmp_path / 'broken.png'),
      str(tmp_path / 'scene.png'),
    ]
  )
  captured = capsys.readouterr()
  assert status == 1
  assert 'broken.png: not a readable image' in captured.err
  assert 'scene.png:' in captured.out
  # --config.<key> <value> (or =<value>, the spelling main's tests use)
  # overrides the workdir's config for this command: the detections kept.
  scene = str(tmp_path / 'scene.png')
  status = predict.main(
    [
      '--workdir',
      workdir,
      '--min_score',
      '0',
      scene,
      '--config.detection.max_detections',
      '5',
    ]
  )
  assert status == 0
  lines = capsys.readouterr().out.splitlines()
  assert len([line for line in lines if line.startswith('  ')]) == 5
  # An unknown field: one error line, exit 2, before any weights are read.
  with pytest.raises(SystemExit) as exited:
    predict.main(['--workdir', workdir, scene, '--config.detection.max=5'])
  assert exited.value.code == 2
  error = capsys.readouterr().err
  assert 'no such config field' in error and 'Traceback' not in error
  # An override that changes the network is refused: the weights do not fit.
  status = predict.main(
    ['--workdir', workdir, scene, '--config.model.width_multiplier=0.5']
  )
  assert status == 2
  assert 'do not fit' in capsys.readouterr().err


def test_predict_segmentation_blends_the_palette_over_the_image(tmp_path):
  config = helpers.config_file('deeplab_quickstart')
  config.image_size = 65
  config.model.architecture = helpers.TINY_ARCHITECTURE  # compiles sooner
  workdir = _workdir(tmp_path / 'deeplab', config)
  pixels = _photo(tmp_path / 'scene.png')
  output_dir = str(tmp_path / 'masks')
  [(path, fractions)] = list(
    prediction.segment(workdir, [str(tmp_path / 'scene.png')], output_dir)
  )
  assert path.endswith('scene.png')
  assert sum(fractions.values()) == pytest.approx(1.0)
  names = image_files.segmentation_names(config)
  assert len(names) == 11 and names[3] == 'digit 2'
  assert set(fractions) <= set(names)
  drawn = np.asarray(
    Image.open(os.path.join(output_dir, 'scene.segmentation.png'))
  )
  assert drawn.shape == pixels.shape
  # Each pixel is 0.4 · image + 0.6 · the palette colour of its class: undo
  # the blend and find which class each pixel was given.
  palette = prediction.voc_palette()[: len(names)].astype(np.float64)
  colours = (drawn - 0.4 * pixels.astype(np.float64)) / 0.6
  distances = np.abs(colours[:, :, None, :] - palette).max(-1)
  classes = distances.argmin(-1)
  assert distances.min(-1).max() < 2.0  # within rounding of a palette colour
  counts = np.bincount(classes.ravel(), minlength=len(names)) / classes.size
  for c, name in enumerate(names):
    assert counts[c] == pytest.approx(fractions.get(name, 0.0), abs=1e-9), name
