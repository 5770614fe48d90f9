"""The paper's Tables 3-7, every row this repository can build, beside ours.

`python -m mnv2_jax.stats --paper` prints them. Each row holds the paper's
figure, ours in the same unit, whether they agree within the paper's
rounding (rounded or truncated to the digits it prints), and where they do
not, the reason (`NOTES`). Table 6's large detectors (SSD on VGG-16,
YOLOv2) are built for counting only (models/reference_detectors.py).

Conventions, as the paper's sources count: parameters without BatchNorm
(the TF-slim release's count) and multiply-adds of every convolution and
matrix product of one image (models/counting.py); classifiers with 1000
classes at 224 (Table 4); detectors with 80 classes at 320 (Tables 5, 6; SSD at 300 and 512,
YOLOv2 at 544);
DeepLab with 21 classes at 513, parameters with BatchNorm's scale and bias
(Table 7's figures fit that count) and atrous convolutions counted as
TensorFlow's SpaceToBatchND runs them (see `count_multiply_adds`).
Memory (Table 3): §5.1's rule, the widest tensor between two operations at
each resolution, 16 bits per value, 1 KB = 1000 bytes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from typing import Callable
from typing import Optional

import jax
import jax.numpy as jnp

from mnv2_jax.models import backbones
from mnv2_jax.models import counting
from mnv2_jax.models import deeplab
from mnv2_jax.models import mobilenet_v1
from mnv2_jax.models import mobilenet_v2
from mnv2_jax.models import nasnet
from mnv2_jax.models import reference_detectors
from mnv2_jax.models import shufflenet
from mnv2_jax.models import ssdlite

MILLION, BILLION = 1e6, 1e9


@dataclasses.dataclass(frozen=True)
class Row:
  """One figure of a paper table: ours (None: not built here) against the
  paper's, in `unit` ('M', 'B' or 'K'), printed with `digits` decimals."""

  table: str
  network: str
  quantity: str
  unit: str
  digits: int
  paper: float
  ours: Optional[float]
  note: str = ''
  # > 0: agreement within this fraction, or one unit of the last digit.
  relative: float = 0.0

  @property
  def agrees(self) -> Optional[bool]:
    """Ours rounded or truncated to the paper's digits is the paper's (or,
    with `relative`, within that fraction of it)."""
    if self.ours is None:
      return None
    if self.relative:  # or within one unit of the last printed digit
      unit = 10.0**-self.digits
      return abs(self.ours - self.paper) <= max(
        self.relative * self.paper, unit
      )
    scale = 10**self.digits
    value = self.ours * scale
    return round(self.paper * scale) in (round(value), math.floor(value))

  def as_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), 'agrees': self.agrees}


