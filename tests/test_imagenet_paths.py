"""The ImageNet input pipeline's faster paths against the current one (CPU).

* The generated ImageNet-like dataset (data/imagenet_like.py) reads like a
  `tfds build`.
* `prepare_imagenet` (data/imagenet_records.resize): smaller images, the same
  examples, labels and order; undecodable images left out and counted; never
  overwrites.
* uint8 training batches (`config.dataset.train_image_dtype='uint8'`),
  normalised in the jitted step: the float path's values to the rounding of
  half a grey level, and the same training step.
* For every path: shapes, ranges and labels of the training batches, an exact
  resume, and the Inception crop's distribution (mean area and aspect ratio
  over 1,000 draws) against the original images'.
"""

from __future__ import annotations

import itertools
import os

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax import configuration
from mnv2_jax import prepare_imagenet
from mnv2_jax.data import batch_format
from mnv2_jax.data import datasets
from mnv2_jax.data import image_classification
from mnv2_jax.data import imagenet_like
from mnv2_jax.data import imagenet_records
from mnv2_jax.training import trainer

IMAGE_SIZE = 32
SHORTER_SIDE = 96
TRAIN, VALIDATION = 24, 6


def _raw(data_dir: str, split: str) -> list[dict]:
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  return list(
    builder.as_dataset(
      split=split, decoders={'image': tfds.decode.SkipDecoding()}
    ).as_numpy_iterator()
  )


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('imagenet_like')
  original = os.fspath(root / 'original')
  written = imagenet_like.write(
    original, train_examples=TRAIN, validation_examples=VALIDATION
  )
  prepared = os.fspath(root / 'prepared')
  summary = imagenet_records.resize(
    original, prepared, shorter_side=SHORTER_SIDE, quality=90
  )
  return {
    'original': original,
    'prepared': prepared,
    'written': written,
    'summary': summary,
  }


def test_generated_data_reads_like_tfds_build(data):
  written = data['written']
  assert written['train_examples'] == TRAIN
  assert written['validation_examples'] == VALIDATION
  assert written['max_side'] <= imagenet_like.MAX_SIDE
  # ImageNet-like sizes: most images 500 on the longer side.
  assert 300 < written['mean_width'] < 500
  assert 250 < written['mean_height'] < 500
  config = helpers.imagenet_config(data['original'], shuffle_buffer_size=16)
  image_classification.check_data_available(config.dataset)
  assert image_classification.num_examples(config.dataset, 'train') == TRAIN
  for example in _raw(data['original'], 'train')[:4]:
    image = tf.io.decode_jpeg(example['image']).numpy()
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert max(image.shape[:2]) <= imagenet_like.MAX_SIDE
    assert image.std() > 10  # a photograph, not a flat colour
    assert 0 <= example['label'] < 1000


def test_prepare_makes_the_same_examples_smaller(data):
  before = _raw(data['original'], 'validation')
  after = _raw(data['prepared'], 'validation')
  assert [e['file_name'] for e in after] == [e['file_name'] for e in before]
  assert [e['label'] for e in after] == [e['label'] for e in before]
  for old, new in zip(before, after, strict=True):
    old_shape = tf.io.decode_jpeg(old['image']).shape[:2]
    new_shape = tf.io.decode_jpeg(new['image']).shape[:2]
    assert min(new_shape) == min(SHORTER_SIDE, min(old_shape))
    # The aspect ratio is kept, to the rounding of one pixel.
    assert abs(
      new_shape[1] / new_shape[0] - old_shape[1] / old_shape[0]
    ) < 1.5 / min(new_shape)
  split = data['summary']['train']
  assert split['examples_written'] == split['examples_read'] == TRAIN
  assert split['left_out_undecodable'] == 0
  assert split['mean_pixels_after'] < 0.5 * split['mean_pixels_before']
  assert (
    image_classification.num_examples(
      helpers.imagenet_config(data['prepared'], shuffle_buffer_size=16).dataset,
      'train',
    )
    == TRAIN
  )


