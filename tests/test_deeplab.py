"""Mobile DeepLabv3: model sizes, mIoU, multi-scale evaluation, VOC builder and
pipeline, scene masks (paper §6.3, Table 7)."""

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax import configuration
from mnv2_jax.data import datasets
from mnv2_jax.data import voc_builder
from mnv2_jax.models import deeplab
from mnv2_jax.tasks import segmentation


def _model(**kwargs):
  return deeplab.MobileDeepLabV3(**{'num_classes': 21, **kwargs})


@pytest.mark.parametrize('output_stride', [8, 16])
def test_output_sizes_at_output_stride_8_and_16(output_stride):
  model = _model(width_multiplier=0.35, output_stride=output_stride, aspp=True)
  images = jax.ShapeDtypeStruct((2, 65, 65, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  logits, endpoints = jax.eval_shape(model.apply, variables, images)
  assert logits.shape == (2, 65, 65, 21)
  side = 64 // output_stride + 1
  assert endpoints['logits_at_output_stride'].shape == (2, side, side, 21)
  assert endpoints['layer_18'].shape[-1] == 112  # 320 x 0.35, rounded to 8
  assert 'layer_19' not in endpoints  # MNetV2*: no 1x1 conv to 1280


# Table 7's exact counts (every backbone) are pinned in tests/test_paper_tables.py.


def test_resize_matches_tensorflow_align_corners():
  import tensorflow as tf

  x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
  for size in [(17, 25), (5, 7), (3, 4), (1, 9)]:
    expected = tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)
    np.testing.assert_allclose(
      deeplab.resize_bilinear(jnp.asarray(x), size),
      expected.numpy(),
      rtol=1e-5,
      atol=1e-6,
    )


def test_segmentation_loss_ignores_label_255_by_value():
  # Two pixels labelled 0 and 2 and two labelled 255 (VOC's borders, the
  # crop padding) whose logits would dominate the loss if they counted.
  logits = jnp.array(
    [
      [
        [[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]],
        [[0.0, 50.0, 0.0], [0.0, 0.0, -40.0]],
      ]
    ]
  )
  labels = jnp.array([[[0, 2], [255, 255]]])
  loss, count = segmentation.segmentation_loss(logits, labels)

  def nll(row, label):
    return -(row[label] - np.log(np.sum(np.exp(row))))

  expected = (nll(np.array([2.0, 0, 0]), 0) + nll(np.array([0, 0, 3.0]), 2)) / 2
  assert int(count) == 2
  # log-sum-exp minus the label's logit cancels: float32 rounds each to
  # eps times the logits' size, not the loss's.
  np.testing.assert_allclose(
    float(loss), expected, rtol=0, atol=helpers.elementwise_atol(4, 3.0)
  )
  # Changing the ignored pixels' logits changes nothing, gradients included.
  other = logits.at[0, 1].set(jnp.array([[9.0, -9.0, 1.0], [7.0, 7.0, 7.0]]))
  assert float(segmentation.segmentation_loss(other, labels)[0]) == float(loss)
  gradient = jax.grad(lambda z: segmentation.segmentation_loss(z, labels)[0])(
    logits
  )
  assert not np.any(np.asarray(gradient[0, 1]))
  assert np.all(np.abs(np.asarray(gradient[0, 0])) > 0)
  # No labelled pixel at all: loss 0, not NaN.
  empty = segmentation.segmentation_loss(logits, jnp.full((1, 2, 2), 255))
  assert float(empty[0]) == 0.0 and int(empty[1]) == 0


def test_miou_on_hand_made_confusion_cases():
  # Rows truth, columns prediction.
  confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
  mean, per_class = segmentation.iou_from_confusion(confusion)
  np.testing.assert_allclose(per_class[:2], [8 / 11, 3 / 6])
  assert np.isnan(per_class[2])  # never seen nor predicted: left out
  assert mean == pytest.approx((8 / 11 + 3 / 6) / 2)
  # The confusion matrix itself, with ignored pixels, from label maps.
  labels = jnp.array([[0, 0, 1, 255], [2, 2, 255, 1]])
  predictions = jnp.array([[0, 1, 1, 2], [2, 0, 0, 1]])
  np.testing.assert_array_equal(
    segmentation.confusion_matrix(predictions, labels, 3),
    [[1, 1, 0], [0, 2, 0], [1, 0, 1]],
  )
  # Accumulating per-batch matrices is exact; averaging per-batch mIoUs is not.
  a, b = np.array([[9, 0], [0, 1]]), np.array([[1, 0], [9, 0]])
  assert segmentation.iou_from_confusion(a + b)[0] == pytest.approx(
    (10 / 19 + 1 / 10) / 2
  )


def test_multi_scale_with_scale_one_and_no_flip_is_single_scale():
  model = _model(num_classes=5, width_multiplier=0.35)
  images = jnp.asarray(
    np.random.default_rng(1).uniform(-1, 1, (1, 33, 33, 3)), jnp.float32
  )
  # Random weights and BatchNorm statistics, without compiling model.init.
  rng = np.random.default_rng(0)

  def draw(path, s):
    name = path[-1].key
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    if name == 'kernel':  # He-normal over the fan-in
      fan_in = (
        np.prod(s.shape[:-1]) if s.shape[-2] > 1 else np.prod(s.shape[:2])
      )
      return (rng.normal(size=s.shape) * np.sqrt(2 / fan_in)).astype(np.float32)
    return rng.normal(0, 0.1, s.shape).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(
    draw, jax.eval_shape(model.init, jax.random.key(0), images)
  )
  apply = lambda x: model.apply(variables, x)[0]
  single = jax.jit(lambda x: jax.nn.softmax(apply(x), axis=-1))(images)
  multi_scale = jax.jit(
    segmentation.multi_scale_probabilities, static_argnums=(0, 2, 3)
  )
  np.testing.assert_allclose(
    multi_scale(apply, images, (1.0,), False), single, rtol=1e-6, atol=1e-7
  )
  merged = multi_scale(apply, images, (0.5, 1.0), True)
  assert merged.shape == single.shape
  np.testing.assert_allclose(merged.sum(-1), 1.0, rtol=1e-5)
  assert not np.allclose(merged, single, atol=1e-4)


def test_multi_scale_undoes_the_flip_and_the_scaling():
  """With the image itself as logits, every pass must map back onto the
  original pixels: the un-flip and the resize to full size are exact for a
  linear ramp, so the merged probabilities equal the softmax of the image."""
  ramp = np.linspace(-2, 2, 33, dtype=np.float32)
  images = np.stack(
    [
      ramp[None, :] + 0 * ramp[:, None],
      0.5 * ramp[:, None] + 0 * ramp[None, :],
      np.zeros((33, 33), np.float32),
    ],
    -1,
  )[None]
  expected = jax.nn.softmax(images, axis=-1)
  for scales in [(1.0,), (0.5, 1.0, 1.5)]:
    merged = segmentation.multi_scale_probabilities(
      lambda x: x, jnp.asarray(images), scales, flip=True
    )
    np.testing.assert_allclose(merged, expected, rtol=1e-5, atol=1e-6)


def test_segmentation_config_errors_name_the_field():
  for field, value, message in [
    ('segmentation.flip', True, 'mirrored digit'),
    ('segmentation.multi_scale_eval', True, 'eval_flip'),
    ('segmentation.min_scale_factor', 3.0, 'min_scale_factor'),
    ('segmentation.eval_scales', (True,), 'eval_scales'),
    ('model.output_stride', 32, 'output stride 8 or 16'),
    ('num_classes', 10, 'num_classes'),
  ]:
    config = helpers.tiny_scene_config()
    config.update_from_flattened_dict({field: value})
    with pytest.raises(ValueError, match=message):
      configuration.validate(config)


def test_scene_segmentation_batches(small_scenes):

  config = helpers.tiny_scene_config()
  first = next(
    datasets.train_batches(config, start_step=3, per_host_batch_size=4)
  )
  again = next(
    datasets.train_batches(config, start_step=3, per_host_batch_size=4)
  )
  np.testing.assert_array_equal(first['label'], again['label'])
  assert first['image'].shape == (4, 64, 64, 3)
  assert (
    first['label'].shape == (4, 64, 64) and first['label'].dtype == np.int32
  )
  assert set(np.unique(first['label'])) <= set(range(11)) | {255}
  assert (first['label'] > 0).any() and (first['label'] == 255).any()
  evaluation = next(datasets.eval_batches(config, per_host_batch_size=8))
  assert evaluation['mask'].all() and evaluation['label'].shape == (8, 64, 64)


# ------------------------------------------------------------------ VOC


def test_voc_builder_reads_palette_masks_and_sbd(tmp_path):
  import tensorflow_datasets as tfds

  train_ids, val_ids, sbd_ids = ['a1', 'a2', 'a3'], ['b1', 'b2'], ['s1']
  masks = helpers.write_voc(
    str(tmp_path / 'manual'), train_ids + ['d1', 'd2'], val_ids, sbd_ids
  )
  # Two damaged train pairs: a truncated JPEG, a garbled mask PNG.
  tree = tmp_path / 'manual' / 'VOCdevkit' / 'VOC2012'
  jpeg = tree / 'JPEGImages' / 'd1.jpg'
  jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
  png = tree / 'SegmentationClass' / 'd2.png'
  png.write_bytes(png.read_bytes()[:20] + b'garbage' * 10)
  builder = voc_builder.Voc2012Segmentation(data_dir=str(tmp_path / 'data'))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      manual_dir=str(tmp_path / 'manual')
    )
  )
  splits = builder.info.splits
  assert splits['train'].num_examples == 3  # the damaged pairs skipped
  # ...named, once for train and once for train_aug (which lists them too).
  assert len(builder.skipped) == 4
  assert sum('d1.jpg: unreadable image' in r for r in builder.skipped) == 2
  assert sum('d2.png: unreadable PNG' in r for r in builder.skipped) == 2
  assert splits['validation'].num_examples == 2
  # train_aug = SBD train (s1 and the VOC val image b1) + VOC train - VOC val.
  assert splits['train_aug'].num_examples == 4
  for example in builder.as_dataset(split='train_aug').as_numpy_iterator():
    name = example['file_name'].decode()
    np.testing.assert_array_equal(example['segmentation'][..., 0], masks[name])
  assert 255 in masks['a1'] and 255 not in masks['s1']

  # A mask that is not a palette PNG, or holds ids beyond VOC's, is named.
  bad = tmp_path / 'bad.png'
  from PIL import Image

  Image.fromarray(np.zeros((4, 4), np.uint8)).save(bad)
  with pytest.raises(voc_builder.CorruptExampleError, match='palette'):
    voc_builder.read_mask(str(bad))
  helpers.palette_png(str(bad), np.full((4, 4), 30))
  with pytest.raises(voc_builder.CorruptExampleError, match=r'\[30\]'):
    voc_builder.read_mask(str(bad))


