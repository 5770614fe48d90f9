"""Tests for the ImageNet input pipeline (CPU only, no dataset download).

Two kinds of fake data are used:

* ``tfds.testing.mock_data``: random examples produced by the real
  ``imagenet2012`` builder's features. Mocking ignores the split and file
  shuffling (every split yields the same ``num_examples`` examples), so it
  exercises the pipeline logic but not per-host sharding.
* A tiny *prepared* ``imagenet2012`` written to a temporary ``data_dir``
  (TFRecord shards + TFDS metadata), read by the real builder. This covers
  split metadata, file shuffling and per-host sharding.
"""

from __future__ import annotations

import itertools
import os

import helpers
import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax.data import datasets
from mnv2_jax.data import image_classification

IMAGE_SIZE = 32


def _photo() -> np.ndarray:
  """A real photo with an odd size, so crop-offset rounding is exercised."""
  try:
    import skimage.data

    return skimage.data.astronaut()[:397, :451]
  except ImportError:
    y, x = np.mgrid[:397, :451]
    return np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)


@pytest.fixture(scope='module')
def photo() -> np.ndarray:
  return _photo()


@pytest.fixture(scope='module')
def jpeg_bytes(photo) -> tf.Tensor:
  return tf.io.encode_jpeg(photo, quality=95)


def _assert_image(x: np.ndarray, size: int = IMAGE_SIZE) -> None:
  assert x.shape == (size, size, 3)
  assert x.dtype == np.float32
  assert x.min() >= -1.0 and x.max() <= 1.0


# ----------------------------------------------------------------------------
# Preprocessing.
# ----------------------------------------------------------------------------


def test_preprocess_for_train_shape_range_and_seeding(jpeg_bytes):
  out = {
    s: image_classification.preprocess_for_train(
      jpeg_bytes, tf.constant([s, 7], tf.int64), 64
    ).numpy()
    for s in range(4)
  }
  for x in out.values():
    _assert_image(x, 64)
  again = image_classification.preprocess_for_train(
    jpeg_bytes, tf.constant([0, 7], tf.int64), 64
  ).numpy()
  np.testing.assert_array_equal(out[0], again)
  for a, b in itertools.combinations(out.values(), 2):
    assert not np.array_equal(a, b)
  # int32 seeds are accepted too.
  _assert_image(
    image_classification.preprocess_for_train(
      jpeg_bytes, tf.constant([1, 2], tf.int32), 64
    ).numpy(),
    64,
  )


