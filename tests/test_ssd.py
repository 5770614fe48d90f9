"""SSDLite: anchors, box coding, matching, loss, NMS, model size (paper §6.2)."""

import math

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax.data import batch_format
from mnv2_jax.data import datasets
from mnv2_jax.models import box_ops
from mnv2_jax.models import counting
from mnv2_jax.models import mobilenet_v2
from mnv2_jax.models import ssdlite
from mnv2_jax.models.building import build_model
from mnv2_jax.tasks import detection


def test_anchor_scales_and_counts_per_layer():
  specs = box_ops.layer_box_specs()
  # Lowest layer reduced to 3 boxes: (0.1, 1), (0.2, 2), (0.2, 1/2).
  assert specs[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
  # Scales 0.2 ... 0.95 linearly over 6 layers: layer 1 has 0.35.
  scales = [0.2 + 0.15 * i for i in range(6)] + [1.0]
  for layer in range(1, 6):
    assert [s for s, _ in specs[layer][:5]] == pytest.approx(
      [scales[layer]] * 5
    )
    assert [r for _, r in specs[layer][:5]] == pytest.approx(
      [1, 2, 0.5, 3, 1 / 3]
    )
    assert specs[layer][5][0] == pytest.approx(
      math.sqrt(scales[layer] * scales[layer + 1])
    )
  assert box_ops.num_boxes_per_location() == [3, 6, 6, 6, 6, 6]
  sizes = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
  anchors = box_ops.generate_anchors(sizes)
  assert anchors.shape == (20 * 20 * 3 + (100 + 25 + 9 + 4 + 1) * 6, 4)  # 2034
  # First anchor: centre of cell (0, 0) of the 20x20 map, scale 0.1, ratio 1.
  np.testing.assert_allclose(
    anchors[0],
    [0.025 - 0.05, 0.025 - 0.05, 0.025 + 0.05, 0.025 + 0.05],
    atol=1e-6,
  )
  # Second: scale 0.2, aspect 2 (width / height): 0.2·√2 wide, 0.2/√2 high.
  height, width = anchors[1, 2] - anchors[1, 0], anchors[1, 3] - anchors[1, 1]
  assert width == pytest.approx(0.2 * math.sqrt(2), rel=1e-5)
  assert height == pytest.approx(0.2 / math.sqrt(2), rel=1e-5)
  # The last map is 1x1: every box centred on the image.
  np.testing.assert_allclose((anchors[-6:, 0] + anchors[-6:, 2]) / 2, 0.5)


def test_box_encode_decode_round_trip_and_known_code():
  rng = np.random.default_rng(0)
  centers = rng.uniform(0.2, 0.8, (50, 2))
  sizes = rng.uniform(0.05, 0.4, (50, 2))
  boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], -1)
  anchors = np.roll(boxes, 1, axis=0)
  codes = box_ops.encode_boxes(jnp.asarray(boxes), jnp.asarray(anchors))
  np.testing.assert_allclose(
    box_ops.decode_boxes(codes, anchors), boxes, atol=1e-5
  )
  # A box shifted by a quarter of the anchor height, twice as wide.
  code = box_ops.encode_boxes(
    jnp.array([0.25, 0.0, 1.25, 2.0]), jnp.array([0.0, 0.0, 1.0, 1.0])
  )
  np.testing.assert_allclose(code, [2.5, 5.0, 0.0, 5 * math.log(2)], atol=1e-5)


