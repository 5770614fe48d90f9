"""Every command-line tool answers a bad argument the same way: argparse's
usage, one `python -m mnv2_jax.<tool>: error:` line, exit status 2, and no
traceback."""

import importlib

import pytest

TOOLS = (
  'main',
  'stats',
  'sweep',
  'predict',
  'export',
  'convert',
  'launch',
  'voc',
  'prepare_imagenet',
)


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
