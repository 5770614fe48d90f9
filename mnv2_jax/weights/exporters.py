r"""Exports a trained or imported model to a TensorFlow SavedModel or TFLite.

  python -m mnv2_jax.export --workdir /tmp/mnv2_quickstart --format tflite
  python -m mnv2_jax.export --workdir /tmp/mnv2_quickstart --format tflite \
      --quantize int8
  python -m mnv2_jax.export --workdir /tmp/mnv2_quickstart --format savedmodel

The latest checkpoint of `--workdir` (its EMA weights if the run kept them)
and the workdir's config.json define the model. The function exported is
`images -> logits`: float32 images [batch, S, S, 3] already normalised as the
config's `preprocessing` says ([-1, 1] for 'inception'), logits [batch,
classes]; a segmenter's logits are [batch, S, S, classes], and a
detector has two outputs, box encodings [batch, anchors, 4] then class
logits [batch, anchors, classes + 1] (`inference.logits_function`; two
outputs, so that int8 gives each head its own scale). It goes through `jax2tf` (StableHLO), built with XLA's convolution
ops (`model.implementation='xla'`), which the TFLite converter turns
into CONV_2D / DEPTHWISE_CONV_2D with the BatchNorms folded in.

`--quantize int8` quantizes weights and activations to int8 (float input and
output), calibrated on the built-in data: the digits training images for a
digits model, crops of scikit-image's sample photos otherwise.

After writing, the exported model is run next to JAX on held images (the
digits test split, or random inputs) and the script prints the file size, the
largest logit difference, the top-1 agreement and how close the reference's
top two logits were (`top2_margins`).
"""

from __future__ import annotations

import os
import shutil
from typing import Iterator
from typing import Optional

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from mnv2_jax import choices
from mnv2_jax.data import cluttered_digits
from mnv2_jax.data import digits
from mnv2_jax.data import image_classification
from mnv2_jax.data import photos
from mnv2_jax.tasks import inference
from mnv2_jax.training import workdir as workdir_lib

FORMATS = choices.EXPORT_FORMATS
# Images int8 calibration runs on unless told otherwise.
DEFAULT_CALIBRATION_IMAGES = 200
# scikit-image's photos that int8 calibration and the check crop from.
CALIBRATION_PHOTOS = (
  'astronaut',
  'coffee',
  'chelsea',
  'rocket',
  'cat',
  'hubble_deep_field',
)


class ExportError(RuntimeError):
  """The exported model cannot be run by the installed TensorFlow."""


def to_tf_function(fn, image_size: int, batch: Optional[int]):
  """`fn` (images -> outputs) as a tf.function through jax2tf, for `batch`
  images of image_size (None: any batch)."""
  polymorphic = None if batch else ['(b, ...)']
  converted = jax2tf.convert(
    fn, with_gradient=False, polymorphic_shapes=polymorphic
  )
  return tf.function(
    converted,
    autograph=False,
    input_signature=[
      tf.TensorSpec(
        (batch, image_size, image_size, 3), tf.float32, name='images'
      )
    ],
  )


def calibration_images(
  config, count: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0
) -> np.ndarray:
  """Built-in, real-pixel images preprocessed for this config."""
  if config.dataset.name == 'digits':
    images, _ = digits.load_split('train', config.image_size)
    return images[np.random.default_rng(seed).permutation(len(images))[:count]]
  if config.dataset.name == 'cluttered_digits':
    images, _ = cluttered_digits.load_split('train', config.image_size)
    return images[np.random.default_rng(seed).permutation(len(images))[:count]]
  return sample_photo_crops(config, count, seed)


def sample_photo_crops(config, count: int, seed: int = 0) -> np.ndarray:
  """Random square crops of scikit-image's colour sample photos, resized and
  normalised as the config's `preprocessing` says."""
  choices = photos.photos(CALIBRATION_PHOTOS)
  rng = np.random.default_rng(seed)
  crops = []
  for _ in range(count):
    photo = choices[rng.integers(len(choices))]
    side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2])))
    top = int(rng.integers(0, photo.shape[0] - side + 1))
    left = int(rng.integers(0, photo.shape[1] - side + 1))
    crop = tf.image.resize(
      photo[top : top + side, left : left + side],
      [config.image_size] * 2,
      method='bilinear',
    )
    crops.append(
      image_classification.normalize(crop, config.preprocessing).numpy()
    )
  return np.stack(crops).astype(np.float32)