def test_matching_threshold_forced_matches_padding_and_crowd():
  anchors = jnp.array(
    [
      [0.0, 0.0, 0.5, 0.5],  # 0: exactly gt 0
      [0.0, 0.0, 0.5, 0.55],  # 1: IoU 0.91 with gt 0
      [0.6, 0.6, 1.0, 1.0],  # 2: exactly the crowd box
      [0.5, 0.0, 1.0, 0.2],  # 3: best (IoU 0.4) for gt 1
      [0.0, 0.8, 0.1, 0.9],
    ]
  )  # 4: nothing
  gt_boxes = jnp.array(
    [
      [0.0, 0.0, 0.5, 0.5],
      [0.5, 0.0, 0.9, 0.1],  # small: no anchor >= 0.5
      [0.6, 0.6, 1.0, 1.0],  # crowd
      [0.0, 0.0, 0.5, 0.5],
    ]
  )  # padding (not valid)
  valid = jnp.array([True, True, True, False])
  crowd = jnp.array([False, False, True, False])
  match, positive, ignore = box_ops.match_anchors(
    anchors, gt_boxes, valid, crowd
  )
  np.testing.assert_array_equal(positive, [True, True, False, True, False])
  np.testing.assert_array_equal(match[:2], [0, 0])
  assert int(match[3]) == 1  # forced: IoU 0.4 < 0.5, but gt 1's best anchor
  np.testing.assert_array_equal(ignore, [False, False, True, False, False])


def test_loss_on_a_known_case():
  anchors = jnp.array(
    [
      [0.0, 0.0, 0.5, 0.5],
      [0.5, 0.5, 1.0, 1.0],
      [0.0, 0.5, 0.5, 1.0],
      [0.5, 0.0, 1.0, 0.5],
      [0.25, 0.25, 0.75, 0.75],
    ]
  )
  batch = {
    'boxes': jnp.array([[[0.0, 0.0, 0.5, 0.5], [0, 0, 0, 0]]]),
    'labels': jnp.array([[2, 0]]),
    'valid': jnp.array([[True, False]]),
    'crowd': jnp.array([[False, False]]),
  }
  num_logits = 4  # 3 classes + background
  # Perfect box codes; logits 0 everywhere: every logit costs log(2).
  box_encodings = jnp.zeros((1, 5, 4))
  class_logits = jnp.zeros((1, 5, num_logits))
  loss, parts = detection.ssd_loss(box_encodings, class_logits, anchors, batch)
  # 1 positive + min 3 hard negatives (of 4), each 4·log 2; normalised by 1.
  assert float(parts['classification_loss']) == pytest.approx(
    4 * 4 * math.log(2), rel=1e-5
  )
  assert float(parts['localization_loss']) == pytest.approx(0.0, abs=1e-6)
  # A box-code error of 0.5 on one coordinate of the positive: 0.5·0.5² ...
  box_encodings = box_encodings.at[0, 0, 1].set(0.5)
  _, parts = detection.ssd_loss(box_encodings, class_logits, anchors, batch)
  assert float(parts['localization_loss']) == pytest.approx(0.125, rel=1e-5)
  # ... and 2.0 is in the linear part of smooth L1: 2 - 0.5.
  box_encodings = box_encodings.at[0, 0, 1].set(2.0)
  _, parts = detection.ssd_loss(box_encodings, class_logits, anchors, batch)
  assert float(parts['localization_loss']) == pytest.approx(1.5, rel=1e-5)
  # Hard-negative mining keeps the negatives with the highest loss: making
  # negative 4 confident-background removes it from the 3 kept.
  confident = class_logits.at[0, 4].set(jnp.array([20.0, -20, -20, -20]))
  _, parts = detection.ssd_loss(jnp.zeros((1, 5, 4)), confident, anchors, batch)
  assert float(parts['classification_loss']) == pytest.approx(
    4 * 4 * math.log(2), rel=1e-5
  )


