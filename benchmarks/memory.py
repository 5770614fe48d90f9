"""Memory-efficient inference (paper §5.1): peak memory and latency vs t.

MobileNetV2 1.0 at 224x224, batch 1, float32, inference. For each number of
slices t (`config.model.inference_splits`), every inverted residual with an
expansion computes its expanded tensor t channels-slices at a time
(`model.split_inverted_residual`) and this script reports:

  * XLA's own accounting of the compiled function
    (`jax.jit(...).lower(...).compile().memory_analysis()`): the temporary
    buffers (every intermediate XLA allocates, the peak working set beyond the
    arguments) and the outputs;
  * the process's peak resident memory while running the compiled function:
    each t runs in a fresh subprocess, the kernel's peak-RSS counter (VmHWM)
    is reset (`/proc/self/clear_refs`, Linux) after compilation, and the peak
    reached during the first three calls is reported above the resident size
    just before them (the heap includes what compilation freed, so this is a
    lower bound);
  * the median latency of a call;
  * the largest relative difference from the unsplit network at layer_18,
    the last (linear) bottleneck, and at the pooled features, which must
    stay at float rounding. The variables have BatchNorm statistics and
    affine parameters far from a fresh model's, so a slicing error shows.

  python benchmarks/memory.py                 # t = 1, 2, 4, 8
  python benchmarks/memory.py --splits 1,3,16 --image_size 224

Results go to benchmarks/results/memory.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def _status_kib(field: str) -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  raise KeyError(field)


def measure_one(
  splits: int, image_size: int, width: float, repeats: int
) -> dict:
  """Runs in a subprocess of its own: compile, measure, return one row."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mnv2_jax.models import mobilenet_v2

  images = (
    np.random.default_rng(0)
    .uniform(-1, 1, (1, image_size, image_size, 3))
    .astype(np.float32)
  )
  reference = mobilenet_v2.MobileNetV2(num_classes=1000, width_multiplier=width)
  variables = perturbed_batch_norm(reference.init(jax.random.key(0), images))
  model = mobilenet_v2.MobileNetV2(
    num_classes=1000, width_multiplier=width, inference_splits=splits
  )

  def features(variables, images):
    return model.apply(variables, images)[1]['global_pool']

  compiled = jax.jit(features).lower(variables, images).compile()
  analysis = compiled.memory_analysis()

  # The equality is checked at layer_18, the last bottleneck: it is linear
  # (no ReLU6 to saturate and hide a difference), and every sliced block
  # lies before it. The pooled features follow the ReLU6 of the last 1x1
  # convolution; the fraction of its outputs at 0 or 6 is reported.
  def endpoints(model):
    def run(variables, images):
      _, points = model.apply(variables, images)
      head = points[f'layer_{last_layer}']
      saturated = jnp.mean((head <= 0) | (head >= 6))
      return points['layer_18'], points['global_pool'], saturated

    return jax.jit(run)(variables, images)

  last_layer = len(mobilenet_v2.block_configs(width)) + 2
  split_18, split_pool, _ = (np.asarray(a) for a in endpoints(model))
  expected_18, expected_pool, saturated = (
    np.asarray(a) for a in endpoints(reference)
  )

  # Peak RSS of the first calls: the kernel's high-water mark is reset after
  # compilation, so what the calls touch on top of it shows (later calls
  # reuse the heap the first one grew).
  before_kib = _status_kib('VmRSS')
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')  # resets VmHWM to the current RSS
    resettable = True
  except OSError:
    resettable = False
  outputs = np.asarray(compiled(variables, images))
  for _ in range(2):
    compiled(variables, images).block_until_ready()
  peak_rss_kib = (_status_kib('VmHWM') - before_kib) if resettable else None
  relative_difference = float(
    np.abs(split_18 - expected_18).max() / np.abs(expected_18).max()
  )
  pool_difference = float(
    np.abs(outputs - expected_pool).max() / np.abs(expected_pool).max()
  )
  if not np.array_equal(outputs, split_pool):
    raise AssertionError('the compiled function and the check disagree')
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    compiled(variables, images).block_until_ready()
    times.append(time.perf_counter() - start)
  return {
    'splits': splits,
    'image_size': image_size,
    'width_multiplier': width,
    'temp_bytes': int(analysis.temp_size_in_bytes),
    'argument_bytes': int(analysis.argument_size_in_bytes),
    'output_bytes': int(analysis.output_size_in_bytes),
    'peak_rss_above_start_kib': peak_rss_kib,
    'median_ms': statistics.median(times) * 1e3,
    'min_ms': min(times) * 1e3,
    'relative_difference_vs_unsplit': relative_difference,
    'pool_relative_difference_vs_unsplit': pool_difference,
    'head_saturated_fraction': float(saturated),
    'backend': jax.default_backend(),
  }


