"""Parameter initializers that Flax can call and the host can sample.

Every parameter of the networks is created with an `Initializer`: a
dataclass that is a Flax initializer (`init(key, shape, dtype)`, used by
`model.init`) and can also draw the same distribution with NumPy on the host
(`sample`). `host_variables` initialises a whole network on the host that way:

* it traces `model.init` abstractly (`jax.eval_shape`, nothing compiled) and
  records which `Initializer` made each variable;
* it draws every array with NumPy, from a generator seeded by the run's seed
  and the variable's path, so a variable's value depends on nothing else
  (not on the order of layers, the backend, the CPU model or XLA's version).

Compiling `model.init` costs more than training needs: XLA builds one random
number kernel per parameter (MobileNetV2 1.0: 7 s on 2 CPU cores, 24.6 s on an
H200, where the training step's compilation follows). Host initialisation
takes ~0.1 s and compiles nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import math
from typing import Any
from typing import Iterator
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

DISTRIBUTIONS = ('zeros', 'ones', 'truncated_normal')
# Standard deviation of a standard normal truncated to [-2, 2]; dividing by
# it gives the truncated draw the variance asked for (as Flax's and
# TensorFlow's variance-scaling initializers do).
_TRUNCATED_STD = 0.87962566103423978
_TRUNCATION = 2.0

# While `host_variables` traces model.init: the list of (value, initializer)
# of every variable created so far.
_RECORDS: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar(
  'mnv2_jax_initializer_records', default=None
)


def fan_in(shape: tuple[int, ...]) -> int:
  """Inputs per output of a kernel in Flax's layouts: HWIO (conv, depthwise
  [k, k, 1, C]) and [in, out] (dense): all axes but the last."""
  return max(1, math.prod(shape[:-1]))


@dataclasses.dataclass(frozen=True)
class Initializer:
  """An initial distribution: constant zeros or ones, or a truncated normal
  (±2 standard deviations) with variance `scale / fan_in` (variance scaling,
  He et al. 2015 with scale 2, LeCun with scale 1)."""

  distribution: str
  scale: float = 1.0

  def __post_init__(self):
    if self.distribution not in DISTRIBUTIONS:
      raise ValueError(
        f'distribution must be one of {DISTRIBUTIONS}, got '
        f'{self.distribution!r}.'
      )

  def stddev(self, shape: tuple[int, ...]) -> float:
    return math.sqrt(self.scale / fan_in(shape)) / _TRUNCATED_STD

  def __call__(
    self, key: Optional[jax.Array], shape, dtype=jnp.float32
  ) -> jax.Array:
    """The Flax initializer (`key` may be None for constants)."""
    shape = tuple(shape)
    if self.distribution == 'zeros':
      value = jnp.zeros(shape, dtype)
    elif self.distribution == 'ones':
      value = jnp.ones(shape, dtype)
    else:
      value = jax.random.truncated_normal(
        key, -_TRUNCATION, _TRUNCATION, shape, dtype
      ) * jnp.asarray(self.stddev(shape), dtype)
    records = _RECORDS.get()
    if records is not None:
      records.append((value, self))
    return value

  def sample(self, rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """The same distribution drawn with NumPy."""
    shape = tuple(shape)
    if self.distribution == 'zeros':
      return np.zeros(shape, dtype)
    if self.distribution == 'ones':
      return np.ones(shape, dtype)
    values = rng.standard_normal(shape)
    outside = np.abs(values) > _TRUNCATION
    while outside.any():  # redraw until every value lies within ±2
      values[outside] = rng.standard_normal(int(outside.sum()))
      outside = np.abs(values) > _TRUNCATION
    return (values * self.stddev(shape)).astype(dtype)


ZEROS = Initializer('zeros')
ONES = Initializer('ones')
# Convolutions, which ReLU6 follows: He et al. (2015), variance 2 / fan_in.
HE_NORMAL = Initializer('truncated_normal', scale=2.0)
# Depthwise kernels, classifiers and predictors: variance 1 / fan_in (Flax's
# default for nn.Conv and nn.Dense).
DEPTHWISE = Initializer('truncated_normal', scale=1.0)
LECUN_NORMAL = Initializer('truncated_normal', scale=1.0)


@contextlib.contextmanager
def _recording() -> Iterator[list]:
  records = []
  token = _RECORDS.set(records)
  try:
    yield records
  finally:
    _RECORDS.reset(token)


def variable_seed(seed: int, path: str) -> np.random.Generator:
  """The generator of one variable: the run's seed and the variable's path
  ('params/layer_3/expand/conv/kernel'), all of the path's SHA-256."""
  digest = hashlib.sha256(path.encode()).digest()
  return np.random.default_rng(
    [seed, *np.frombuffer(digest, np.uint32).tolist()]
  )