def _reference_nms(boxes, scores, threshold):
  """Textbook greedy NMS in plain numpy."""

  def iou(a, b):
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(
      min(a[3], b[3]) - max(a[1], b[1]), 0
    )
    union = (
      (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    )
    return inter / union

  kept = []
  for i in np.argsort(-scores):
    if all(iou(boxes[i], boxes[j]) <= threshold for j in kept):
      kept.append(int(i))
  return kept


def test_nms_matches_a_simple_reference_on_random_boxes():
  rng = np.random.default_rng(1)
  for trial in range(3):
    centers = rng.uniform(0.2, 0.8, (40, 2))
    sizes = rng.uniform(0.1, 0.3, (40, 2))
    boxes = np.concatenate(
      [centers - sizes / 2, centers + sizes / 2], -1
    ).astype(np.float32)
    scores = rng.uniform(0, 1, 40).astype(np.float32)
    expected = _reference_nms(boxes, scores, 0.6)
    index, valid = jax.jit(box_ops.non_max_suppression, static_argnums=(2, 3))(
      jnp.asarray(boxes), jnp.asarray(scores), 0.6, 40
    )
    assert list(np.asarray(index)[np.asarray(valid)]) == expected, trial


def test_multiclass_postprocess_keeps_classes_apart():
  anchors = jnp.array(
    [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.52], [0.5, 0.5, 1.0, 1.0]]
  )
  codes = jnp.zeros((1, 3, 4))
  logits = jnp.full((1, 3, 3), -10.0)
  logits = logits.at[0, 0, 1].set(3.0).at[0, 1, 1].set(2.0)  # class 0 twice
  logits = logits.at[0, 1, 2].set(1.0)  # anchor 1 also class 1
  out = detection.postprocess(codes, logits, anchors, max_detections=5)
  kept = [
    (int(c), round(float(s), 4))
    for c, s, v in zip(out['classes'][0], out['scores'][0], out['valid'][0])
    if v
  ]
  # Class 0: anchor 1 suppressed by anchor 0 (IoU 0.96); class 1 kept apart.
  assert kept == [
    (0, round(float(jax.nn.sigmoid(3.0)), 4)),
    (1, round(float(jax.nn.sigmoid(1.0)), 4)),
  ]


# Paper Table 6: MNetV2 + SSDLite, 4.3M parameters and 0.8B MAdds at 320x320,
# 80 classes + background. Exact: what `stats` prints.
SSDLITE_PARAMETERS = 4_337_013
SSDLITE_MULTIPLY_ADDS = 788_830_144
# The extra layers and heads alone: Table 5's SSDLite 2.1M parameters (its
# 0.35B MAdds are at SSD's 300x300 on MobileNetV1 features; ours 0.178B).
SSDLITE_HEADS_PARAMETERS = 2_113_141
SSDLITE_HEADS_MULTIPLY_ADDS = 177_617_344


def test_ssdlite_size_matches_table_5_and_6():
  model = ssdlite.SSDLite(num_classes=80)
  full = counting.model_statistics(model, 320)
  backbone = counting.model_statistics(
    mobilenet_v2.MobileNetV2(num_classes=0), 320
  )
  assert full['trainable_parameters'] == SSDLITE_PARAMETERS
  assert full['multiply_adds'] == SSDLITE_MULTIPLY_ADDS
  heads = full['trainable_parameters'] - backbone['trainable_parameters']
  assert heads == SSDLITE_HEADS_PARAMETERS
  assert (
    full['multiply_adds'] - backbone['multiply_adds']
    == SSDLITE_HEADS_MULTIPLY_ADDS
  )
  # Feature maps 20², 10², 5², 3², 2², 1²: 20·20·3 + (100+25+9+4+1)·6 anchors.
  assert ssdlite.anchors_for(model, 320).shape == (2034, 4)


def test_coco_evaluator_on_a_hand_made_case():
  from mnv2_jax.tasks import coco_eval

  # One 100x100 image, one ground-truth box 40x40 (a 'medium' object).
  truth = coco_eval.ground_truth_json(
    [
      {
        'id': 1,
        'height': 100,
        'width': 100,
        'boxes': np.array([[0.1, 0.1, 0.5, 0.5]]),
        'labels': np.array([3]),
      }
    ],
    [str(d) for d in range(10)],
  )
  assert truth['annotations'][0]['bbox'] == pytest.approx([10, 10, 40, 40])
  exact = coco_eval.detections_json(
    1,
    100,
    100,
    np.array([[0.1, 0.1, 0.5, 0.5]]),
    np.array([0.9]),
    np.array([3]),
    np.array([True]),
  )
  metrics = coco_eval.evaluate(truth, exact)
  assert metrics['AP'] == pytest.approx(1.0) and metrics[
    'APm'
  ] == pytest.approx(1.0)
  # Shifted by 4 px in x and y: IoU = 36²/(2·40² - 36²) = 0.6807, so the
  # detection counts at thresholds 0.50 ... 0.65 (4 of 10): AP 0.4, AP50 1,
  # AP75 0.
  shifted = coco_eval.detections_json(
    1,
    100,
    100,
    np.array([[0.14, 0.14, 0.54, 0.54]]),
    np.array([0.9]),
    np.array([3]),
    np.array([True]),
  )
  metrics = coco_eval.evaluate(truth, shifted)
  assert metrics['AP'] == pytest.approx(0.4, abs=1e-6)
  assert metrics['AP50'] == pytest.approx(1.0)
  assert metrics['AP75'] == pytest.approx(0.0)
  # The wrong class scores nothing; no detections at all give zeros.
  wrong = coco_eval.detections_json(
    1,
    100,
    100,
    np.array([[0.1, 0.1, 0.5, 0.5]]),
    np.array([0.9]),
    np.array([4]),
    np.array([True]),
  )
  assert coco_eval.evaluate(truth, wrong)['AP'] == pytest.approx(0.0)
  assert coco_eval.evaluate(truth, [])['AP50'] == 0.0


