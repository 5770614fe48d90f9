"""Classification (paper §6.1): cross-entropy with optional label smoothing;
top-1 / top-5 and the loss over the whole evaluation split."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mnv2_jax.models.building import build_model
from mnv2_jax.tasks import inference
from mnv2_jax.tasks import interface


def cross_entropy(
  logits: jax.Array, labels: jax.Array, num_classes: int, label_smoothing: float
) -> jax.Array:
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


class Classification:
  """MobileNetV2 classifier (paper §6.1)."""

  name = 'classification'
  headline_metric = 'top1'

  def __init__(self, config, dataset_info=None):
    del dataset_info  # classes are config.num_classes
    self.config = config
    self.num_classes = config.num_classes
    self.model = build_model(config)

  def loss(self, outputs, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    logits = outputs[0]
    loss = jnp.mean(
      cross_entropy(
        logits, batch['label'], self.num_classes, self.config.label_smoothing
      )
    )
    return loss, {
      'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    }

  def eval_step(self, variables, batch, microbatch: int = 0):
    """Sums of loss and top-1/top-5 hits over the real (unpadded) examples."""
    logits = inference.apply_in_microbatches(
      lambda images: self.model.apply(variables, images, train=False)[0],
      batch['image'],
      microbatch,
    )
    mask = batch['mask'].astype(jnp.float32)
    loss = cross_entropy(logits, batch['label'], self.num_classes, 0.0)
    top5 = jax.lax.top_k(logits, min(5, self.num_classes))[1]
    hit5 = jnp.any(top5 == batch['label'][:, None], axis=-1)
    hit1 = top5[:, 0] == batch['label']
    return {
      'loss': jnp.sum(loss * mask),
      'top1': jnp.sum(hit1 * mask),
      'top5': jnp.sum(hit5 * mask),
      'count': jnp.sum(mask),
    }

  def accumulator(self) -> 'ClassificationAccumulator':
    return ClassificationAccumulator()


class ClassificationAccumulator(interface.EvaluationSums):
  """Top-1, top-5 and loss over the split from the summed hits."""

  def result(self) -> dict[str, float]:
    sums = self.totals()
    count = float(sums['count'])
    return {
      'top1': float(sums['top1']) / count,
      'top5': float(sums['top5']) / count,
      'loss': float(sums['loss']) / count,
      'num_examples': int(count),
    }
