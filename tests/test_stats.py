"""Statistics: the release grid, multiply-add counting, the CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from mnv2_jax.models import mobilenet_v2
from mnv2_jax.models import statistics

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_grid_reproduces_all_22_released_checkpoints():
  rows = statistics.grid_statistics()
  assert len(rows) == 22
  mismatches = [r for r in rows if not r['matches']]
  assert not mismatches, mismatches
  by_key = {(r['width_multiplier'], r['resolution']): r for r in rows}
  # Exact counts behind the published "3.47M, 300M" (TF-slim README).
  assert by_key[(1.0, 224)]['parameters'] == 3_472_041
  assert by_key[(1.0, 224)]['multiply_adds'] == 300_775_552


def test_statistics_of_one_model():
  result = statistics.model_statistics(
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
  assert statistics.count_multiply_adds(jaxpr) == 4 * 4 * 4 * 3 * 3 * 2


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
  rows = {row['resolution']: row for row in statistics.memory_table()}
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