def test_scenes_are_deterministic_with_exact_boxes_and_masks():
  from mnv2_jax.data import scenes

  first = scenes.make_scene('train', 7, 96)
  again = scenes.make_scene('train', 7, 96)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(
    first['image'], scenes.make_scene('train', 8, 96)['image']
  )
  assert first['image'].dtype == np.uint8 and first['image'].shape == (
    96,
    96,
    3,
  )
  assert 1 <= len(first['labels']) <= scenes.MAX_OBJECTS
  for box, label in zip(first['boxes'], first['labels']):
    ymin, xmin, ymax, xmax = np.rint(box * 96).astype(int)
    window = first['mask'][ymin:ymax, xmin:xmax]
    # The box is tight around the digit's pixels (solid or rim) ...
    assert np.any(window == label + 1)
    inked = (window == label + 1) | (window == batch_format.IGNORE_LABEL)
    assert inked[0].any() and inked[-1].any()
    assert inked[:, 0].any() and inked[:, -1].any()
  # ... and the mask holds only background, the scene's classes and ignore.
  assert set(np.unique(first['mask'])) <= (
    {0, batch_format.IGNORE_LABEL} | {int(l) + 1 for l in first['labels']}
  )


def test_one_coco_train_and_eval_step_under_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  from mnv2_jax.training import trainer

  config = helpers.tiny_detection_config(
    **{'model.architecture': helpers.TINY_ARCHITECTURE},  # compiles sooner
    num_train_steps=1,
    batch_size=4,
    eval_batch_size=4,
  )
  config.dataset.name = 'coco/2017'
  config.dataset.eval_split = 'validation'
  config.dataset.shuffle_buffer_size = 8
  config.num_classes = 80
  with tfds.testing.mock_data(num_examples=6, as_dataset_fn=helpers.mock_coco):
    batch = next(
      datasets.train_batches(config, start_step=0, per_host_batch_size=4)
    )
    results = trainer.train_and_evaluate(config, str(tmp_path))
  assert batch['image'].shape == (4, 64, 64, 3)
  assert batch['boxes'].shape == (4, 8, 4) and batch['valid'].dtype == bool
  # Per-example repair counts, which trainer.py takes out and adds up.
  assert batch['clipped_boxes'].shape == batch['dropped_boxes'].shape == (4,)
  boxes = batch['boxes'][batch['valid']]
  assert np.all((boxes >= 0) & (boxes <= 1))
  assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
  assert results['num_examples'] == 6
  assert 0.0 <= results['AP50'] <= 1.0 or results['AP50'] == -1.0


