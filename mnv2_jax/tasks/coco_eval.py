"""COCO detection metrics through pycocotools, the official COCO evaluator.

Ground truth and detections are converted to COCO's json format (boxes as
[x, y, width, height] in pixels) and scored by `pycocotools.cocoeval.COCOeval`:
mAP@[.5:.95], AP50, AP75, AP for small / medium / large objects, AR@100. The
same path serves COCO (its own annotations) and the built-in scenes (ground
truth written as COCO json by `ground_truth_json`).
"""

from __future__ import annotations

import contextlib
import io
from typing import Iterable
from typing import Optional
from typing import Sequence

import numpy as np

METRIC_NAMES = (
  'AP',
  'AP50',
  'AP75',
  'APs',
  'APm',
  'APl',
  'AR1',
  'AR10',
  'AR100',
  'ARs',
  'ARm',
  'ARl',
)


def to_coco_box(
  box: Sequence[float], height: float, width: float
) -> list[float]:
  """Normalised [ymin, xmin, ymax, xmax] -> COCO [x, y, w, h] in pixels."""
  ymin, xmin, ymax, xmax = box
  return [
    float(xmin * width),
    float(ymin * height),
    float((xmax - xmin) * width),
    float((ymax - ymin) * height),
  ]


def ground_truth_json(
  images: Iterable[dict],
  category_names: Sequence[str],
  category_ids: Optional[Sequence[int]] = None,
) -> dict:
  """COCO-format ground truth.

  Args:
    images: dicts with 'id', 'height', 'width', 'boxes' [K, 4] normalised,
      'labels' [K] (0-based contiguous), optional 'crowd' [K] bool.
    category_names: one name per contiguous label.
    category_ids: COCO category id per contiguous label (default label + 1).
  """
  if category_ids is None:
    category_ids = list(range(1, len(category_names) + 1))
  result = {
    'images': [],
    'annotations': [],
    'categories': [
      {'id': int(i), 'name': n} for i, n in zip(category_ids, category_names)
    ],
  }
  annotation_id = 1
  for image in images:
    height, width = image['height'], image['width']
    result['images'].append(
      {'id': int(image['id']), 'height': int(height), 'width': int(width)}
    )
    crowd = image.get('crowd', np.zeros(len(image['labels']), bool))
    for box, label, is_crowd in zip(image['boxes'], image['labels'], crowd):
      coco_box = to_coco_box(box, height, width)
      result['annotations'].append(
        {
          'id': annotation_id,
          'image_id': int(image['id']),
          'category_id': int(category_ids[int(label)]),
          'bbox': coco_box,
          'area': coco_box[2] * coco_box[3],
          'iscrowd': int(is_crowd),
        }
      )
      annotation_id += 1
  return result


def detections_json(
  image_id: int,
  height: float,
  width: float,
  boxes: np.ndarray,
  scores: np.ndarray,
  classes: np.ndarray,
  valid: np.ndarray,
  category_ids: Optional[Sequence[int]] = None,
) -> list[dict]:
  """One image's detections (normalised boxes, 0-based classes) as COCO
  results."""
  results = []
  for box, score, label, keep in zip(boxes, scores, classes, valid):
    if not keep:
      continue
    category = (
      int(label) + 1 if category_ids is None else int(category_ids[int(label)])
    )
    results.append(
      {
        'image_id': int(image_id),
        'category_id': category,
        'bbox': to_coco_box(box, height, width),
        'score': float(score),
      }
    )
  return results


def evaluate(ground_truth: dict, detections: list[dict]) -> dict[str, float]:
  """COCOeval 'bbox' metrics; -1 where COCO defines none (e.g. no large
  objects). No detections at all gives zeros."""
  # pycocotools: detection only, and it prints on import.
  from pycocotools.coco import COCO  # noqa: PLC0415
  from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

  with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints
    coco = COCO()
    coco.dataset = ground_truth
    coco.createIndex()
    if not detections:
      return {name: 0.0 for name in METRIC_NAMES}
    results = coco.loadRes(detections)
    evaluator = COCOeval(coco, results, 'bbox')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return {
    name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats)
  }