# Why a figure differs from the paper's, by (table, network, quantity).
NOTES = {
  ('4', 'MobileNetV1', 'multiply-adds'): (
    "MobileNetV1's own paper and the TF-slim release give 569M, as counted "
    'here; this paper does not say why its Table 4 has 575M'
  ),
  ('4', 'MobileNetV2', 'parameters'): (
    '3.47M (the TF-slim release, as here) printed as 3.4M: truncated, not '
    'rounded'
  ),
  ('4', 'MobileNetV2 (1.4)', 'parameters'): (
    'the TF-slim release, Keras, timm and torchvision all count 6.06M for '
    'alpha 1.4, as here; the paper does not explain its 6.9M'
  ),
  ('4', 'MobileNetV2 (1.4)', 'multiply-adds'): (
    'the TF-slim release lists 582M for alpha 1.4, as here'
  ),
  ('5', 'SSDLite heads', 'multiply-adds'): (
    "Table 6's MNetV2 + SSDLite total of 0.8B less the backbone at 320x320 "
    '(0.611B here) leaves about 0.19B for the heads, which is ours, not '
    "Table 5's 0.35B; the paper does not say how Table 5 counted"
  ),
  ('3', 'ShuffleNet (2x, g=3)', 'max'): (
    'by the rule, ShuffleNet 2x with g = 3 peaks at its stem (48 channels at '
    "112x112); the paper's column fits g = 2 (400, 800, 1600 channels) "
    'rather than g = 3 (480, 960, 1920) and does not count the stem'
  ),
  ('3', 'MobileNetV1', '7x7'): (
    "1024 channels at 7x7 is 100K at 16 bits; the paper's 199 counts two "
    'such tensors'
  ),
  ('3', 'ShuffleNet (2x, g=3)', '112x112'): (
    "the stem's 48 channels (the authors' release for 2x) at 112x112; the "
    'paper lists 32'
  ),
  **{
    ('3', 'ShuffleNet (2x, g=3)', f'{size}x{size}'): (
      f"the paper's {channels} channels are ShuffleNet 2x with g = 2; g = 3 "
      f'has {g3}'
    )
    for size, channels, g3 in ((28, 400, 480), (14, 800, 960), (7, 1600, 1920))
  },
  **{
    ('3', 'MobileNetV2', f'{size}x{size}'): (
      f"the paper's {paper} channels are the output of the Table 2 row that "
      f'reads {size}x{size}; the widest block output at {size}x{size} is '
      f'{ours} channels'
    )
    for size, paper, ours in ((56, 32, 24), (28, 64, 32), (14, 160, 96))
  },
  ('6', 'SSD300', 'parameters'): (
    '34.31M with 80 classes (+ background); SSD300 has six source layers, '
    "SSD512 seven, and the paper's 36.1M is within 0.2% of SSD512's count "
    "(36.04M here): the paper likely gives SSD512's figure for both"
  ),
  ('6', 'SSD300', 'multiply-adds'): (
    "2.4% under the paper's 35.2B; counted as TensorFlow's SpaceToBatchND "
    "would run fc6's dilation-6 convolution, 35.37B (0.5% over); the paper "
    'does not say how it counted'
  ),
  ('6', 'SSD512', 'parameters'): (
    "0.2% under the paper's 36.1M with 80 classes (+ background); COCO's 90 "
    'category ids (+ background) would give 37.5M'
  ),
  ('6', 'SSD512', 'multiply-adds'): (
    "0.9% under the paper's 99.5B; 99.91B with fc6 counted as "
    'SpaceToBatchND runs it (0.4% over)'
  ),
  ('6', 'YOLOv2', 'parameters'): (
    "Darknet's COCO YOLOv2 (Darknet-19, the 64-channel passthrough, 5 "
    "anchors x 85 outputs), with BatchNorm's scale and bias (50.94M "
    "without): 0.5% over the paper's 50.7M; the paper does not say what "
    'it counted'
  ),
  ('6', 'YOLOv2', 'multiply-adds'): (
    'the paper gives no input size, so 544 here is an assumption (the '
    "largest size YOLOv2's paper evaluates); 14.73B at 416, 31.47B at 608; "
    "the paper's 17.5B fits no size the network takes (448 gives 17.09B, "
    '480 19.61B)'
  ),
  ('7', 'MNet V1 OS16 ASPP', 'multiply-adds'): (
    '12.76B counted plainly, 14.23B as SpaceToBatchND runs it: 0.16% under '
    "the paper's 14.25B"
  ),
  ('7', 'MNet V1 OS8 ASPP MF', 'multiply-adds'): (
    "800.7B counted plainly, 990.8B as SpaceToBatchND runs it; the paper's "
    '941.9B lies between the two (5% under the second), while its other '
    'seven rows fit the SpaceToBatchND count within 0.5%. No input-size '
    "rule tried (DeepLab's (513-1)s+1, 513s truncated, rounded or rounded "
    'up, 512s) and not the OS16 ASPP rates at OS8 gives 941.9B while V2* '
    'and ResNet-101 OS8 MF still fit; the paper does not say how this one '
    'was counted'
  ),
  ('7', 'ResNet-101 OS16 ASPP', 'parameters'): (
    "DeepLab's ResNet-101 beta (a stem of three 3x3 convolutions), as "
    'here; the original 7x7 stem gives 58.04M'
  ),
  ('7', 'ResNet-101 OS8 ASPP MF', 'multiply-adds'): (
    '4353.8B counted plainly, 4868.9B as SpaceToBatchND runs it: 0.03% under '
    "the paper's 4870.6B"
  ),
  ('7', 'MNet V2* OS16', 'multiply-adds'): (
    '2.741B counted plainly, 2.742B as SpaceToBatchND runs it: 0.3% under '
    "the paper's 2.75B"
  ),
  ('7', 'MNet V2* OS8 MF', 'multiply-adds'): (
    '152.3B counted plainly, 152.5B as SpaceToBatchND runs it: 0.05% under '
    "the paper's 152.6B"
  ),
}
NOT_BUILT = 'not built here yet'