def _path_name(path) -> str:
  return '/'.join(str(getattr(entry, 'key', entry)) for entry in path)


@dataclasses.dataclass(frozen=True)
class InitPlan:
  """What `model.init` makes, without computing it: each variable's shape and
  dtype (`abstract`, ShapeDtypeStructs in `model.init`'s structure) and the
  `Initializer` that makes it, by path ('params/layer_3/expand/conv/kernel')."""

  abstract: Any
  initializers: dict[str, Initializer]


def plan(model, input_shape: tuple[int, ...], **init_kwargs) -> InitPlan:
  """Traces `model.init` abstractly (nothing compiled or computed), once per
  (model, input shape, arguments) in a process: Flax modules compare and
  hash by their attributes, and a plan holds only shapes and initializers.

  Args:
    model: a Flax module whose variables are all made by `Initializer`s.
    input_shape: the shape of the input `model.init` is traced with.
    **init_kwargs: passed to `model.init` (the networks: `train=False`).

  Raises:
    TypeError: a variable was made by another initializer (its path named).
  """
  arguments = (model, tuple(input_shape), tuple(sorted(init_kwargs.items())))
  try:
    hash(arguments)
  except TypeError:  # a module built by hand with a list attribute
    return _plan.__wrapped__(*arguments)
  return _plan(*arguments)


@functools.lru_cache(maxsize=64)
def _plan(model, input_shape: tuple[int, ...], init_kwargs) -> InitPlan:
  init_kwargs = dict(init_kwargs)
  initializer_of = {}

  def init_and_record():
    with _recording() as records:
      variables = model.init(
        jax.random.key(0), jnp.zeros(input_shape, jnp.float32), **init_kwargs
      )
    by_identity = {id(value): initializer for value, initializer in records}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
      initializer_of[_path_name(path)] = by_identity.get(id(leaf))
    return variables

  abstract = jax.eval_shape(init_and_record)
  missing = [path for path, init in initializer_of.items() if init is None]
  if missing:
    raise TypeError(
      f'{type(model).__name__}: {len(missing)} variables were not made by '
      f'an mnv2_jax.initializers.Initializer, so they cannot be drawn on '
      f'the host: {missing[:5]}. Give their modules an Initializer '
      '(kernel_init=initializers.LECUN_NORMAL, bias_init=initializers.ZEROS).'
    )
  return InitPlan(abstract, initializer_of)


def draw(init_plan: InitPlan, seed: int) -> dict[str, Any]:
  """The variables of `init_plan`, drawn with NumPy for the run's `seed`."""

  def sample(path, leaf):
    name = _path_name(path)
    return init_plan.initializers[name].sample(
      variable_seed(seed, name), leaf.shape, leaf.dtype
    )

  return jax.tree_util.tree_map_with_path(sample, init_plan.abstract)


def host_variables(
  model, input_shape: tuple[int, ...], seed: int, **init_kwargs
) -> dict[str, Any]:
  """`model.init`'s variables, drawn on the host with NumPy (nothing
  compiled): `draw(plan(model, input_shape, **init_kwargs), seed)`.

  Returns:
    The variables as NumPy arrays, with `model.init`'s structure, shapes and
    dtypes.
  """
  return draw(plan(model, input_shape, **init_kwargs), seed)