def held_images(config, count: int = 360, seed: int = 1) -> np.ndarray:
  """Images the check runs on: the digits test split, or photo crops."""
  if config.dataset.name == 'digits':
    return digits.load_split('test', config.image_size)[0][:count]
  if config.dataset.name == 'cluttered_digits':
    return cluttered_digits.load_split('test', config.image_size)[0][:count]
  return sample_photo_crops(config, min(count, 64), seed)


def export_savedmodel(fn, config, path: str) -> None:
  module = tf.Module()
  module.serve = to_tf_function(fn, config.image_size, batch=None)
  tf.saved_model.save(
    module, path, signatures={'serving_default': module.serve}
  )


def export_tflite(
  fn,
  config,
  path: str,
  quantize: Optional[str] = None,
  calibration: Optional[np.ndarray] = None,
) -> None:
  tf_fn = to_tf_function(fn, config.image_size, batch=1)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
    [tf_fn.get_concrete_function()], tf_fn
  )
  if quantize == 'int8':

    def representative() -> Iterator[list[np.ndarray]]:
      for image in calibration:
        yield [image[None]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  with open(path, 'wb') as f:
    f.write(converter.convert())


def run_exported(path: str, images: np.ndarray):
  """Outputs of the exported model (SavedModel directory or .tflite file):
  the logits, or a detector's (box encodings, class logits)."""
  if path.endswith('.tflite'):
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()[0]['index']
    # In the function's order: the converter names them Identity, Identity_1.
    outputs = sorted(interpreter.get_output_details(), key=lambda d: d['name'])
    results = [[] for _ in outputs]
    for image in images:
      interpreter.set_tensor(inputs, image[None].astype(np.float32))
      interpreter.invoke()
      for result, output in zip(results, outputs):
        result.append(interpreter.get_tensor(output['index'])[0])
    stacked = tuple(np.stack(result) for result in results)
  else:
    loaded = tf.saved_model.load(path)
    batches = [
      loaded.serve(tf.constant(images[i : i + 32]))
      for i in range(0, len(images), 32)
    ]
    batches = [b if isinstance(b, (tuple, list)) else (b,) for b in batches]
    stacked = tuple(
      np.concatenate([np.asarray(b[k]) for b in batches])
      for k in range(len(batches[0]))
    )
  return stacked[0] if len(stacked) == 1 else stacked


def _size(path: str) -> int:
  if os.path.isdir(path):
    return sum(
      os.path.getsize(os.path.join(root, name))
      for root, _, names in os.walk(path)
      for name in names
    )
  return os.path.getsize(path)


def export(
  workdir: str,
  fmt: str,
  quantize: Optional[str] = None,
  output: Optional[str] = None,
  *,
  num_check_images: int = 360,
  num_calibration_images: Optional[int] = None,
) -> dict:
  """Writes the export and checks it against JAX on `num_check_images` held
  images; returns the figures. int8 calibrates the activations' ranges on
  `num_calibration_images` built-in images (`calibration_images`; None:
  200)."""
  _check_format(fmt, quantize)
  if num_calibration_images is None:
    num_calibration_images = DEFAULT_CALIBRATION_IMAGES
  if num_calibration_images < 1:
    raise ValueError(
      f'--calibration_images must be at least 1, got {num_calibration_images}.'
    )
  config, variables, step = workdir_lib.load(workdir)
  fn = inference.logits_function(config, variables, implementation='xla')
  if output is None:
    name = 'model' + ('_int8' if quantize else '')
    output = os.path.join(
      workdir, 'export', name + ('.tflite' if fmt == 'tflite' else '')
    )
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  if fmt == 'savedmodel':
    export_savedmodel(fn, config, output)
  else:
    export_tflite(
      fn,
      config,
      output,
      quantize,
      calibration_images(config, num_calibration_images) if quantize else None,
    )
  reference_fn = jax.jit(inference.logits_function(config, variables))
  images = held_images(config, num_check_images)
  reference = _outputs(reference_fn(images))
  exported = _outputs(_run_or_explain(output, images, fmt))
  noise = (
    np.random.default_rng(0)
    .uniform(-1, 1, (8, config.image_size, config.image_size, 3))
    .astype(np.float32)
  )
  noise_reference = _outputs(reference_fn(noise))
  noise_exported = _outputs(run_exported(output, noise))
  # Each output against its own range (a detector's box encodings and class
  # logits differ in scale); top-1 on the last: the (class) logits.
  return {
    'path': output,
    'step': step,
    'bytes': _size(output),
    'num_images': len(images),
    'max_abs_diff': max(
      float(np.max(np.abs(e - r))) for e, r in zip(exported, reference)
    ),
    'max_rel_diff': _relative_difference(exported, reference),
    'random_max_rel_diff': _relative_difference(
      noise_exported, noise_reference
    ),
    'top1_agreement': float(
      np.mean(exported[-1].argmax(-1) == reference[-1].argmax(-1))
    ),
    **top2_margins(exported[-1], reference[-1]),
    **({'calibration_images': num_calibration_images} if quantize else {}),
  }


def _check_format(fmt: str, quantize: Optional[str]) -> None:
  if fmt not in FORMATS:
    raise ValueError(f'--format must be one of {FORMATS}, got {fmt!r}.')
  if quantize not in (None, 'int8'):
    raise ValueError(f"--quantize must be 'int8', got {quantize!r}.")
  if quantize and fmt != 'tflite':
    raise ValueError('--quantize int8 needs --format tflite.')


def _run_or_explain(output: str, images: np.ndarray, fmt: str):
  """The export's outputs on `images`; an export this TensorFlow cannot
  read is removed and explained."""
  try:
    return run_exported(output, images)
  except Exception as error:
    if 'failed to deserialize portable artifact' not in str(error):
      raise
    # jax2tf embeds the model as StableHLO of the installed JAX's version,
    # which a TensorFlow older than that JAX cannot read (jax >= 0.11 with
    # TensorFlow 2.21). The file would fail wherever it is loaded.
    shutil.rmtree(output, ignore_errors=True)
    raise ExportError(
      f'TensorFlow {tf.__version__} cannot run the {fmt} that jax '
      f'{jax.__version__} wrote: its StableHLO is newer than this '
      'TensorFlow reads. Export with jax 0.10 (Python 3.11: pip install '
      f'"jax<0.11" "jaxlib<0.11"), or with a TensorFlow released after '
      f'this jax. {output} was removed.'
    ) from None


def _outputs(value) -> tuple[np.ndarray, ...]:
  """The logits, or a detector's two outputs, as a tuple of arrays."""
  if isinstance(value, (tuple, list)):
    return tuple(np.asarray(v) for v in value)
  return (np.asarray(value),)


def top2_margins(exported: np.ndarray, reference: np.ndarray) -> dict:
  """How far apart the reference's two largest logits are, relative to its
  largest magnitude (the scale of `max_rel_diff`), for a classifier's
  (images, classes) logits: on the median held image, and the widest among
  the images whose top-1 the export changed (None when none did). A top-1
  changes only where some logit moves by at least half that gap, so a
  model whose top two are close on many images loses more answers to the
  same drift. Empty for other outputs (a detector's, a segmenter's)."""
  if reference.ndim != 2 or reference.shape[-1] < 2:
    return {}
  scale = np.max(np.abs(reference))
  if scale == 0:
    return {}
  top_two = np.sort(reference, -1)[:, -2:]
  margins = (top_two[:, 1] - top_two[:, 0]) / scale
  changed = exported.argmax(-1) != reference.argmax(-1)
  return {
    'median_top2_margin': float(np.median(margins)),
    'changed_max_top2_margin': float(margins[changed].max())
    if changed.any()
    else None,
  }


def _relative_difference(exported, reference) -> float:
  """The largest difference of any output, relative to that output's
  largest magnitude."""
  return max(
    float(np.max(np.abs(e - r)) / np.max(np.abs(r)))
    for e, r in zip(exported, reference)
  )