def test_preprocess_for_train_eager_matches_dataset_map(jpeg_bytes):
  seeds = tf.constant([[i, 3 * i + 1] for i in range(4)], tf.int64)
  eager = [
    image_classification.preprocess_for_train(jpeg_bytes, s, IMAGE_SIZE).numpy()
    for s in seeds
  ]
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(
    lambda s: image_classification.preprocess_for_train(
      jpeg_bytes, s, IMAGE_SIZE
    ),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  for a, b in zip(eager, ds.as_numpy_iterator(), strict=True):
    np.testing.assert_array_equal(a, b)


def test_preprocess_for_train_non_jpeg_matches_jpeg(jpeg_bytes):
  # A PNG of the decoded JPEG pixels must give the same crop/flip.
  png = tf.io.encode_png(tf.io.decode_jpeg(jpeg_bytes, channels=3))
  seed = tf.constant([5, 6], tf.int64)
  np.testing.assert_array_equal(
    image_classification.preprocess_for_train(
      jpeg_bytes, seed, IMAGE_SIZE
    ).numpy(),
    image_classification.preprocess_for_train(png, seed, IMAGE_SIZE).numpy(),
  )


def test_preprocess_for_eval_matches_manual_central_crop(jpeg_bytes):
  out = image_classification.preprocess_for_eval(jpeg_bytes, 64).numpy()
  _assert_image(out, 64)

  pixels = tf.io.decode_jpeg(jpeg_bytes, channels=3).numpy()
  h, w = pixels.shape[:2]
  # slim / tf.image.central_crop convention.
  oy, ox = int((h - h * 0.875) / 2), int((w - w * 0.875) / 2)
  crop = pixels[oy : h - oy, ox : w - ox]
  expected = tf.image.resize(crop, [64, 64], method='bilinear').numpy()
  np.testing.assert_allclose(out, expected / 127.5 - 1.0, atol=1e-6)

  mapped = next(
    tf.data.Dataset.from_tensors(jpeg_bytes)
    .map(lambda b: image_classification.preprocess_for_eval(b, 64))
    .as_numpy_iterator()
  )
  np.testing.assert_array_equal(out, mapped)


def test_preprocess_for_eval_full_crop(photo):
  png = tf.io.encode_png(photo)
  out = image_classification.preprocess_for_eval(
    png, 48, crop_fraction=1.0
  ).numpy()
  expected = tf.image.resize(photo, [48, 48]).numpy() / 127.5 - 1.0
  np.testing.assert_allclose(out, expected, atol=1e-6)
  with pytest.raises(ValueError):
    image_classification.preprocess_for_eval(png, 48, crop_fraction=0.0)


# ----------------------------------------------------------------------------
# Pipelines under tfds.testing.mock_data.
# ----------------------------------------------------------------------------

MOCK_EXAMPLES = 10  # With batch 3: 3 steps per epoch (one example dropped).
MOCK_BATCH = 3


@pytest.fixture
def mock_imagenet():
  # No metadata files are available offline, so AUTO falls back to USE_CODE.
  with tfds.testing.mock_data(
    num_examples=MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    yield


def _take(config, n: int, start_step: int = 0, batch: int = MOCK_BATCH):
  it = datasets.train_batches(
    config, start_step=start_step, per_host_batch_size=batch
  )
  return list(itertools.islice(it, n))


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_mock_images_are_encoded_jpeg(mock_imagenet):
  builder = tfds.builder('imagenet2012')
  ds = builder.as_dataset(
    split='train', decoders={'image': tfds.decode.SkipDecoding()}
  )
  for ex in ds.take(3):
    assert ex['image'].dtype == tf.string
    assert bool(tf.io.is_jpeg(ex['image']))


def test_mock_num_examples(mock_imagenet):
  assert (
    image_classification.num_examples(
      helpers.imagenet_config().dataset, 'train'
    )
    == MOCK_EXAMPLES
  )


def test_train_batches_shapes_and_determinism(mock_imagenet):
  config = helpers.imagenet_config()
  first = _take(config, 5)  # Crosses the epoch boundary after 3 batches.
  for b in first:
    assert b['image'].shape == (MOCK_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert b['image'].dtype == np.float32
    assert b['image'].min() >= -1.0 and b['image'].max() <= 1.0
    assert b['label'].shape == (MOCK_BATCH,)
    assert b['label'].dtype == np.int32
    assert ((b['label'] >= 0) & (b['label'] < 1000)).all()
  for a, b in zip(first, _take(config, 5), strict=True):
    _assert_batches_equal(a, b)
  other_seed = _take(helpers.imagenet_config(seed=1), 1)[0]
  assert not np.array_equal(first[0]['image'], other_seed['image'])


def test_train_batches_epochs_differ(mock_imagenet):
  batches = _take(helpers.imagenet_config(), 6)
  epoch0 = np.concatenate([b['label'] for b in batches[:3]])
  epoch1 = np.concatenate([b['label'] for b in batches[3:]])
  # Each epoch is reshuffled with its own seed.
  assert not np.array_equal(epoch0, epoch1)


@pytest.mark.parametrize('start_step', [1, 3, 5, 7])
def test_train_batches_resume(mock_imagenet, start_step):
  config = helpers.imagenet_config()
  reference = _take(config, start_step + 2)
  resumed = _take(config, 2, start_step=start_step)
  for a, b in zip(reference[start_step:], resumed, strict=True):
    _assert_batches_equal(a, b)


def test_eval_batches_cover_every_example_once(mock_imagenet):
  config = helpers.imagenet_config()
  batches = list(datasets.eval_batches(config, per_host_batch_size=4))
  assert len(batches) == 3  # ceil(10 / 4)
  for b in batches:
    assert b['image'].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert b['image'].dtype == np.float32
    assert b['label'].dtype == np.int32
    assert b['mask'].dtype == np.bool_
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == MOCK_EXAMPLES
  np.testing.assert_array_equal(batches[-1]['mask'], [True, True, False, False])
  np.testing.assert_array_equal(batches[-1]['image'][2:], 0.0)

  # The real examples are the split's examples, in order, eval-preprocessed.
  raw = list(
    tfds.builder('imagenet2012')
    .as_dataset(
      split='validation', decoders={'image': tfds.decode.SkipDecoding()}
    )
    .as_numpy_iterator()
  )
  labels = np.concatenate([b['label'] for b in batches])[mask]
  np.testing.assert_array_equal(labels, [ex['label'] for ex in raw])
  np.testing.assert_allclose(
    batches[0]['image'][1],
    image_classification.preprocess_for_eval(
      raw[1]['image'], IMAGE_SIZE
    ).numpy(),
    atol=1e-6,
  )


def _imagenet_with_damaged_images(self, *args, **kwargs):
  """11 imagenet2012-shaped examples (labels 0-10) of which two are damaged:
  garbage bytes (label 3) and a JPEG cut in half (label 7)."""
  del self, args, kwargs
  rng = np.random.default_rng(0)
  images = []
  for label in range(11):
    jpeg = tf.io.encode_jpeg(
      rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    ).numpy()
    if label == 3:
      jpeg = b'not an image at all'
    elif label == 7:
      jpeg = jpeg[: len(jpeg) // 2]
    images.append(jpeg)
  return tf.data.Dataset.from_tensor_slices(
    {
      'image': images,
      'label': np.arange(11, dtype=np.int64),
      'file_name': [f'{i}.JPEG' for i in range(11)],
    }
  )


def test_damaged_images_are_skipped_counted_and_replaced(caplog):
  with tfds.testing.mock_data(
    num_examples=11, as_dataset_fn=_imagenet_with_damaged_images
  ):
    # 11 examples, batch 3: 3 steps per epoch and 2 spare examples, which
    # take the places of the 2 damaged ones.
    epoch = _take(helpers.imagenet_config(), 3)
    labels = np.concatenate([b['label'] for b in epoch])
    assert sorted(labels) == [0, 1, 2, 4, 5, 6, 8, 9, 10]  # no valid one lost
    assert sum(int(b['skipped_examples']) for b in epoch) == 2
    # Evaluation scores the other 9, once each, and says what it skipped.
    batches = list(
      datasets.eval_batches(helpers.imagenet_config(), per_host_batch_size=4)
    )
  assert len(batches) == 3  # as for 11 good images: the same on every host
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(
    np.concatenate([b['label'] for b in batches])[mask],
    [0, 1, 2, 4, 5, 6, 8, 9, 10],
  )
  assert '2 of the 11 evaluation images on this host could not be decoded' in (
    caplog.text
  )


def test_train_batches_rejects_batch_larger_than_shard(mock_imagenet):
  with pytest.raises(ValueError, match='fewer than one batch'):
    next(
      datasets.train_batches(
        helpers.imagenet_config(),
        start_step=0,
        per_host_batch_size=MOCK_EXAMPLES + 1,
      )
    )


# ----------------------------------------------------------------------------
# Pipelines on a tiny prepared imagenet2012 (real builder, no mocking).
# ----------------------------------------------------------------------------

# split -> (num_examples, num_shards). Label of example i is i (unique).
PREPARED_SPLITS = {'train': (12, 3), 'validation': (7, 2)}


@pytest.fixture(scope='module')
def prepared_data_dir(tmp_path_factory) -> str:
  """Writes TFRecord shards + TFDS metadata laid out like `tfds build`."""
  root = tmp_path_factory.mktemp('tfds')
  builder = tfds.builder('imagenet2012', data_dir=os.fspath(root))
  version_dir = root / 'imagenet2012' / str(builder.version)
  version_dir.mkdir(parents=True)
  features = builder.info.features
  rng = np.random.default_rng(0)
  for split, (n, num_shards) in PREPARED_SPLITS.items():
    for shard, ids in enumerate(np.array_split(np.arange(n), num_shards)):
      path = version_dir / (
        f'imagenet2012-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}'
      )
      with tf.io.TFRecordWriter(os.fspath(path)) as writer:
        for i in ids:
          pixels = rng.integers(0, 256, (24 + i, 40, 3), dtype=np.uint8)
          writer.write(
            features.serialize_example(
              {
                'image': tf.io.encode_jpeg(pixels).numpy(),
                'label': int(i),
                'file_name': f'{split}_{i}.JPEG',
              }
            )
          )
  tfds.folder_dataset.write_metadata(
    data_dir=version_dir, features=features, check_data=False
  )
  return os.fspath(root)


@pytest.fixture
def two_hosts(monkeypatch):
  """Makes the pipeline believe it runs on one of two JAX processes."""
  monkeypatch.setattr(jax, 'process_count', lambda: 2)

  def set_host(index: int) -> None:
    monkeypatch.setattr(jax, 'process_index', lambda: index)

  return set_host


def test_prepared_num_examples_and_check(prepared_data_dir):
  config = helpers.imagenet_config(prepared_data_dir)
  image_classification.check_data_available(config.dataset)  # Does not raise.
  assert image_classification.num_examples(config.dataset, 'train') == 12
  assert image_classification.num_examples(config.dataset, 'validation') == 7


def test_prepared_train_shards_and_resume(prepared_data_dir, two_hosts):
  config = helpers.imagenet_config(prepared_data_dir)
  seen = []
  for host in (0, 1):
    two_hosts(host)
    # 6 examples per host, batch 2 -> 3 steps per epoch; take 2 epochs.
    batches = _take(config, 6, batch=2)
    epoch0 = np.concatenate([b['label'] for b in batches[:3]])
    epoch1 = np.concatenate([b['label'] for b in batches[3:]])
    assert sorted(epoch0) == sorted(epoch1)
    seen.append(set(epoch0.tolist()))
    resumed = _take(config, 2, start_step=2, batch=2)
    for a, b in zip(batches[2:4], resumed, strict=True):
      _assert_batches_equal(a, b)
  assert seen[0].isdisjoint(seen[1])
  assert seen[0] | seen[1] == set(range(12))


def test_prepared_eval_uneven_hosts(prepared_data_dir, two_hosts):
  config = helpers.imagenet_config(prepared_data_dir)
  labels, num_batches = [], []
  for host in (0, 1):
    two_hosts(host)
    batches = list(datasets.eval_batches(config, per_host_batch_size=3))
    num_batches.append(len(batches))
    for b in batches:
      labels.extend(b['label'][b['mask']].tolist())
  # 7 examples over 2 hosts (4 + 3): same number of steps on both hosts.
  assert num_batches == [2, 2]
  assert sorted(labels) == list(range(7))


def test_check_data_available_missing(tmp_path):
  missing = os.fspath(tmp_path / 'no_imagenet_here')
  with pytest.raises(ValueError, match='no_imagenet_here') as e:
    image_classification.check_data_available(
      helpers.imagenet_config(missing).dataset
    )
  assert 'tfds build imagenet2012' in str(e.value)
  assert 'ILSVRC2012_img_train.tar' in str(e.value)
  assert not os.path.exists(missing)  # Nothing was downloaded or created.


# ----------------------------------------------------------------------------
# CIFAR-10 and Imagenette: the same pipeline, other TFDS names.
# ----------------------------------------------------------------------------


def test_cifar_augmentation_is_a_shifted_crop_of_the_padded_image():
  """'cifar' preprocessing: the output is the [-1, 1] image zero-padded by 4
  and cropped back to 32x32 at some offset, perhaps mirrored; eval returns
  the whole image."""
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  png = tf.io.encode_png(pixels)
  padded = np.pad(
    pixels.astype(np.float32) / 127.5 - 1.0,
    [(4, 4), (4, 4), (0, 0)],
    constant_values=-1.0,
  )
  windows = {
    (dy, dx, flip)
    for dy in range(9)
    for dx in range(9)
    for flip in (False, True)
  }
  seen = set()
  for seed in range(12):
    out = image_classification.preprocess_for_train(
      png, tf.constant([seed, 7], tf.int64), 32, 'cifar'
    ).numpy()
    assert out.shape == (32, 32, 3)
    match = [
      (dy, dx, flip)
      for dy, dx, flip in windows
      if np.allclose(
        out,
        (lambda w: w[:, ::-1] if flip else w)(
          padded[dy : dy + 32, dx : dx + 32]
        ),
        atol=1e-6,
      )
    ]
    assert match, f'seed {seed}: not a window of the padded image'
    seen.update(match)
  assert len(seen) > 4  # the offsets and flips vary with the seed
  evaluated = image_classification.preprocess_for_eval(
    png, 32, 0.875, 'cifar'
  ).numpy()
  np.testing.assert_allclose(evaluated, pixels / 127.5 - 1.0, atol=1e-6)


@pytest.mark.parametrize(
  'name,eval_split,size,preprocessing',
  [
    ('cifar10', 'test', 32, 'cifar'),
    ('imagenette/160px-v2', 'validation', 64, 'inception'),
  ],
)
def test_cifar10_and_imagenette_pipelines_under_mock_data(
  name, eval_split, size, preprocessing
):
  config = helpers.imagenet_config()
  config.dataset.name, config.dataset.eval_split = name, eval_split
  config.image_size, config.preprocessing = size, preprocessing
  with tfds.testing.mock_data(
    num_examples=MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    datasets.check_available(config)  # the mock counts as prepared
    assert (
      image_classification.num_examples(config.dataset, 'train')
      == MOCK_EXAMPLES
    )
    batches = _take(config, 4)  # crosses the epoch boundary after 3
    for b in batches:
      assert b['image'].shape == (MOCK_BATCH, size, size, 3)
      assert -1.0 <= b['image'].min() and b['image'].max() <= 1.0
      assert ((b['label'] >= 0) & (b['label'] < 10)).all()
    evaluated = list(datasets.eval_batches(config, per_host_batch_size=4))
    assert len(evaluated) == 3  # ceil(10 / 4), the padding masked out
    assert sum(int(b['mask'].sum()) for b in evaluated) == MOCK_EXAMPLES


def test_missing_cifar10_says_how_to_build_it(tmp_path):
  config = helpers.imagenet_config(os.fspath(tmp_path / 'no_cifar_here'))
  config.dataset.name, config.dataset.eval_split = 'cifar10', 'test'
  with pytest.raises(ValueError, match='no_cifar_here') as e:
    datasets.check_available(config)
  assert 'tfds build cifar10' in str(e.value)
  assert 'ILSVRC' not in str(e.value)
