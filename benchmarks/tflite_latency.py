r"""Paper Table 4's and Table 6's CPU column on this CPU: TFLite latency of
the networks `python -m mnv2_jax.export` writes, one thread, float32 and int8.

The paper timed one big core of a Pixel 1 with TFLite (2018): MobileNetV1
113 ms, NASNet-A 183 ms, MobileNetV2 75 ms, MobileNetV2 (1.4) 143 ms (Table
4, 224x224); MNet V1 + SSDLite 270 ms, MNet V2 + SSDLite 200 ms (Table 6,
320x320). ShuffleNet was not timed there ("TF-Lite lacked efficient group
convolutions"); it is timed here for what it shows. The detectors' rows
time the network (backbone, extra layers and both heads) without anchor
decoding and non-maximum suppression, which the paper's 200 and 270 ms may
include.

For each network this writes a workdir holding its random initialisation
(`weights.importers.save`; latency does not depend on the weights' values),
exports it with `python -m mnv2_jax.export --format tflite`, with and without
`--quantize int8` (the export's own check against JAX runs too), and times
the file with the TFLite interpreter (its XNNPACK delegate, `num_threads=1`)
in a fresh process per file, pinned to one core: median of `--repeats`
invokes after a warm-up, with the 10th and 90th percentiles. The reference
rate is one core's float32 matrix-product rate, measured on the same core in
its own process as a one-thread 1024^3 product (numpy, OpenBLAS held to one
thread), not the core's peak; each network's float32 row gives its 2 x
multiply-adds / latency against it.

  python benchmarks/tflite_latency.py --out_dir benchmarks/results

Exports are kept in `--cache_dir` and reused, so `--stage export` can run
while the machine is busy and `--stage time` later on quiet cores. Compare
the ratios with the paper's: V2 / V1 = 0.66, NASNet-A / V2 = 2.4, V2 1.4 / V2
= 1.9, detector V2 / V1 = 0.74.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, config file, overrides, the paper's Pixel 1 milliseconds or None).
NETWORKS = (
  (
    'MobileNetV1',
    'configs/imagenet_mnv2.py',
    {'model.architecture': 'mobilenet_v1'},
    113,
  ),
  (
    'NASNet-A',
    'configs/imagenet_mnv2.py',
    {
      'model.architecture': 'nasnet_a',
      'model.nasnet_filters': 44,  # 4 @ 1056
      'model.nasnet_cells_per_stack': 4,
    },
    183,
  ),
  ('MobileNetV2', 'configs/imagenet_mnv2.py', {}, 75),
  (
    'MobileNetV2 (1.4)',
    'configs/imagenet_mnv2.py',
    {'model.width_multiplier': 1.4},
    143,
  ),
  (
    'ShuffleNet 1.5 (g = 3)',
    'configs/imagenet_mnv2.py',
    {'model.architecture': 'shufflenet', 'model.width_multiplier': 1.5},
    None,
  ),
  (
    'ShuffleNet x2 (g = 3)',
    'configs/imagenet_mnv2.py',
    {'model.architecture': 'shufflenet', 'model.width_multiplier': 2.0},
    None,
  ),
  (
    'MNet V1 + SSDLite',
    'configs/ssdlite_mnv2_coco.py',
    {'model.architecture': 'mobilenet_v1'},
    270,
  ),
  ('MNet V2 + SSDLite', 'configs/ssdlite_mnv2_coco.py', {}, 200),
)
# The paper's latency ratios: (numerator, denominator).
RATIOS = (
  ('MobileNetV2', 'MobileNetV1'),
  ('NASNet-A', 'MobileNetV2'),
  ('MobileNetV2 (1.4)', 'MobileNetV2'),
  ('MNet V2 + SSDLite', 'MNet V1 + SSDLite'),
)
PRECISIONS = ('float32', 'int8')


def _slug(name: str) -> str:
  return ''.join(c if c.isalnum() else '_' for c in name).strip('_').lower()


def _folder(cache_dir: str, name: str, image_size: int) -> str:
  """Where one network's workdir and exports are kept: by name, input size
  and the last commit that changed what an export is made of (the networks,
  the export, the inference function), so that no stale export is ever
  timed. Uncommitted changes are not seen: clear the cache after them."""
  commit = subprocess.run(
    [
      'git',
      'log',
      '-1',
      '--format=%h',
      '--',
      'mnv2_jax/models',
      'mnv2_jax/weights',
      'mnv2_jax/tasks',
    ],
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
  ).stdout.strip()
  size = f'{image_size}px' if image_size else 'paper_size'
  return os.path.join(cache_dir, f'{_slug(name)}_{size}_{commit or "nogit"}')


def _config(name: str, image_size: int = 0):
  import importlib.util  # noqa: PLC0415 (worker only)

  from mnv2_jax import configuration  # noqa: PLC0415

  _, path, overrides, _ = next(n for n in NETWORKS if n[0] == name)
  spec = importlib.util.spec_from_file_location(
    'experiment', os.path.join(REPO_ROOT, path)
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.update_from_flattened_dict(overrides)
  if image_size:  # the tests' small shapes
    config.image_size = image_size
  configuration.validate(config)
  return config


def make_workdir(name: str, workdir: str, image_size: int) -> dict:
  """Writes `name`'s random initialisation as a workdir; returns its
  multiply-adds and parameters."""
  from mnv2_jax.models import counting  # noqa: PLC0415
  from mnv2_jax.models import initializers  # noqa: PLC0415
  from mnv2_jax.models.building import build_model  # noqa: PLC0415 (worker only)
  from mnv2_jax.training import state as training_state  # noqa: PLC0415
  from mnv2_jax.weights import importers  # noqa: PLC0415

  config = _config(name, image_size)
  model = build_model(config)
  counts = counting.model_statistics(model, config.image_size)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    variables = initializers.host_variables(
      model, training_state.model_input_shape(config), 0, train=False
    )
    importers.save(
      workdir, config, variables, source='random initialisation (timing)'
    )
  return {
    'image_size': config.image_size,
    'multiply_adds': counts['multiply_adds'],
    'parameters': counts['trainable_parameters'],
  }


def matmul_limit() -> dict:
  """One core's float32 rate: a one-thread 1024^3 matrix product."""
  import numpy as np  # noqa: PLC0415

  os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
  n = 1024
  a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
  a @ a
  times = []
  for _ in range(10):
    start = time.perf_counter()
    a @ a
    times.append(time.perf_counter() - start)
  return {'matmul_float32_flops_per_s': 2 * n**3 / sorted(times)[5]}