def test_prepare_leaves_out_undecodable_images_and_never_overwrites(
  data, tmp_path
):
  source = os.fspath(tmp_path / 'damaged')
  good = _raw(data['original'], 'validation')
  examples = [
    {
      'image': e['image'],
      'label': int(e['label']),
      'file_name': e['file_name'].decode(),
    }
    for e in good
  ]
  examples[2]['image'] = examples[2]['image'][:200]  # a truncated JPEG
  imagenet_records.write_split(source, 'validation', examples)
  imagenet_records.write_metadata(source)
  output = os.fspath(tmp_path / 'out')
  summary = imagenet_records.resize(
    source, output, shorter_side=SHORTER_SIDE, splits=['validation']
  )
  assert summary['validation']['left_out_undecodable'] == 1
  names = [e['file_name'].decode() for e in _raw(output, 'validation')]
  assert names == [e['file_name'] for i, e in enumerate(examples) if i != 2]
  # A second run refuses to write over the first and changes nothing.
  files = sorted(os.listdir(imagenet_records.version_dir(output)))
  assert (
    prepare_imagenet.main(
      [
        '--data_dir',
        source,
        '--output_data_dir',
        output,
        '--splits',
        'validation',
      ]
    )
    == 1
  )
  assert sorted(os.listdir(imagenet_records.version_dir(output))) == files
  with pytest.raises(FileNotFoundError, match='tfds build imagenet2012'):
    imagenet_records.resize(os.fspath(tmp_path / 'none'), output + '2')


def _take(config, n: int, start_step: int = 0) -> list[dict]:
  batches = datasets.train_batches(
    config, start_step=start_step, per_host_batch_size=4
  )
  return list(itertools.islice(batches, n))


