"""How far apart two runs' final variables are: per array, the relative L2
difference, and how many arrays are bitwise equal.

  python benchmarks/compare_checkpoints.py /tmp/qs_2x4 /tmp/qs_1x8 \
      [--output experiments/results/multihost/checkpoint_differences.json]

Each workdir's latest checkpoint is read into host arrays
(`checkpointing.read_variables`, whatever devices or processes wrote it). The
relative difference of an array is |a - b| / |a| (L2), over the arrays whose
norm is above 1e-4 (the projections' BatchNorm biases stay near zero: their
gradient is exactly zero, a shift the next BatchNorm removes). With
--output, the comparison is added to that JSON file under "a vs b".
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import jax
import numpy as np

from mnv2_jax.training import checkpointing

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

SMALLEST_NORM = 1e-4


def compare(workdir_a: str, workdir_b: str) -> dict:
  step_a, variables_a = checkpointing.read_variables(workdir_a)
  step_b, variables_b = checkpointing.read_variables(workdir_b)
  arrays_b = {
    jax.tree_util.keystr(path): leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables_b)
  }
  differences, bitwise_equal, arrays = [], 0, 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables_a):
    name = jax.tree_util.keystr(path)
    if name not in arrays_b:
      raise ValueError(f'{workdir_b} has no {name}: not the same model.')
    a = np.asarray(leaf, np.float64)
    b = np.asarray(arrays_b[name], np.float64)
    arrays += 1
    bitwise_equal += int(np.array_equal(a, b))
    if np.linalg.norm(a) > SMALLEST_NORM:
      differences.append(np.linalg.norm(a - b) / np.linalg.norm(a))
  return {
    'steps': [int(step_a), int(step_b)],
    'arrays': arrays,
    'bitwise_equal': bitwise_equal,
    'relative_l2_median': float(np.median(differences)),
    'relative_l2_max': float(np.max(differences)),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdir_a')
  parser.add_argument('workdir_b')
  parser.add_argument('--output', help='a JSON file to add the result to')
  args = parser.parse_args(argv)
  result = compare(args.workdir_a, args.workdir_b)
  print(json.dumps(result, indent=2))
  if args.output:
    results = {}
    if os.path.exists(args.output):
      with open(args.output) as f:
        results = json.load(f)
    results[f'{args.workdir_a} vs {args.workdir_b}'] = {
      'command': 'python benchmarks/compare_checkpoints.py '
      f'{args.workdir_a} {args.workdir_b} --output {args.output}',
      **result,
    }
    with open(args.output, 'w') as f:
      json.dump(results, f, indent=2)
      f.write('\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
