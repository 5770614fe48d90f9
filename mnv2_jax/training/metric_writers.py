"""Where metrics go: the console, TensorBoard and `<workdir>/metrics.jsonl`.

`metrics.jsonl` has one JSON object per line with `step`, `split` and the
metrics, so a notebook reads a run with `pandas.read_json(path, lines=True)`.
Only process 0 writes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any
from typing import Mapping

import jax
from absl import logging
from etils import epath


class _ScalarEventWriter:
  """TensorBoard scalars written without TensorFlow, for local workdirs.

  An events file is a TFRecord file of `Event` protos (the first holds the
  file version); tensorboard's RecordWriter frames and checksums each record.
  Importing TensorFlow for flax's writer costs ~9 s of CPU per process; this
  needs the `tensorboard` package only.
  """

  def __init__(self, logdir: str):
    # tensorboard is optional (the GPU images have none): imported here.
    from tensorboard.compat.proto import event_pb2  # noqa: PLC0415
    from tensorboard.compat.proto import summary_pb2  # noqa: PLC0415
    from tensorboard.summary.writer import record_writer  # noqa: PLC0415

    self._event_pb2, self._summary_pb2, self._time = (
      event_pb2,
      summary_pb2,
      time,
    )
    os.makedirs(logdir, exist_ok=True)
    name = (
      f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.'
      f'{os.getpid()}.0'
    )
    self._file = open(os.path.join(logdir, name), 'wb')
    self._records = record_writer.RecordWriter(self._file)
    self._write(
      event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2')
    )

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())

  def scalar(self, tag: str, value: float, step: int) -> None:
    summary = self._summary_pb2.Summary(
      value=[
        self._summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
      ]
    )
    self._write(
      self._event_pb2.Event(
        wall_time=self._time.time(), step=int(step), summary=summary
      )
    )

  def flush(self) -> None:
    self._records.flush()

  def close(self) -> None:
    self._records.close()


def _summary_writer(workdir: str):
  """The TensorBoard writer of `<workdir>/tensorboard`, or None."""
  logdir = os.path.join(workdir, 'tensorboard')
  try:
    if '://' not in workdir:
      return _ScalarEventWriter(logdir)
    # Remote filesystems (gs://...) need TensorFlow's file system support:
    # flax.metrics.tensorboard writes through tf.summary.
    from flax.metrics import tensorboard as flax_tensorboard  # noqa: PLC0415 (TensorFlow)

    return flax_tensorboard.SummaryWriter(logdir)
  except ImportError as e:  # e.g. an accelerator image without TF/tensorboard
    logging.warning(
      'No TensorBoard events (%s); metrics go to %s.',
      e,
      os.path.join(workdir, 'metrics.jsonl'),
    )
    return None


def _to_python(value: Any) -> Any:
  if hasattr(value, 'item'):
    return value.item()
  return value


class MetricWriter:
  """Writes each (step, split, metrics) to the console, TensorBoard and JSONL."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self._active = jax.process_index() == 0
    # epath: local paths and gs:// alike.
    self._jsonl_path = epath.Path(workdir) / 'metrics.jsonl'
    self._summary_writer = None
    if self._active:
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
      if tensorboard:
        self._summary_writer = _summary_writer(workdir)

  def drop_after(self, step: int) -> None:
    """Removes the JSONL lines of steps after `step`: a resumed run redoes
    the steps a killed one logged after its last checkpoint, so the file
    reads like an uninterrupted run's. Atomic (rewrite, then rename)."""
    if not self._active or not self._jsonl_path.exists():
      return
    text = self._jsonl_path.read_text()
    lines = _parse_lines(text)
    kept = [line for line in lines if line.get('step', 0) <= step]
    if len(kept) == len(lines) and text.endswith('\n'):
      return  # nothing to redo, no cut-short last line
    temporary = self._jsonl_path.parent / (self._jsonl_path.name + '.tmp')
    temporary.write_text(''.join(json.dumps(line) + '\n' for line in kept))
    temporary.replace(self._jsonl_path)

  def write(
    self, step: int, split: str, metrics: Mapping[str, Any]
  ) -> dict[str, Any]:
    """Writes one line and returns it as written (`line`), on every
    process (only process 0 writes)."""
    written = line(step, split, metrics)
    if not self._active:
      return written
    values = {k: v for k, v in written.items() if k not in ('step', 'split')}
    with self._jsonl_path.open('a') as f:
      f.write(json.dumps(written) + '\n')
    if self._summary_writer is not None:
      for key, value in values.items():
        if isinstance(value, (int, float)):
          self._summary_writer.scalar(f'{split}/{key}', value, step)
      self._summary_writer.flush()
    return written

  def log(self, message: str) -> None:
    if self._active:
      print(message, flush=True)

  def close(self) -> None:
    if self._summary_writer is not None:
      self._summary_writer.close()


def line(step: int, split: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
  """One line of metrics.jsonl: the step, the split and plain-Python
  values."""
  values = {key: _to_python(value) for key, value in metrics.items()}
  return {'step': int(step), 'split': split, **values}


def read_jsonl(workdir: str) -> list[dict[str, Any]]:
  """Reads back every line of `<workdir>/metrics.jsonl`."""
  return _parse_lines((epath.Path(workdir) / 'metrics.jsonl').read_text())


def _parse_lines(text: str) -> list[dict[str, Any]]:
  """The JSON lines of `text`, skipping a line a killed process cut short."""
  lines = []
  for line in text.splitlines():
    try:
      lines.append(json.loads(line))
    except ValueError:
      continue
  return lines
