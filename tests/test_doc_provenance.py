"""Every figure in README.md, docs/ and experiments/README.md has a source.

A figure is a number a run produced: a percentage, a time, a rate, a size, a
ratio, a p-value, a metric written to three or more significant digits, or a
count with a unit. Each block of text that holds one (a paragraph, a list, a
table) carries a comment on the line before it saying where its figures come
from, and this test checks what it can:

  <!-- figures: path [path ...] -->
      Committed result files (JSON, CSV, Markdown or text; a folder stands
      for every such file in it). Every figure of
      the block must be one of their values, at the precision written and
      under a change of unit (a fraction as a percentage, bytes as MiB,
      seconds as minutes, ...). `paper` as a path stands for docs/paper.md,
      the figures quoted from the paper and the releases.
  <!-- tested: tests/<file>.py::<test> -->
      A named test holds the block to its files (the test must exist).
  <!-- history: YYYY-MM-DD, <what code> -->
      Measured once, on the code named, and not re-run since: kept for the
      record and said so in the text.
  <!-- paper -->
      The paper's own figures, or another paper's or release's (cited beside
      them), not measured here.

A comment that starts with `section` (`<!-- section history: ... -->`)
covers every block up to the next heading. A block without a source, or a
figure its files do not hold, fails with the file, the line and the figure.
"""

from __future__ import annotations

import csv
import json
import os
import re

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = (
  'README.md',
  'experiments/README.md',
  *sorted(
    os.path.join('docs', name)
    for name in os.listdir(os.path.join(REPO_ROOT, 'docs'))
    if name.endswith('.md')
  ),
)
PAPER_NOTES = 'docs/paper.md'

# A number: 1,234.5 or 12.5 or 1.4e-6, with a typographic minus.
_NUMBER = r'[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-−]?\d+)?'
_UNITS = (
  r'%|×|ms\b|s\b|min\b|h\b|img/s|images/s|MiB|GiB|KiB|MB\b|GB\b|KB\b|kB\b|'
  r'GB/s|TB/s|TFLOP/s|GFLOP\b|points?\b|K\b|M\b|B\b|ns\b|µs\b'
)
# "1 min 5 s" is one figure.
_MINUTES_SECONDS = re.compile(r'(\d+) min (\d+) s\b')
_FIGURE = re.compile(
  rf'(?P<before>p = |± |p=)?(?<![\w.\-/])(?P<number>{_NUMBER})'
  rf'(?![\w.]*\.\d)(?P<unit>\s?(?:{_UNITS}))?'
)
_ANNOTATION = re.compile(
  r'<!--\s*(section\s+)?(figures|tested|history|paper)'
  r'\s*:?\s*(.*?)\s*-->'
)
# What is not a figure: code, link targets, dates, versions, model names
# (1.0-224), section and table numbers.
_NOT_PROSE = [
  re.compile(r'`[^`]*`'),
  re.compile(r'\]\([^)]*\)'),
  re.compile(r'<!--.*?-->'),
  re.compile(r'https?://\S+'),
  re.compile(r'\b\d{4}-\d{2}-\d{2}(T[\d:]+)?\b'),
  re.compile(r'\b\d+\.\d+\.\d+(\.\d+)?\b'),
  re.compile(r'\b\d\.\d{1,2}-\d{2,3}\b'),
  re.compile(r'\b\d+(?:×\d+)+\b'),  # sizes and kernels: 48×48, 3×3
  re.compile(  # versions: TensorFlow 2.21, Python 3.11–3.13
    r'\b(Python|TensorFlow|Keras|jax|jaxlib|flax|optax|torch|PyTorch|CUDA|'
    r'numpy|orbax-checkpoint)\s+\d+(\.\d+)*([–-]\d+(\.\d+)*)?'
  ),
  re.compile(
    r'(Table|Tables|Figure|Figures|§|issue|issues|sessions?|arXiv:)'
    r'\s*[\d.–, and]+[a-z]?'
  ),
]


def _parse(number: str) -> float:
  return float(number.replace(',', '').replace('−', '-'))


def _decimals(number: str) -> int:
  mantissa = number.split('e')[0]
  return len(mantissa.split('.')[1]) if '.' in mantissa else 0


def figures(line: str) -> list[str]:
  """The figures of one line of prose (see the module docstring)."""
  for pattern in _NOT_PROSE:
    line = pattern.sub(' ', line)
  found = [m.group(0) for m in _MINUTES_SECONDS.finditer(line)]
  line = _MINUTES_SECONDS.sub(' ', line)
  for match in _FIGURE.finditer(line):
    number, unit = match['number'], (match['unit'] or '').strip()
    digits = len(re.sub(r'\D', '', number.split('e')[0]).lstrip('0'))
    if (
      match['before']
      or unit
      or 'e' in number
      or (_decimals(number) >= 2 and digits >= 3)
      or ',' in number
    ):
      found.append(match.group(0).strip())
  return found


def _values(path: str) -> list[float]:
  """Every number in a result file."""
  full = os.path.join(REPO_ROOT, path)
  with open(full) as f:
    text = f.read()
  values: list[float] = []
  if path.endswith('.json'):

    def walk(node):
      if isinstance(node, bool):
        return
      if isinstance(node, (int, float)):
        values.append(float(node))
      elif isinstance(node, dict):
        for value in node.values():
          walk(value)
      elif isinstance(node, list):
        for value in node:
          walk(value)
      elif isinstance(node, str):
        values.extend(_numbers_in_text(node))

    walk(json.loads(text))
  elif path.endswith('.csv'):
    for row in csv.reader(text.splitlines()):
      for cell in row:
        values.extend(_numbers_in_text(cell))
  else:
    values.extend(_numbers_in_text(text))
  return values