def _classifier(model, image_size: int = 224) -> tuple[float, float]:
  stats = counting.model_statistics(model, image_size)
  return (
    stats['parameters_without_batch_norm'] / MILLION,
    stats['multiply_adds'] / MILLION,
  )


def _row(
  table, network, quantity, unit, digits, paper, ours, relative=0.0
) -> Row:
  return Row(
    table,
    network,
    quantity,
    unit,
    digits,
    paper,
    ours,
    NOTES.get(
      (table, network, quantity), '' if ours is not None else NOT_BUILT
    ),
    relative,
  )


# Table 3 prints two or three significant digits (1600 for 64 x 112² x 2
# bytes = 1605.6 KB): agreement within 2%.
TABLE_3_RELATIVE = 0.02


# Table 4: (network, the model or None, paper parameters (M), paper MACs (M)).
TABLE_4: tuple[tuple[str, Optional[Callable[[], Any]], float, float], ...] = (
  ('MobileNetV1', lambda: mobilenet_v1.MobileNetV1(num_classes=1000), 4.2, 575),
  (
    'ShuffleNet 1.5',
    lambda: shufflenet.ShuffleNet(num_classes=1000, width_multiplier=1.5),
    3.4,
    292,
  ),
  (
    'ShuffleNet x2',
    lambda: shufflenet.ShuffleNet(num_classes=1000, width_multiplier=2.0),
    5.4,
    524,
  ),
  ('NasNet-A', lambda: nasnet.NASNetA(num_classes=1000), 5.3, 564),
  ('MobileNetV2', lambda: mobilenet_v2.MobileNetV2(num_classes=1000), 3.4, 300),
  (
    'MobileNetV2 (1.4)',
    lambda: mobilenet_v2.MobileNetV2(num_classes=1000, width_multiplier=1.4),
    6.9,
    585,
  ),
)


def table_4() -> list[Row]:
  rows = []
  for network, build, paper_parameters, paper_macs in TABLE_4:
    parameters, macs = _classifier(build())
    rows.append(
      _row('4', network, 'parameters', 'M', 1, paper_parameters, parameters)
    )
    rows.append(_row('4', network, 'multiply-adds', 'M', 0, paper_macs, macs))
  return rows


