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
  * the median latency of a call (and the outputs' largest relative
    difference from t = 1, which must stay at float rounding).

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
  import numpy as np

  from mnv2_jax.models import mobilenet_v2

  images = (
    np.random.default_rng(0)
    .uniform(-1, 1, (1, image_size, image_size, 3))
    .astype(np.float32)
  )
  reference = mobilenet_v2.MobileNetV2(num_classes=1000, width_multiplier=width)
  variables = reference.init(jax.random.key(0), images)
  # Non-trivial BatchNorm statistics, so the check below means something.
  variables = jax.tree.map(
    lambda v: (
      v + 0.1 * np.random.default_rng(1).uniform(size=v.shape).astype(v.dtype)
    ),
    variables,
  )
  model = mobilenet_v2.MobileNetV2(
    num_classes=1000, width_multiplier=width, inference_splits=splits
  )

  def features(variables, images):
    return model.apply(variables, images)[1]['global_pool']

  compiled = jax.jit(features).lower(variables, images).compile()
  analysis = compiled.memory_analysis()
  expected = np.asarray(
    jax.jit(lambda v, x: reference.apply(v, x)[1]['global_pool'])(
      variables, images
    )
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
    np.abs(outputs - expected).max() / np.abs(expected).max()
  )
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
    'backend': jax.default_backend(),
  }


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
    'median latency | vs t=1 | max rel. diff vs unsplit |',
    '|---|---|---|---|---|---|---|',
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
      f'{row["relative_difference_vs_unsplit"]:.1e} |'
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
      f'rel. diff {row["relative_difference_vs_unsplit"]:.1e}',
      flush=True,
    )
  largest = largest_expanded_tensor_bytes(
    args.image_size, args.width_multiplier
  )
  header = (
    f'MobileNetV2 {args.width_multiplier}-{args.image_size}, batch 1, '
    f'float32, inference on {rows[0]["backend"]} '
    f'(`python benchmarks/memory.py`). The largest expanded tensor '
    f'is {largest / 2**20:.2f} MiB.'
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