def _numbers_in_text(text: str) -> list[float]:
  text = re.sub(r'(?<=\d)_(?=\d{3})', '', text)  # Python's 2_113_557
  values = [
    _parse(m.group(0))
    for m in re.finditer(rf'(?<![\w.]){_NUMBER}', text)
    if not m.group(0).endswith(',')
  ]
  values += [
    60 * int(m[1]) + int(m[2]) for m in _MINUTES_SECONDS.finditer(text)
  ]
  return values


# A value in a file, written in the text in another unit.
_SCALES = (
  1,
  100,
  0.01,
  1e-3,
  1e3,
  1e-6,
  1e-9,
  1 / 60,
  1 / 3600,
  1 / 1024,
  1 / 1024**2,
  1 / 1024**3,
  1e-12,
  1e6,
  1e9,
)


def matches(figure: str, values: list[float]) -> bool:
  """Whether a figure as written is one of `values` under a change of unit,
  rounded as written."""
  minutes = _MINUTES_SECONDS.fullmatch(figure)
  if minutes:
    seconds = 60 * int(minutes[1]) + int(minutes[2])
    return any(abs(v - seconds) <= 0.5 for v in values)
  number = re.search(_NUMBER, figure).group(0)
  written = _parse(number)
  if 'e' in number:
    tolerance = (
      0.5
      * 10.0 ** (-_decimals(number))
      * 10.0 ** int(number.split('e')[1].replace('−', '-'))
    )
  else:
    tolerance = 0.5 * 10.0 ** (-_decimals(number))
  tolerance *= 1.000001
  for value in values:
    for scale in _SCALES:
      scaled = value * scale
      if abs(abs(scaled) - abs(written)) <= tolerance:
        return True
  return False


def blocks(path: str):
  """(first line number, lines, annotation) of every block of prose in a
  document: code fences skipped, blocks split at blank lines and headings."""
  with open(os.path.join(REPO_ROOT, path)) as f:
    lines = f.read().splitlines()
  section_annotation = None
  pending = None
  block, start, in_code = [], 0, False

  def flush():
    nonlocal block
    if block:
      yield start, block, pending or section_annotation
    block = []

  for number, line in enumerate(lines, 1):
    if line.startswith('```'):
      in_code = not in_code
      yield from flush()
      pending = None
      continue
    if in_code:
      continue
    annotation = _ANNOTATION.fullmatch(line.strip())
    if annotation:
      yield from flush()
      if annotation[1]:
        section_annotation = (annotation[2], annotation[3], number)
      else:
        pending = (annotation[2], annotation[3], number)
      continue
    if line.startswith('#'):
      yield from flush()
      pending, section_annotation = None, None
      continue
    if not line.strip():
      yield from flush()
      pending = None
      continue
    if not block:
      start = number
    block.append(line)
  yield from flush()


def _check_block(path, start, lines, annotation) -> list[str]:
  found = [
    (start + i, f) for i, line in enumerate(lines) for f in figures(line)
  ]
  if not found:
    return []
  if annotation is None:
    return [
      f'{path}:{start}: figures {[f for _, f in found][:6]} without a source '
      '(a <!-- figures/tested/history/paper --> comment on the line before)'
    ]
  kind, argument, where = annotation
  if kind == 'history':
    ok = re.match(r'\d{4}-\d{2}-\d{2}, \S', argument)
    return [] if ok else [f'{path}:{where}: history needs "YYYY-MM-DD, code"']
  if kind == 'paper':
    return []
  if kind == 'tested':
    test_file, _, test_name = argument.partition('::')
    with open(os.path.join(REPO_ROOT, test_file)) as f:
      if f'def {test_name}(' not in f.read():
        return [f'{path}:{where}: no test {argument}']
    return []
  values: list[float] = []
  for source in argument.split():
    source = PAPER_NOTES if source == 'paper' else source
    if os.path.isdir(os.path.join(REPO_ROOT, source)):  # every file in it
      for name in sorted(os.listdir(os.path.join(REPO_ROOT, source))):
        if name.endswith(('.json', '.jsonl', '.csv', '.md', '.txt')):
          values += _values(os.path.join(source, name))
    else:
      values += _values(source)
  return [
    f'{path}:{line}: {figure!r} is in none of {argument}'
    for line, figure in found
    if not matches(figure, values)
  ]


@pytest.mark.parametrize('path', DOCUMENTS)
def test_every_figure_has_a_source(path):
  problems = []
  for start, lines, annotation in blocks(path):
    problems += _check_block(path, start, lines, annotation)
  assert not problems, '\n'.join(problems)


def test_the_checker_finds_figures_and_rejects_a_wrong_one():
  assert figures('98.06% test top-1 in 1 min 40 s, AP50 0.859, p = 0.094') == [
    '1 min 40 s',
    '98.06%',
    '0.859',
    'p = 0.094',
  ]
  assert figures('Table 2, §5.1, jax 0.10.2, `lr 0.045`, 2026-11-27') == []
  assert figures('at 48×48 with 3×3 kernels, 1.5× faster') == ['1.5×']
  assert figures('Python 3.11–3.13 and TensorFlow 2.21') == []
  assert matches('98.06%', [0.98055])
  assert matches('4.59 MiB', [4.59 * 1024**2])
  assert matches('1 min 40 s', [100.3])
  assert not matches('98.07%', [0.98055])
  assert not matches('0.860', [0.859])
