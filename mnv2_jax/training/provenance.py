"""Where a figure came from: the machine, the date and the package versions.

Every committed result file (`experiments/results/`) carries this beside its
figures and the command that wrote them, so that a number in the README can
be traced to a run and re-run.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
from typing import Any

import jax
from etils import epath

PACKAGES = (
  'mnv2_jax',
  'jax',
  'jaxlib',
  'flax',
  'optax',
  'orbax-checkpoint',
  'numpy',
  'tensorflow-cpu',
  'tensorflow',
  'scikit-learn',
  'torch',
)


def versions() -> dict[str, str]:
  """The installed versions of the packages a figure depends on."""
  found = {}
  for package in PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return found


def cpu_name() -> str:
  """The CPU's model name (Linux), else what `platform` knows."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# The vector instruction sets that change float rounding from one x86 CPU to
# the next (XLA:CPU's code generation and the matrix libraries' kernels).
VECTOR_FEATURES = ('avx', 'avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile')


def cpu_features() -> list[str]:
  """Which of VECTOR_FEATURES the CPU has (Linux; [] where unknown)."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          flags = set(line.split(':', 1)[1].split())
          return [name for name in VECTOR_FEATURES if name in flags]
  except OSError:
    pass
  return []


def machine() -> dict[str, Any]:
  """The machine, the CPU's vector features and the XLA flags in force:
  together they decide the rounding of a run's sums."""
  return {
    'platform': platform.platform(),
    'cpu': cpu_name(),
    'cpu_features': cpu_features(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'cpu_cores': os.cpu_count(),
    'devices': [str(device) for device in jax.devices()],
    'hosts': jax.process_count(),
  }


def record(command: str | None, **figures: Any) -> dict[str, Any]:
  """`figures` with the command, the machine, the date and the versions."""
  return {
    **figures,
    'command': command,
    'machine': machine(),
    'date': datetime.datetime.now().isoformat(timespec='seconds'),
    'versions': versions(),
  }


def write(path: str, contents: dict[str, Any]) -> None:
  """Writes `contents` as indented JSON, atomically (a temporary file
  renamed), creating the directory."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / f'{path.name}.tmp'
  temporary.write_text(json.dumps(contents, indent=2) + '\n')
  temporary.replace(path)