def time_tflite(path: str, warmup: int, repeats: int) -> dict:
  """Milliseconds per invoke of one .tflite file on one thread."""
  import numpy as np  # noqa: PLC0415
  import tensorflow as tf  # noqa: PLC0415

  # One core, always the same one: the interpreter's thread and Python's.
  os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
  interpreter = tf.lite.Interpreter(model_path=path, num_threads=1)
  interpreter.allocate_tensors()
  detail = interpreter.get_input_details()[0]
  image = (
    np.random.default_rng(0)
    .uniform(-1, 1, detail['shape'])
    .astype(detail['dtype'])
  )
  interpreter.set_tensor(detail['index'], image)
  for _ in range(warmup):
    interpreter.invoke()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    interpreter.invoke()
    times.append(1000 * (time.perf_counter() - start))
  p10, median, p90 = np.percentile(times, (10, 50, 90))
  return {
    'median_ms': float(median),
    'p10_ms': float(p10),
    'p90_ms': float(p90),
    'cpu': sorted(os.sched_getaffinity(0)),
    'repeats': repeats,
    'tensorflow': tf.__version__,
  }


def _run_worker(arguments: list[str], single_thread: bool = False) -> dict:
  environment = dict(os.environ, PYTHONPATH=REPO_ROOT)
  if single_thread:
    for variable in (
      'OMP_NUM_THREADS',
      'OPENBLAS_NUM_THREADS',
      'MKL_NUM_THREADS',
    ):
      environment[variable] = '1'
  run = subprocess.run(
    [sys.executable, os.path.abspath(__file__), '--worker', *arguments],
    capture_output=True,
    text=True,
    env=environment,
    cwd=REPO_ROOT,
  )
  if run.returncode:
    sys.exit(f'worker {arguments} failed:\n{run.stderr[-4000:]}')
  return json.loads(run.stdout.strip().splitlines()[-1])


def _export(workdir: str, path: str, precision: str) -> None:
  if os.path.exists(path):
    return
  command = [
    sys.executable,
    '-m',
    'mnv2_jax.export',
    f'--workdir={workdir}',
    '--format=tflite',
    f'--output={path}',
  ]
  if precision == 'int8':
    command.append('--quantize=int8')
  run = subprocess.run(
    command,
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    env=dict(os.environ, PYTHONPATH=REPO_ROOT),
  )
  if run.returncode:
    sys.exit(f'{" ".join(command)} failed:\n{run.stderr[-4000:]}')