def test_one_voc_train_and_eval_step_on_generated_files(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  from mnv2_jax import voc as voc_cli
  from mnv2_jax.training import trainer

  masks = helpers.write_voc(
    str(tmp_path / 'manual'), ['a1', 'a2', 'a3', 'a4'], ['b1', 'b2', 'b3']
  )
  voc_cli.main(
    [
      '--manual_dir',
      str(tmp_path / 'manual'),
      '--data_dir',
      str(tmp_path / 'data'),
    ]
  )
  config = helpers.tiny_scene_config(
    num_train_steps=1, batch_size=2, eval_batch_size=2
  )
  config.model.architecture = helpers.TINY_ARCHITECTURE  # compiles sooner
  config.dataset.name = 'voc2012'
  config.dataset.data_dir = str(tmp_path / 'data')
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.dataset.shuffle_buffer_size = 8
  config.num_classes = 21
  config.image_size = 97  # pads every (< 80 px) validation image
  config.segmentation.flip = True
  configuration.validate(config)
  batch = next(
    datasets.train_batches(config, start_step=0, per_host_batch_size=2)
  )
  assert batch['image'].shape == (2, 97, 97, 3)
  assert set(np.unique(batch['label'])) <= set(range(21)) | {255}
  assert (batch['label'] == 255).any()  # the mask's rim and the crop padding
  results = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 0.0 <= results['mIoU'] <= 1.0
  # Every labelled pixel of the three validation images is scored once.
  evaluation = list(datasets.eval_batches(config, per_host_batch_size=2))
  assert sum(b['mask'].sum() for b in evaluation) == 3
  scored = sum(
    ((b['label'] != 255) & b['mask'][:, None, None]).sum() for b in evaluation
  )
  assert scored == sum((masks[n] != 255).sum() for n in ('b1', 'b2', 'b3'))
  # As two hosts: the same number of (padded) batches on each, and the
  # three validation images split between them, each scored once.
  images, batch_counts = [], []
  for host in (0, 1):
    monkeypatch.setattr(jax, 'process_index', lambda host=host: host)
    monkeypatch.setattr(jax, 'process_count', lambda: 2)
    shard = list(datasets.eval_batches(config, per_host_batch_size=2))
    batch_counts.append(len(shard))
    images += [i.tobytes() for b in shard for i in b['image'][b['mask']]]
  assert batch_counts[0] == batch_counts[1]
  assert len(images) == len(set(images)) == 3
  assert set(images) == {
    i.tobytes() for b in evaluation for i in b['image'][b['mask']]
  }
  del tfds


def test_missing_voc_dataset_gives_a_clear_error(tmp_path):

  config = helpers.config_file('deeplab_mnv2_voc_os16')
  config.dataset.data_dir = str(tmp_path)
  with pytest.raises(ValueError, match='python -m mnv2_jax.voc'):
    datasets.check_available(config)