def test_coco_boxes_outside_the_image_are_clipped_and_empty_ones_dropped():
  import tensorflow as tf

  from mnv2_jax.data import coco

  boxes = tf.constant(
    [
      [-0.1, 0.2, 0.5, 0.6],  # clipped
      [0.1, 0.1, 0.1, 0.5],  # zero area: dropped
      [0.2, 0.2, 1.3, 0.9],  # clipped
      [1.1, 1.1, 1.2, 1.2],  # outside: empty once clipped
      [0.3, 0.3, 0.6, 0.6],
    ]
  )  # fine
  kept, labels, counts = coco.repair_boxes(boxes, tf.constant([1, 2, 3, 4, 5]))
  np.testing.assert_allclose(
    kept.numpy(),
    [[0.0, 0.2, 0.5, 0.6], [0.2, 0.2, 1.0, 0.9], [0.3, 0.3, 0.6, 0.6]],
  )
  np.testing.assert_array_equal(labels.numpy(), [1, 3, 5])
  assert int(counts['clipped_boxes']) == 2
  assert int(counts['dropped_boxes']) == 2


def test_scene_batches_are_padded_and_resumable(small_scenes):

  config = helpers.tiny_detection_config()
  first = list(
    zip(
      range(3),
      datasets.train_batches(config, start_step=0, per_host_batch_size=8),
    )
  )
  resumed = next(
    datasets.train_batches(config, start_step=2, per_host_batch_size=8)
  )
  for key in resumed:
    np.testing.assert_array_equal(resumed[key], first[2][1][key])
  batch = first[0][1]
  assert batch['image'].shape == (8, 64, 64, 3)
  assert batch['image'].min() >= -1 and batch['image'].max() <= 1
  assert batch['boxes'].shape == (8, 8, 4)
  counts = batch['valid'].sum(1)
  assert np.all((counts >= 1) & (counts <= 4))
  boxes = batch['boxes'][batch['valid']]
  assert np.all((boxes >= 0) & (boxes <= 1))
  eval_batch = next(datasets.eval_batches(config, per_host_batch_size=20))
  # 16 test scenes (small_scenes) in a batch of 20: the last 4 are padding.
  assert eval_batch['image_id'][0] == 1
  np.testing.assert_array_equal(eval_batch['mask'], np.arange(20) < 16)


def test_init_from_a_classifier_fills_the_detector_backbone(tmp_path):
  from mnv2_jax import configuration
  from mnv2_jax.training import optimization
  from mnv2_jax.training import state as training_state
  from mnv2_jax.weights import importers

  classifier_config = configuration.base_config()
  classifier_config.model.width_multiplier = 0.35
  classifier_config.image_size = 64
  classifier = build_model(classifier_config, 1000)
  abstract = jax.eval_shape(
    classifier.init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
  )
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
    lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), dict(abstract)
  )
  importers.save(str(tmp_path / 'classifier'), classifier_config, variables)
  config = helpers.tiny_detection_config()
  detector = build_model(config)
  state = jax.eval_shape(
    lambda: training_state.create_train_state(
      config,
      training_state.abstract_variables(config, detector),
      optimization.create_optimizer(config, lambda c: 0.1),
    )
  )
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state)
  state, report = training_state.initialize_from(
    state, str(tmp_path / 'classifier')
  )
  np.testing.assert_array_equal(
    state.params['backbone']['layer_4']['expand']['conv']['kernel'],
    variables['params']['layer_4']['expand']['conv']['kernel'],
  )
  assert (
    report.startswith('Initialised ') and 'kept the initialisation' in report
  )
  # The heads and extra layers keep their (here: zero) initialisation.
  assert not np.any(state.params['head_0_box_predictor']['kernel'])
  assert not np.any(state.params['extra_1_reduce']['conv']['kernel'])


def test_exported_detector_function_holds_both_heads():
  """The function `python -m mnv2_jax.export` converts, for a detector: both
  heads' outputs (before, only the box encodings, and the converter pruned
  the class head away)."""
  from mnv2_jax.tasks import inference

  config = helpers.tiny_detection_config(
    **{'model.architecture': helpers.TINY_ARCHITECTURE}  # compiles sooner
  )
  model = build_model(config)
  images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3), minval=-1)
  variables = model.init(jax.random.key(0), images)
  boxes, logits, _ = model.apply(variables, images)
  exported_boxes, exported_logits = inference.logits_function(
    config, variables
  )(images)
  assert exported_logits.shape == boxes.shape[:2] + (config.num_classes + 1,)
  np.testing.assert_array_equal(exported_boxes, boxes)
  np.testing.assert_array_equal(exported_logits, logits)