@pytest.mark.parametrize(
  'source,image_dtype',
  [('original', 'float32'), ('prepared', 'float32'), ('prepared', 'uint8')],
)
def test_every_path_batches_and_resumes(data, source, image_dtype):
  config = helpers.imagenet_config(
    data[source], image_dtype=image_dtype, shuffle_buffer_size=16
  )
  batches = _take(config, 8)  # 6 steps per epoch: crosses an epoch boundary
  labels = {int(e['label']) for e in _raw(data[source], 'train')}
  for batch in batches:
    assert batch['image'].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    if image_dtype == 'uint8':
      assert batch['image'].dtype == np.uint8
      assert batch['image'].max() > 200 and batch['image'].min() < 50
    else:
      assert batch['image'].dtype == np.float32
      assert -1.0 <= batch['image'].min() and batch['image'].max() <= 1.0
    assert set(batch['label'].tolist()) <= labels
  epoch = np.concatenate([b['label'] for b in batches[:6]])
  assert sorted(epoch) == sorted(
    e['label'] for e in _raw(data[source], 'train')
  )
  for a, b in zip(batches[3:], _take(config, 5, start_step=3), strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _crop_statistics(height: int, width: int, draws: int = 1000):
  shape = tf.constant([height, width, 3], tf.int32)
  areas, ratios = [], []
  for i in range(draws):
    _, _, h, w = image_classification.random_crop_window(
      shape, tf.constant([i, 7], tf.int64)
    ).numpy()
    areas.append(h * w / (height * width))
    ratios.append(w / h)
  return np.mean(areas), np.mean(ratios)


@pytest.mark.parametrize('shorter_side', [320, 256])
def test_crop_distribution_on_prepared_images_matches_the_original(
  shorter_side,
):
  # A typical ImageNet image (500x375) and its prepared size.
  area, ratio = _crop_statistics(375, 500)
  small_area, small_ratio = _crop_statistics(
    shorter_side, round(500 * shorter_side / 375)
  )
  # The sampler works in fractions of the image, so only pixel rounding moves
  # the statistics. Measured: mean area 0.382 at 500x375, +0.0002 at 320 and
  # +0.008 at 256; mean aspect ratio 1.044, -0.001 and +0.003. The bound is
  # about two standard errors of a 1,000-draw mean area (0.28 / sqrt(1000)).
  assert abs(small_area - area) < 0.02
  assert abs(small_ratio - ratio) < 0.02
  # The Inception crop: area in [0.05, 1], skewed small by the aspect limits.
  assert 0.3 < area < 0.5 and 0.95 < ratio < 1.15


def test_uint8_batches_are_refused_where_no_pipeline_makes_them():
  config = configuration.base_config()
  config.dataset.train_image_dtype = 'uint8'
  configuration.validate(config)  # ImageNet: made by the TFDS pipeline
  config.dataset.name = 'digits'
  config.num_classes = 10
  with pytest.raises(ValueError, match='dataset.train_image_dtype'):
    configuration.validate(config)


# ----------------------------------------------------------- uint8 batches


@pytest.mark.parametrize('preprocessing', ['inception', 'torchvision', 'cifar'])
def test_uint8_images_normalised_on_the_device_equal_the_float_path(
  data, preprocessing
):
  example = _raw(data['original'], 'train')[0]
  seed = tf.constant([3, 4], tf.int64)
  reference = image_classification.preprocess_for_train(
    example['image'], seed, IMAGE_SIZE, preprocessing
  ).numpy()
  pixels = image_classification.preprocess_for_train(
    example['image'], seed, IMAGE_SIZE, preprocessing, image_dtype='uint8'
  ).numpy()
  assert pixels.dtype == np.uint8
  on_device = np.asarray(
    batch_format.pixels_to_input(
      jnp.asarray(pixels, jnp.float32), preprocessing
    )
  )
  # Rounding to integers moves a pixel by at most half a grey level: 0.5 /
  # 127.5 in [-1, 1], 0.5 / 255 / std in torchvision's normalisation.
  bound = 0.5 / 127.5 if preprocessing != 'torchvision' else 0.5 / 255 / 0.224
  np.testing.assert_array_less(np.abs(on_device - reference), bound + 1e-6)
  assert np.abs(on_device - reference).max() > 0  # it did round


def test_uint8_batches_resume_and_carry_the_float_paths_examples(data):
  config = helpers.imagenet_config(data['original'], shuffle_buffer_size=16)
  uint8 = helpers.imagenet_config(
    data['original'], image_dtype='uint8', shuffle_buffer_size=16
  )
  reference, batches = _take(config, 4), _take(uint8, 4)
  for a, b in zip(reference, batches, strict=True):
    assert b['image'].dtype == np.uint8
    np.testing.assert_array_equal(a['label'], b['label'])
    np.testing.assert_allclose(
      batch_format.scale_pixels(b['image'].astype(np.float32)),
      a['image'],
      atol=0.5 / 127.5 + 1e-6,
    )
  for a, b in zip(batches[2:], _take(uint8, 2, start_step=2), strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_train_step_on_uint8_pixels_equals_the_float_step():

  config = helpers.tiny_digits_config()
  run = trainer.Trainer(config, devices=jax.devices()[:1])
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 16).astype(np.int32)
  initial = jax.device_get(run.init_state().params)
  results = []
  for images in (batch_format.scale_pixels(pixels.astype(np.float32)), pixels):
    state = run.init_state()
    batch = trainer.global_batch(
      {'image': images, 'label': labels}, run.data_sharding
    )
    state, metrics = run.train_step(state, batch, jax.random.key(0))
    update = jax.tree.map(np.subtract, jax.device_get(state.params), initial)
    results.append((float(metrics['loss']), jax.tree.leaves(update)))
  (loss_float, update_float), (loss_uint8, update_uint8) = results
  # The same values and gradients: the normalisation moved into the jitted
  # step, where XLA fuses it into the stem's convolution, which changes the
  # rounding only. How far two roundings of the network can part depends on
  # its depth and its longest sums (tests/helpers.py), not on one CPU: the
  # loss within the forward pass's bound, each leaf's update within the
  # forward and backward passes' (relative L2). A leaf whose update is
  # rounding noise (a bias before a BatchNorm, whose gradient is 0 in exact
  # arithmetic) stays noise. An update is read back as (initial + update) -
  # initial, which adds float32 rounding of the parameter itself: up to one
  # ulp per element, eps * ||initial||.
  depth, fan_in = helpers.network_shape(initial)
  forward_rtol = helpers.network_rtol(depth, fan_in)
  np.testing.assert_allclose(loss_uint8, loss_float, rtol=forward_rtol)
  largest = max(float(np.linalg.norm(u)) for u in update_float)
  noise = 2 * forward_rtol
  eps = helpers.FLOAT32_EPS
  for a, b, p in zip(
    update_float, update_uint8, jax.tree.leaves(initial), strict=True
  ):
    if np.linalg.norm(a) < noise * largest:  # rounding noise in both
      assert np.linalg.norm(b) < noise * largest
      continue
    bound = 2 * forward_rtol * np.linalg.norm(a) + 2 * eps * np.linalg.norm(p)
    assert np.linalg.norm(b - a) <= bound