def layer_memory(model, image_size: int = 224) -> dict[int, int]:
  """§5.1's rule for a network of single-layer operations: the widest
  published endpoint (a tensor between two operations) at each resolution,
  in channels; 1 for the pooled features."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  _, endpoints = jax.eval_shape(model.apply, variables, images)
  widest: dict[int, int] = {}
  for value in endpoints.values():
    if len(value.shape) == 4:
      size, channels = value.shape[1], value.shape[-1]
    elif len(value.shape) == 2 and value.shape[-1] > 1:
      size, channels = 1, value.shape[-1]
    else:
      continue
    widest[size] = max(widest.get(size, 0), channels)
  widest.pop(1, None)
  widest[1] = endpoints['global_pool'].shape[-1]
  return widest


# Table 3: the paper's (channels, KB) per resolution and its maximum, per
# network.
TABLE_3 = {
  'MobileNetV1': (
    {
      112: (64, 1600),
      56: (128, 800),
      28: (256, 400),
      14: (512, 200),
      7: (1024, 199),
      1: (1024, 2),
    },
    1600,
  ),
  'MobileNetV2': (
    {size: value for size, value in counting.PAPER_TABLE3.items()},
    counting.PAPER_TABLE3_MAX_KB,
  ),
  'ShuffleNet (2x, g=3)': (
    {
      112: (32, 800),
      56: (48, 300),
      28: (400, 600),
      14: (800, 310),
      7: (1600, 156),
      1: (1600, 3),
    },
    600,
  ),
}


def _kilobytes(channels: int, size: int) -> float:
  return channels * size * size * 2 / 1000


def table_3() -> list[Row]:
  ours = {
    'MobileNetV1': layer_memory(mobilenet_v1.MobileNetV1(num_classes=0)),
    'MobileNetV2': {
      row['resolution']: row['channels'] for row in counting.memory_table()
    },
    'ShuffleNet (2x, g=3)': layer_memory(
      shufflenet.ShuffleNet(num_classes=0, width_multiplier=2.0, groups=3)
    ),
  }
  rows = []
  for network, (paper_rows, paper_max) in TABLE_3.items():
    for size, (_, paper_kb) in paper_rows.items():
      channels = ours[network].get(size)
      kilobytes = None if channels is None else _kilobytes(channels, size)
      rows.append(
        _row(
          '3',
          network,
          f'{size}x{size}',
          'K',
          0,
          paper_kb,
          kilobytes,
          TABLE_3_RELATIVE,
        )
      )
    peak = max(_kilobytes(c, s) for s, c in ours[network].items())
    rows.append(
      _row('3', network, 'max', 'K', 0, paper_max, peak, TABLE_3_RELATIVE)
    )
  return rows


def _detector(backbone: str, prediction_layers: str) -> tuple[dict, dict]:
  """Counts of a detector at 320 with 80 classes, and of its backbone."""
  model = ssdlite.SSDLite(
    num_classes=80,
    backbone_architecture=backbone,
    prediction_layers=prediction_layers,
  )
  return (
    counting.model_statistics(model, 320),
    counting.model_statistics(backbones.build(model, backbone), 320),
  )


def _heads(full: dict, backbone: dict) -> tuple[float, float]:
  """(parameters (M), multiply-adds (B)) of the extra layers and heads."""
  return (
    (full['trainable_parameters'] - backbone['trainable_parameters']) / MILLION,
    (full['multiply_adds'] - backbone['multiply_adds']) / BILLION,
  )


def _ssdlite_rows() -> list[Row]:
  """Tables 5 and 6: the heads alone on MobileNetV2, and the detectors."""
  v2_ssdlite, v2_backbone = _detector('mobilenet_v2', 'separable')
  v2_ssd, _ = _detector('mobilenet_v2', 'regular')
  v1_ssdlite, _ = _detector('mobilenet_v1', 'separable')
  ssd_parameters, ssd_macs = _heads(v2_ssd, v2_backbone)
  ssdlite_parameters, ssdlite_macs = _heads(v2_ssdlite, v2_backbone)
  rows = [
    _row('5', 'SSD heads', 'parameters', 'M', 1, 14.8, ssd_parameters),
    _row('5', 'SSD heads', 'multiply-adds', 'B', 2, 1.25, ssd_macs),
    _row('5', 'SSDLite heads', 'parameters', 'M', 1, 2.1, ssdlite_parameters),
    _row('5', 'SSDLite heads', 'multiply-adds', 'B', 2, 0.35, ssdlite_macs),
    *_reference_detector_rows(),
  ]
  for network, full, paper_parameters, paper_macs in (
    ('MNet V1 + SSDLite', v1_ssdlite, 5.1, 1.3),
    ('MNet V2 + SSDLite', v2_ssdlite, 4.3, 0.8),
  ):
    rows += _table_6_rows(network, full, paper_parameters, paper_macs)
  return rows


def _table_6_rows(network, stats, paper_parameters, paper_macs) -> list[Row]:
  """A detector's two Table 6 rows: parameters (M) and plain multiply-adds
  (B), both to one decimal as the paper prints them."""
  return [
    _row(
      '6',
      network,
      'parameters',
      'M',
      1,
      paper_parameters,
      stats['trainable_parameters'] / MILLION,
    ),
    _row(
      '6',
      network,
      'multiply-adds',
      'B',
      1,
      paper_macs,
      stats['multiply_adds'] / BILLION,
    ),
  ]


# Table 6's large detectors: (network, model, image size, paper parameters
# (M), paper MACs (B)). YOLOv2 at 544, an assumption: the largest size its
# paper evaluates (the note gives 416's and 608's counts too).
TABLE_6_REFERENCE = (
  ('SSD300', reference_detectors.SSDVGG16(image_size=300), 300, 36.1, 35.2),
  ('SSD512', reference_detectors.SSDVGG16(image_size=512), 512, 36.1, 99.5),
  ('YOLOv2', reference_detectors.YOLOv2(), 544, 50.7, 17.5),
)


def _reference_detector_rows() -> list[Row]:
  # Counted plainly: SSD is a Caffe model, and Caffe computes its atrous fc6
  # directly (the note gives the SpaceToBatchND count too).
  rows = []
  for network, model, size, paper_parameters, paper_macs in TABLE_6_REFERENCE:
    stats = counting.model_statistics(model, size)
    rows += _table_6_rows(network, stats, paper_parameters, paper_macs)
  return rows


# Table 7: (backbone, output stride, ASPP, MF) -> (parameters (M), MAdds (B)).
TABLE_7 = (
  ('MNet V1', 16, True, False, 11.15, 14.25),
  ('MNet V1', 8, True, True, 11.15, 941.9),
  ('MNet V2*', 16, True, False, 4.52, 5.8),
  ('MNet V2*', 8, True, True, 4.52, 387),
  ('MNet V2*', 16, False, False, 2.11, 2.75),
  ('MNet V2*', 8, False, True, 2.11, 152.6),
  ('ResNet-101', 16, True, False, 58.16, 81.0),
  ('ResNet-101', 8, True, True, 58.16, 4870.6),
)


TABLE_7_BACKBONES = {
  'MNet V1': 'mobilenet_v1',
  'MNet V2*': 'mobilenet_v2',
  'ResNet-101': 'resnet_101',
}


def _decimals(value: float) -> int:
  text = repr(float(value))
  return 0 if text.endswith('.0') else len(text.split('.')[1])


def table_7() -> list[Row]:
  rows = []
  for (
    backbone,
    output_stride,
    aspp,
    mf,
    paper_parameters,
    paper_macs,
  ) in TABLE_7:
    network = (
      f'{backbone} OS{output_stride}'
      + (' ASPP' if aspp else '')
      + (' MF' if mf else '')
    )
    model = deeplab.MobileDeepLabV3(
      num_classes=21,
      output_stride=output_stride,
      aspp=aspp,
      backbone_architecture=TABLE_7_BACKBONES[backbone],
    )
    stats = counting.model_statistics(model, 513)
    parameters = stats['trainable_parameters'] / MILLION
    if mf:
      macs = counting.multi_scale_multiply_adds(
        model, 513, deeplab.EVAL_SCALES, flip=True
      )['multiply_adds_space_to_batch']
    else:
      macs = stats['multiply_adds_space_to_batch']
    macs /= BILLION
    rows.append(
      _row(
        '7',
        network,
        'parameters',
        'M',
        _decimals(paper_parameters),
        paper_parameters,
        parameters,
      )
    )
    rows.append(
      _row(
        '7',
        network,
        'multiply-adds',
        'B',
        _decimals(paper_macs),
        paper_macs,
        macs,
      )
    )
  return rows


def paper_tables() -> list[Row]:
  """Every row of Tables 3-7, ours computed where the network is built."""
  return [*table_3(), *table_4(), *_ssdlite_rows(), *table_7()]
