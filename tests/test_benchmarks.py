"""benchmarks/speed.py's GPU mode, run on the CPU with tiny shapes: the
limits and each framework in a process of their own, rows, roofline and
targets written. One framework (mnv2_jax): a second is the same worker
mechanism and costs the suite about 19 s; the Flax reference itself is held
to mnv2_jax's values in tests/test_layers.py."""

import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_mode_of_the_speed_benchmark_runs_on_cpu(tmp_path):
  command = [
    sys.executable,
    os.path.join(REPO_ROOT, 'benchmarks', 'speed.py'),
    '--mode=gpu',
    '--frameworks=mnv2_jax',
    '--dtypes=bfloat16',
    '--resolution=32',
    '--batch=4',
    '--width_multiplier=0.35',
    '--num_classes=10',
    '--repeats=1',
    '--warmup=0',
    f'--out_dir={tmp_path}',
  ]
  output = subprocess.run(
    command, check=True, capture_output=True, text=True, cwd=REPO_ROOT
  ).stdout
  assert output.count('in a new process') == 2  # limits, mnv2_jax
  result = json.loads((tmp_path / 'speed_cpu.json').read_text())
  rows = {(r['framework'], r['kind'], r['batch']): r for r in result['rows']}
  for framework in ('mnv2_jax',):
    for kind, batch in (('inference', 1), ('inference', 4), ('training', 4)):
      row = rows[(framework, kind, batch)]
      assert row['dtype'] == 'bfloat16' and row['images_per_s'] > 0
      assert row['percent_of_roofline'] > 0
  assert result['frameworks']['mnv2_jax bfloat16']['implementation'] == 'cpu'
  traffic = result['roofline']['bfloat16']
  assert traffic['training_bytes'] == 5 * 2 * traffic['conv_output_elements']
  assert result['roofline']['bandwidth_measured'] > 0
  text = (tmp_path / 'speed_cpu.md').read_text()
  assert '## Targets' in text and 'torch.compile' in text
  assert '## The physical limit' in text