def perturbed_batch_norm(variables, seed: int = 1, scale: float = 0.5):
  """Variables whose BatchNorm statistics and affine parameters are far
  from a fresh model's (mean 0, variance 1, scale 1, bias 0), as a trained
  network's are; the convolution kernels stay as initialised."""
  import jax
  import numpy as np

  rng = np.random.default_rng(seed)

  def perturb(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'kernel' in name:
      return leaf
    noise = rng.uniform(-scale, scale, leaf.shape).astype(leaf.dtype)
    if "'var'" in name or "'scale'" in name:
      return leaf * np.exp(noise)  # stays positive
    return leaf + noise

  return jax.tree_util.tree_map_with_path(perturb, variables)


def largest_expanded_tensor_bytes(image_size: int, width: float) -> int:
  from mnv2_jax.models import mobilenet_v2

  size, largest = image_size // 2, 0
  for block in mobilenet_v2.block_configs(width):
    if block.has_expansion:
      largest = max(largest, size * size * block.expanded_channels * 4)
    size = -(-size // block.stride)
  return largest


def format_markdown(rows: list[dict], header: str) -> str:
  base = rows[0]
  lines = [
    header,
    '',
    '| t | XLA temp buffers | vs t=1 | peak RSS during calls | '
    'median latency | vs t=1 | max rel. diff vs unsplit, layer_18 | '
    'same, pooled |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for row in rows:
    rss = (
      'n/a'
      if row['peak_rss_above_start_kib'] is None
      else f'{row["peak_rss_above_start_kib"] / 1024:.1f} MiB'
    )
    lines.append(
      f'| {row["splits"]} | {row["temp_bytes"] / 2**20:.2f} MiB | '
      f'{row["temp_bytes"] / base["temp_bytes"]:.2f} | {rss} | '
      f'{row["median_ms"]:.1f} ms | '
      f'{row["median_ms"] / base["median_ms"]:.2f} | '
      f'{row["relative_difference_vs_unsplit"]:.1e} | '
      f'{row["pool_relative_difference_vs_unsplit"]:.1e} |'
    )
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--splits', default='1,2,4,8')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--width_multiplier', type=float, default=1.0)
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--one', type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one is not None:
    print(
      json.dumps(
        measure_one(
          args.one, args.image_size, args.width_multiplier, args.repeats
        )
      )
    )
    return

  rows = []
  for splits in (int(t) for t in args.splits.split(',')):
    result = subprocess.run(
      [
        sys.executable,
        __file__,
        '--one',
        str(splits),
        '--image_size',
        str(args.image_size),
        '--width_multiplier',
        str(args.width_multiplier),
        '--repeats',
        str(args.repeats),
      ],
      capture_output=True,
      text=True,
      check=False,
    )
    if result.returncode:
      sys.exit(f't={splits} failed:\n{result.stderr[-3000:]}')
    row = json.loads(result.stdout.strip().splitlines()[-1])
    rows.append(row)
    print(
      f't={splits}: XLA temp {row["temp_bytes"] / 2**20:.2f} MiB, peak RSS '
      f'+{row["peak_rss_above_start_kib"]} KiB, {row["median_ms"]:.1f} ms, '
      f'rel. diff {row["relative_difference_vs_unsplit"]:.1e} (layer_18), '
      f'{row["pool_relative_difference_vs_unsplit"]:.1e} (pooled)',
      flush=True,
    )
  largest = largest_expanded_tensor_bytes(
    args.image_size, args.width_multiplier
  )
  header = (
    f'MobileNetV2 {args.width_multiplier}-{args.image_size}, batch 1, '
    f'float32, inference on {rows[0]["backend"]} '
    f'(`python benchmarks/memory.py`). The largest expanded tensor '
    f'is {largest / 2**20:.2f} MiB. BatchNorm statistics and affine '
    f"parameters perturbed from a fresh model's; "
    f"{rows[0]['head_saturated_fraction']:.0%} of the last 1x1 convolution's "
    f'outputs are at 0 or 6 (ReLU6 saturated) before the pooling.'
  )
  table = format_markdown(rows, header)
  print(table)
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, 'memory.md'), 'w') as f:
    f.write(table + '\n')
  with open(os.path.join(RESULTS, 'memory.json'), 'w') as f:
    json.dump(rows, f, indent=2)


if __name__ == '__main__':
  main()
