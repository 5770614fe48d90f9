"""How a task runs a network at inference: in micro-batches on CPU.

Evaluation (every task's `eval_step`) and the benchmarks apply the network
through `apply_in_microbatches`.
"""

from __future__ import annotations

from typing import Callable

import jax

from mnv2_jax.models.building import build_model

Array = jax.Array


# Examples per micro-batch for inference on CPU (see `apply_in_microbatches`);
# measured with benchmarks/speed.py on a 2-core CPU: 2 and 4 are within noise
# of each other and 1.2-1.4x faster than a whole batch of 32.
CPU_INFERENCE_MICROBATCH = 4


def resolve_inference_microbatch(microbatch: int) -> int:
  """-1 ('auto'): `CPU_INFERENCE_MICROBATCH` on CPU, whole batches elsewhere."""
  if microbatch == -1:
    return CPU_INFERENCE_MICROBATCH if jax.default_backend() == 'cpu' else 0
  return microbatch


def apply_in_microbatches(apply_fn, images: Array, microbatch: int):
  """`apply_fn(images)`, computed `microbatch` examples at a time.

  For inference on CPU: one micro-batch's activations (4 images at 224x224:
  the largest tensor, layer_3's expansion, is 19 MB) stay in the last-level
  cache from one layer to the next, where a whole batch's stream through
  memory. The arithmetic per example is unchanged; only batch-dependent
  operations would differ, and inference has none (BatchNorm uses its running
  statistics), so the outputs equal the whole-batch ones to float rounding.

  Micro-batch i holds examples i, i + n/m, i + 2n/m, ..., so each one spans
  the whole batch axis and a batch sharded over devices stays sharded.

  Args:
    apply_fn: maps a batch [m, ...] to a pytree of arrays with leading axis m.
    images: [n, ...].
    microbatch: m; 0, m >= n or m not dividing n apply to the whole batch.
  """
  n = images.shape[0]
  if microbatch <= 0 or microbatch >= n or n % microbatch:
    return apply_fn(images)
  steps = n // microbatch
  stacked = images.reshape((microbatch, steps) + images.shape[1:]).swapaxes(
    0, 1
  )
  outputs = jax.lax.map(apply_fn, stacked)  # leaves [steps, microbatch, ...]
  return jax.tree.map(
    lambda y: y.swapaxes(0, 1).reshape((n,) + y.shape[2:]), outputs
  )


def logits_function(
  config, variables, *, implementation: str = 'auto'
) -> Callable[[Array], Array]:
  """images -> the raw outputs of the network a config builds, with
  `variables` closed over, in the given formulation of the layers ('xla' for
  export to TensorFlow: XLA's convolution ops). A classifier's logits [N, C]
  or a segmenter's [N, H, W, C]; a detector's two heads as a pair, box
  encodings [N, anchors, 4] and class logits [N, anchors, C + 1], so that an
  export holds both (paper Table 6 counts both heads)."""
  model = build_model(config).clone(implementation=implementation)
  detector = config.task == 'detection'

  def apply(images):
    outputs = model.apply(variables, images, train=False)
    return tuple(outputs[:2]) if detector else outputs[0]

  return apply