def markdown(record: dict) -> str:
  limit = record['limit']['matmul_float32_flops_per_s']
  lines = [
    '# TFLite latency, one thread (paper Table 4 and Table 6, CPU column)',
    '',
    f'`{record["command"]}`  ',
    f'{record["machine"]["cpu"]}, {record["date"]}, TensorFlow '
    f'{record["tensorflow"]} (XNNPACK delegate, num_threads=1, one pinned '
    "core). That core's one-thread float32 matrix-product rate: "
    f'{limit / 1e9:.0f} GFLOP/s. Random initialisations: latency does not '
    'depend on the weights. Detectors: the network only, no anchor decoding '
    'or NMS.',
    '',
    '| network | input | MAdds | float32 ms (p10-p90) | % of one-core SGEMM | '
    'int8 ms (p10-p90) | float32 / int8 | paper Pixel 1 ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for row in record['networks']:
    times = row['latency']
    cells = [
      row['name'],
      f'{row["image_size"]}²',
      f'{row["multiply_adds"] / 1e6:.0f}M',
    ]
    for precision in PRECISIONS:
      t = times[precision]
      cells.append(
        f'{t["median_ms"]:.1f} ({t["p10_ms"]:.1f}-{t["p90_ms"]:.1f})'
      )
      if precision == 'float32':
        rate = 2 * row['multiply_adds'] / (t['median_ms'] / 1000)
        cells.append(f'{100 * rate / limit:.0f}%')
    cells.append(
      f'{times["float32"]["median_ms"] / times["int8"]["median_ms"]:.2f}'
    )
    cells.append(str(row['paper_ms']) if row['paper_ms'] else '–')
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += [
    '',
    '| ratio | paper (Pixel 1) | ours, float32 | ours, int8 |',
    '|---|---:|---:|---:|',
  ]
  for ratio in record['ratios']:
    lines.append(
      f'| {ratio["numerator"]} / {ratio["denominator"]} | '
      f'{ratio["paper"]:.2f} | {ratio["float32"]:.2f} | {ratio["int8"]:.2f} |'
    )
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out_dir', default=None)
  parser.add_argument('--cache_dir', default='/tmp/tflite_latency')
  parser.add_argument(
    '--stage', choices=('export', 'time', 'all'), default='all'
  )
  parser.add_argument('--networks', nargs='+', default=None)
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=50)
  parser.add_argument(
    '--image_size', type=int, default=0, help='tests only: a smaller input'
  )
  parser.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    kind, *rest = args.worker
    if kind == 'workdir':
      result = make_workdir(rest[0], rest[1], int(rest[2]))
    elif kind == 'limit':
      result = matmul_limit()
    else:
      result = time_tflite(rest[0], int(rest[1]), int(rest[2]))
    print(json.dumps(result))
    return 0

  from mnv2_jax.training import provenance  # noqa: PLC0415

  names = args.networks or [n[0] for n in NETWORKS]
  unknown = sorted(set(names) - {n[0] for n in NETWORKS})
  if unknown:
    parser.error(
      f'--networks: unknown {unknown}; choose from {[n[0] for n in NETWORKS]}.'
    )
  rows = []
  for name in names:
    folder = _folder(args.cache_dir, name, args.image_size)
    row = {
      'name': name,
      'paper_ms': next(n[3] for n in NETWORKS if n[0] == name),
      **_run_worker(
        ['workdir', name, os.path.join(folder, 'workdir'), str(args.image_size)]
      ),
      'latency': {},
    }
    for precision in PRECISIONS:
      path = os.path.join(folder, f'{precision}.tflite')
      if args.stage == 'time' and not os.path.exists(path):
        parser.error(f'{path} is missing: run --stage export first.')
      _export(os.path.join(folder, 'workdir'), path, precision)
      print(f'{name} {precision}: {path}', flush=True)
    rows.append(row)
  if args.stage == 'export':
    return 0
  limit = _run_worker(['limit'], single_thread=True)
  for row in rows:
    for precision in PRECISIONS:
      path = os.path.join(
        _folder(args.cache_dir, row['name'], args.image_size),
        f'{precision}.tflite',
      )
      row['latency'][precision] = _run_worker(
        ['time', path, str(args.warmup), str(args.repeats)], single_thread=True
      )
      print(
        f'{row["name"]} {precision}: '
        f'{row["latency"][precision]["median_ms"]:.1f} ms',
        flush=True,
      )
  by_name = {row['name']: row for row in rows}
  paper = {n[0]: n[3] for n in NETWORKS}
  ratios = [
    {
      'numerator': top,
      'denominator': bottom,
      'paper': paper[top] / paper[bottom],
      **{
        precision: by_name[top]['latency'][precision]['median_ms']
        / by_name[bottom]['latency'][precision]['median_ms']
        for precision in PRECISIONS
      },
    }
    for top, bottom in RATIOS
    if top in by_name and bottom in by_name
  ]
  record = {
    'command': shlex.join(
      ['python', 'benchmarks/tflite_latency.py']
      + list(argv if argv is not None else sys.argv[1:])
    ),
    'date': time.strftime('%Y-%m-%d'),
    'machine': provenance.machine(),
    'versions': provenance.versions(),
    'tensorflow': rows[0]['latency']['float32']['tensorflow'],
    'limit': limit,
    'networks': rows,
    'ratios': ratios,
  }
  text = markdown(record)
  print(text)
  if args.out_dir:
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, 'tflite_latency.json'), 'w') as f:
      json.dump(record, f, indent=2)
    with open(os.path.join(args.out_dir, 'tflite_latency.md'), 'w') as f:
      f.write(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
