"""The interface between the shared trainer and a task.

The trainer (training/trainer.py) knows a task only through `Task` below:
the network, the loss of its training outputs, the jit-compiled evaluation
step and a host-side `Accumulator` that turns the evaluation outputs of a
whole split into metrics. Classification, detection and segmentation
(tasks/classification.py, detection.py, segmentation.py) implement it; a new
task is a class with these members, registered in `tasks.TASK_CLASSES`.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol
from typing import runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp


@runtime_checkable
class Accumulator(Protocol):
  """Adds up one split's evaluation outputs, batch by batch."""

  def add(self, outputs: Any, host_batch: dict) -> None:
    """Takes one evaluation step's outputs and the host batch they came
    from (its `mask` marks the padded examples)."""

  def result(self) -> dict[str, float]:
    """The metrics over everything added so far."""


@runtime_checkable
class Task(Protocol):
  """What differs between the tasks; see the module docstring."""

  name: str  # config.task
  headline_metric: str  # the metric sweeps and summaries report
  model: nn.Module

  def loss(self, outputs: Any, batch: dict) -> tuple[jax.Array, dict]:
    """The training loss of the model's outputs, and metrics to log."""

  def eval_step(self, variables: dict, batch: dict, microbatch: int = 0) -> Any:
    """One evaluation batch's outputs (pure, jit-compiled by the caller)."""

  def accumulator(self) -> Accumulator:
    """A fresh accumulator for one pass over an evaluation split."""


class EvaluationSums:
  """An `Accumulator` base that adds up the (device) outputs of every
  evaluation step; a task's accumulator turns the totals into metrics
  (`result`), so metrics are exact over the whole split, not means of
  per-batch values."""

  def __init__(self):
    self.sums = None

  def add(self, outputs, host_batch) -> None:
    del host_batch
    self.sums = (
      outputs
      if self.sums is None
      else jax.tree.map(jnp.add, self.sums, outputs)
    )

  def totals(self):
    return jax.device_get(self.sums)
