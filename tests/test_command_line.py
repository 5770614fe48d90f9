"""Every command-line tool answers a bad argument the same way: argparse's
usage, one `python -m mnv2_jax.<tool>: error:` line, exit status 2, and no
traceback."""

import importlib
import subprocess
import sys

import pytest

import mnv2_jax

TOOLS = mnv2_jax.COMMAND_LINE_TOOLS


@pytest.mark.parametrize('tool', TOOLS)
def test_a_bad_argument_is_one_error_line_and_exit_2(tool, capsys):
  module = importlib.import_module(f'mnv2_jax.{tool}')
  with pytest.raises(SystemExit) as exited:
    module.main(['--no_such_flag=1'])
  assert exited.value.code == 2
  error = capsys.readouterr().err
  assert 'Traceback' not in error
  lines = error.strip().splitlines()
  assert lines[0].startswith(f'usage: python -m mnv2_jax.{tool}'), lines
  assert lines[-1].startswith(f'python -m mnv2_jax.{tool}: error: '), lines
  assert sum('error:' in line for line in lines) == 1, lines


# What a tool's --help may load: argparse, absl's logging, the config schema
# and the lists of allowed values, not the layers that import jax, flax or
# TensorFlow (benchmarks/cli_help.py times it: under 2 s on 2 cores).
_HELP_PROBE = """
import runpy, sys
sys.argv = ['{tool}', '--help']
try:
  runpy.run_module('mnv2_jax.{tool}', run_name='__main__')
except SystemExit as exited:
  assert exited.code == 0, exited.code
heavy = sorted(m for m in ('jax', 'flax', 'tensorflow', 'torch') if m in sys.modules)
print('HEAVY', ','.join(heavy))
"""


@pytest.mark.parametrize('tool', TOOLS)
def test_help_answers_before_the_heavy_imports(tool):
  run = subprocess.run(
    [sys.executable, '-c', _HELP_PROBE.format(tool=tool)],
    capture_output=True,
    text=True,
    check=False,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  assert f'usage: python -m mnv2_jax.{tool}' in run.stdout
  assert run.stdout.strip().splitlines()[-1] == 'HEAVY', run.stdout[-500:]
