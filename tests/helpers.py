"""Shared test helpers: tolerances derived from the float type and the
computation, never from the result on one CPU.

Two formulations of the same function (a fused and an unfused
normalisation, a batched and a looped matrix product) round differently,
and how they round changes with the CPU: XLA:CPU generates code for the
vector instructions at hand (AVX-512, AVX2, FMA) and the matrix libraries
pick their kernels at run time. A tolerance read off one machine's result
(a 1.1e-6 relative difference passing under 1e-6) fails on the next. The
bounds below follow the standard error analysis of floating-point sums
(Higham, "Accuracy and Stability of Numerical Algorithms", §3.1 and
Higham & Mary 2019 for the probabilistic sqrt(n) form): a dot product of n
terms has a relative error of order sqrt(n) * u, u the unit roundoff, and in
a network of `depth` such layers, whose normalisation keeps each one well
conditioned (BatchNorm), the layers' independent rounding errors add in
quadrature: sqrt(depth) of them.
"""

from __future__ import annotations

import math

import jax
import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 2 u: 1.19e-7


def sum_rtol(terms: int, dtype=np.float32) -> float:
  """Relative tolerance between two orderings of one sum of `terms` terms:
  each is within sqrt(terms) * eps of the exact sum (probabilistic bound,
  with a factor 2 of headroom), so they are within twice that."""
  return 2 * 2 * math.sqrt(max(terms, 1)) * float(np.finfo(dtype).eps)


def network_rtol(depth: int, fan_in: int, dtype=np.float32) -> float:
  """Relative tolerance between two formulations of a network of `depth`
  layers whose largest sum has `fan_in` terms (a convolution's
  kh * kw * input channels): the layers' independent errors add in
  quadrature. For the tiny digits classifier (53 kernels, fan-in 1,280)
  it is 1.2e-4; two roundings of its loss part by about 1e-6."""
  return math.sqrt(depth) * sum_rtol(fan_in, dtype)


def network_shape(params) -> tuple[int, int]:
  """(depth, largest fan-in) of a network's parameters: the number of
  convolution and dense kernels, and the largest product of a kernel's
  input dimensions."""
  kernels = [
    leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    if getattr(path[-1], 'key', None) == 'kernel'
  ]
  fan_in = max(int(np.prod(np.shape(k)[:-1])) for k in kernels)
  return len(kernels), fan_in


def elementwise_atol(operations: int, magnitude: float, dtype=np.float32):
  """Absolute tolerance for `operations` elementwise float operations on
  values of up to `magnitude`: one rounding each, twice over (two
  formulations). Needed beside a relative tolerance wherever a result can
  cancel to near zero (x - mean, logsumexp(z) - z)."""
  return 2 * operations * float(np.finfo(dtype).eps) * magnitude
