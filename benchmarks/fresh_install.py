r"""The README's quickstart on a fresh clone: install time and the first run.

Clones the repository's committed HEAD into a temporary directory, makes a
new virtual environment, and times the README's first command in its two
halves: `pip install -e ".[test]"` and the digits quickstart, each from the
shell. pip takes packages from its cache where it has them (a machine that
has never installed them downloads them too), and the quickstart uses a
compilation cache of its own, empty at the start:

  python benchmarks/fresh_install.py \
      --output benchmarks/results/fresh_install.json

The result file holds both times, the quickstart's metrics and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from mnv2_jax.training import provenance

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def _timed(command: list[str], **kwargs) -> float:
  started = time.time()
  subprocess.run(command, check=True, **kwargs)
  return time.time() - started


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--output', default='benchmarks/results/fresh_install.json'
  )
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as scratch:
    clone = pathlib.Path(scratch) / 'mnv2_jax'
    subprocess.run(
      ['git', 'clone', '--quiet', str(REPOSITORY), str(clone)], check=True
    )
    head = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'],
      cwd=clone,
      check=True,
      capture_output=True,
      text=True,
    ).stdout.strip()
    venv = pathlib.Path(scratch) / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    python = str(venv / 'bin' / 'python3')
    environment = dict(os.environ)
    environment['MNV2_JAX_COMPILATION_CACHE'] = str(
      pathlib.Path(scratch) / 'cache'
    )
    environment.pop('XLA_FLAGS', None)
    install_seconds = _timed(
      [python, '-m', 'pip', 'install', '--quiet', '-e', '.[test]'],
      cwd=clone,
      env=environment,
    )
    workdir = pathlib.Path(scratch) / 'quickstart'
    result = pathlib.Path(scratch) / 'result.json'
    quickstart_seconds = _timed(
      [
        python,
        '-m',
        'mnv2_jax.main',
        '--config',
        'configs/quickstart.py',
        '--workdir',
        str(workdir),
        '--result_file',
        str(result),
      ],
      cwd=clone,
      env=environment,
    )
    run = json.loads(result.read_text())
  record = provenance.record(
    f'python benchmarks/fresh_install.py --output {args.output}',
    commit=head,
    install_seconds=round(install_seconds, 1),
    quickstart_seconds=round(quickstart_seconds, 1),
    quickstart_final=run['final'],
  )
  provenance.write(str(REPOSITORY / args.output), record)
  print(
    f'install {install_seconds:.0f} s, quickstart {quickstart_seconds:.0f} s, '
    f'test top-1 {run["final"]["test"]["top1"]:.4f} -> {args.output}'
  )


if __name__ == '__main__':
  main()
