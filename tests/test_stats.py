"""Statistics: the release grid, multiply-add counting, the CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from mnv2_jax.models import counting
from mnv2_jax.models import mobilenet_v2

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Every row of the release grid, exactly: (α, resolution, parameters without
# BatchNorm with a 1001-class head, multiply-adds). Published (TF-slim README,
# docs/paper.md): 6.06M / 582M, 5.34M / 509M, 3.47M / 300M, 221M, 154M, 99M,
# 56M, 2.61M / 209M, 153M, 107M, 69M, 39M, 1.95M / 97M, 71M, 50M, 32M, 18M,
# 1.66M / 59M, 43M, 30M, 20M, 11M.
EXACT_GRID = [
  (1.4, 224, 6062633, 582197616),
  (1.3, 224, 5344201, 509376224),
  (1.0, 224, 3472041, 300775552),
  (1.0, 192, 3472041, 221317888),
  (1.0, 160, 3472041, 154084480),
  (1.0, 128, 3472041, 99075328),
  (1.0, 96, 3472041, 56290432),
  (0.75, 224, 2611065, 209071072),
  (0.75, 192, 2611065, 153943168),
  (0.75, 160, 2611065, 107296480),
  (0.75, 128, 2611065, 69131008),
  (0.75, 96, 2611065, 39446752),
  (0.5, 224, 1951417, 97133120),
  (0.5, 192, 1951417, 71703040),
  (0.5, 160, 1951417, 50185280),
  (0.5, 128, 1951417, 32579840),
  (0.5, 96, 1951417, 18886720),
  (0.35, 224, 1664329, 59287088),
  (0.35, 192, 1664329, 43897792),
  (0.35, 160, 1664329, 30876080),
  (0.35, 128, 1664329, 20221952),
  (0.35, 96, 1664329, 11935408),
]


def test_grid_reproduces_all_22_released_checkpoints():
  rows = counting.grid_statistics()
  assert len(rows) == 22
  mismatches = [r for r in rows if not r['matches']]
  assert not mismatches, mismatches
  exact = [
    (
      r['width_multiplier'],
      r['resolution'],
      r['parameters'],
      r['multiply_adds'],
    )
    for r in rows
  ]
  assert exact == EXACT_GRID


def test_statistics_of_one_model():
  result = counting.model_statistics(
    mobilenet_v2.MobileNetV2(num_classes=1000), 224
  )
  assert result['trainable_parameters'] == 3_504_872  # Keras/timm/torchvision
  assert result['all_parameters'] == 3_538_984
  # 300,775,552 for the 1001-class release minus one class of 1280 MACs.
  assert result['multiply_adds'] == 300_775_552 - 1280
  # The widest tensor is layer_3's expansion: 112x112x96 (paper Table 2).
  assert result['largest_activation'] == {
    'name': 'layer_3/expansion_output',
    'shape': [112, 112, 96],
    'elements': 112 * 112 * 96,
  }


def test_multiply_adds_of_a_single_convolution():
  def conv(x, w):
    return jax.lax.conv_general_dilated(
      x,
      w,
      (2, 2),
      'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=4,
    )

  x = jnp.zeros((1, 8, 8, 8))
  w = jnp.zeros((3, 3, 2, 4))  # 4 groups of 2 input channels
  jaxpr = jax.make_jaxpr(conv)(x, w).jaxpr
  # 4x4 outputs x 4 channels, each 3x3x2 multiply-adds.
  assert counting.count_multiply_adds(jaxpr) == 4 * 4 * 4 * 3 * 3 * 2


def test_stats_cli_json():
  run = subprocess.run(
    [
      sys.executable,
      '-m',
      'mnv2_jax.stats',
      f'--config={REPO_ROOT}/configs/imagenet_mnv2.py',
      '--config.model.width_multiplier=1.4',
      '--json',
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(run.stdout)
  assert result['trainable_parameters'] == 6_108_776
  assert result['width_multiplier'] == 1.4


def _stats_cli(*arguments) -> str:
  run = subprocess.run(
    [sys.executable, '-m', 'mnv2_jax.stats', *arguments],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert run.returncode == 0, run.stderr[-2000:]
  return run.stdout


def test_stats_cli_memory_detection_and_segmentation():
  # (--grid's rows are grid_statistics', tested in this process above.)
  assert '| max | 401K | 602K | 400K |' in _stats_cli('--memory')
  # The README's SSDLite figures, heads alone included (Table 5, 6).
  detection = _stats_cli(f'--config={REPO_ROOT}/configs/ssdlite_mnv2_coco.py')
  assert 'trainable parameters:          4,337,013' in detection
  assert (
    'extra layers and heads alone:  2,113,141 parameters, 177,617,344 '
    'multiply-adds' in detection
  )
  # Table 7's OS 8 + ASPP + MF row: 387B counted as TensorFlow does.
  segmentation = _stats_cli(
    f'--config={REPO_ROOT}/configs/deeplab_mnv2_voc_os8_aspp.py'
  )
  assert '21,136,891,328 single scale, 387,477,555,456 MF' in segmentation


def test_stats_cli_rejects_a_bad_width_multiplier():
  run = subprocess.run(
    [
      sys.executable,
      '-m',
      'mnv2_jax.stats',
      f'--config={REPO_ROOT}/configs/imagenet_mnv2.py',
      '--config.model.width_multiplier=-0.5',
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert run.returncode != 0
  assert 'model.width_multiplier=-0.5 is invalid' in run.stderr


def test_memory_table_by_the_papers_rule():
  # Paper Table 3, MobileNetV2: 16 channels at 112² (400K at 16 bits) is the
  # network's peak; 320 at 7², the 1280 pooled features at 1².
  rows = {row['resolution']: row for row in counting.memory_table()}
  assert sorted(rows) == [1, 7, 14, 28, 56, 112]
  assert rows[112]['channels'] == 16
  assert rows[112]['kilobytes'] == pytest.approx(16 * 112 * 112 * 2 / 1000)
  assert rows[7]['channels'] == 320 and rows[1]['channels'] == 1280
  assert max(row['kilobytes'] for row in rows.values()) == pytest.approx(
    401.408
  )
  # The rows at 56², 28², 14² of the paper list the width of the row that
  # reads that resolution in Table 2 (32, 64, 160).
  assert [rows[r]['table2_channels'] for r in (56, 28, 14)] == [32, 64, 160]
  assert rows[56]['paper_channels'] == 32
