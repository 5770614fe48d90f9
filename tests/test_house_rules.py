"""The house rules that keep the layers' interfaces narrow (pyproject.toml's
import contracts hold the rest, through lint-imports): no module reaches
into another's private names, no script edits sys.path (the package is
installed; tests/ is on the path through pytest), no function of the
package is longer than 80 lines, and every module has its row in
docs/architecture.md."""

import ast
import os
import pathlib

import pytest

import mnv2_jax

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Every Python file of the repository that is ours.
FOLDERS = ('mnv2_jax', 'tests', 'benchmarks', 'experiments', 'configs')
LONGEST_FUNCTION = 80  # lines, docstring included


def _python_files(*folders: str) -> list[pathlib.Path]:
  files = []
  for folder in folders:
    files += sorted((REPO_ROOT / folder).rglob('*.py'))
  assert files, folders
  return files


def _relative(path: pathlib.Path) -> str:
  return os.path.relpath(path, REPO_ROOT)


def private_names_of_other_modules(tree: ast.Module) -> list[str]:
  """`from m import _x`, and `m._x` where `m` is a name an import bound."""
  imported, found = set(), []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported |= {(a.asname or a.name).split('.')[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      for alias in node.names:
        if _is_private(alias.name):
          found.append(f'{node.lineno}: from {node.module} import {alias.name}')
        imported.add(alias.asname or alias.name)
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Attribute)
      and isinstance(node.value, ast.Name)
      and node.value.id in imported
      and _is_private(node.attr)
    ):
      found.append(f'{node.lineno}: {node.value.id}.{node.attr}')
  return found


def _is_private(name: str) -> bool:
  return name.startswith('_') and not name.startswith('__')


def sys_path_edits(tree: ast.Module) -> list[str]:
  """Calls of sys.path.insert/append/extend and assignments to sys.path."""
  found = []
  for node in ast.walk(tree):
    target = None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
      target = node.func.value
    elif isinstance(node, (ast.Assign, ast.AugAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      target = next(
        (t.value if isinstance(t, ast.Subscript) else t for t in targets), None
      )
    if target is not None and ast.unparse(target) == 'sys.path':
      found.append(f'{node.lineno}: {ast.unparse(node)[:60]}')
  return found


def test_no_module_uses_another_modules_private_names():
  found = {
    _relative(path): hits
    for path in _python_files(*FOLDERS)
    if (hits := private_names_of_other_modules(ast.parse(path.read_text())))
  }
  assert not found, found


def test_only_conftest_puts_the_repository_on_sys_path():
  found = {
    _relative(path): hits
    for path in _python_files(*FOLDERS)
    if (hits := sys_path_edits(ast.parse(path.read_text())))
  }
  assert list(found) == ['tests/conftest.py'], found


def test_no_function_of_the_package_is_longer_than_80_lines():
  long = []
  for path in _python_files('mnv2_jax'):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > LONGEST_FUNCTION:
          long.append(f'{_relative(path)}:{node.lineno} {node.name} {lines}')
  assert not long, long


def test_every_module_has_its_row_in_docs_architecture():
  """docs/architecture.md's module table is where a newcomer finds what each
  module holds: a new module gets its row."""
  text = (REPO_ROOT / 'docs' / 'architecture.md').read_text()
  missing = [
    name
    for path in _python_files('mnv2_jax')
    if path.name != '__init__.py'
    and f'`{(name := path.relative_to(REPO_ROOT / "mnv2_jax").as_posix())}`'
    not in text
  ]
  assert not missing, missing


def test_the_tool_list_is_the_modules_run_as_tools():
  """mnv2_jax.COMMAND_LINE_TOOLS, which the command-line tests and
  benchmarks/cli_help.py go through, names every top-level module with a
  __main__ block."""
  runnable = sorted(
    path.stem
    for path in (REPO_ROOT / 'mnv2_jax').glob('*.py')
    if "if __name__ == '__main__':" in path.read_text()
  )
  assert sorted(mnv2_jax.COMMAND_LINE_TOOLS) == runnable


@pytest.mark.parametrize(
  'source,rule',
  [
    ('from mnv2_jax.training import trainer\ntrainer._train()', 'private'),
    ('from mnv2_jax.data.image_classification import _crop', 'private'),
    ('import sys\nsys.path.insert(0, "x")', 'path'),
    ('import sys\nsys.path[:0] = ["x"]', 'path'),
  ],
)
def test_the_checks_see_what_they_forbid(source, rule):
  tree = ast.parse(source)
  check = (
    private_names_of_other_modules if rule == 'private' else sys_path_edits
  )
  assert check(tree)
  assert not (
    sys_path_edits if rule == 'private' else private_names_of_other_modules
  )(tree)
