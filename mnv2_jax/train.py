"""Training and evaluation of MobileNetV2 classifiers and SSDLite detectors.

`train_step` and the task's `eval_step` (tasks.py) are pure functions compiled
with `jax.jit`. The batch is sharded along the 'data' axis of a `jax.sharding.Mesh` over every
device of every host; parameters and optimizer state are replicated. BatchNorm
statistics in training are computed over the global batch (the reduction over
the sharded batch axis becomes a cross-device all-reduce), so 1 device and 8
devices compute the same step up to float rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
from typing import Any, Iterator, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnv2_jax import checkpointing
from mnv2_jax import compilation_cache
from mnv2_jax import configuration
from mnv2_jax import initializers
from mnv2_jax import input_pipeline
from mnv2_jax import metric_writers
from mnv2_jax import model as model_lib
from mnv2_jax import tasks
from mnv2_jax import workdir as workdir_lib

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  # Exponential moving average of params and BatchNorm statistics (the
  # released recipe evaluates these); None when config.ema_decay == 0.
  ema_params: Optional[PyTree]
  ema_batch_stats: Optional[PyTree]


class TrainingDivergedError(FloatingPointError):
  """The loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Run length in steps: the one place epochs become steps."""
  steps_per_epoch: int
  total_steps: int
  warmup_steps: int
  decay_steps: int
  eval_every_steps: int


MAX_STEPS = 2**31  # TrainState.step is int32


def make_schedule(config, num_train_examples: int) -> Schedule:
  steps_per_epoch = max(1, num_train_examples // config.batch_size)
  if config.num_train_steps > 0:
    total, field = config.num_train_steps, 'num_train_steps'
  else:
    total = int(math.ceil(config.num_epochs * steps_per_epoch))
    field = 'num_epochs'
  if total >= MAX_STEPS:
    raise ValueError(
        f'config.{field}={config[field]!r} is invalid: it makes {total} steps '
        f'of {config.batch_size} images, more than the int32 step counter '
        f'holds ({MAX_STEPS - 1}). Fix it in the config file or with '
        f'--config.{field}={1000 if field == "num_epochs" else 100_000}.')
  return Schedule(
      steps_per_epoch=steps_per_epoch,
      total_steps=total,
      warmup_steps=int(config.warmup_epochs * steps_per_epoch),
      decay_steps=max(1, int(config.lr_decay_epochs * steps_per_epoch)),
      eval_every_steps=max(1, int(config.eval_every_epochs * steps_per_epoch)))


POLY_POWER = 0.9  # DeepLab's learning_power


def learning_rate_fn(config, schedule: Schedule) -> optax.Schedule:
  """Peak lr = base_learning_rate x batch_size / base_batch_size (linear
  scaling); optional linear warm-up; then x0.98 per epoch (paper §6.1,
  staircase), cosine to zero, or DeepLab's 'poly': (1 - step / total)^0.9."""
  peak = config.base_learning_rate * config.batch_size / config.base_batch_size
  if config.lr_schedule == 'poly':
    poly = optax.polynomial_schedule(
        peak, 0.0, POLY_POWER,
        max(schedule.total_steps - schedule.warmup_steps, 1))
    if not schedule.warmup_steps:
      return poly
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, schedule.warmup_steps), poly],
        [schedule.warmup_steps])
  if config.lr_schedule == 'exponential':
    return optax.warmup_exponential_decay_schedule(
        init_value=0.0 if schedule.warmup_steps else peak, peak_value=peak,
        warmup_steps=schedule.warmup_steps,
        transition_steps=schedule.decay_steps, decay_rate=config.lr_decay_rate,
        staircase=True)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if schedule.warmup_steps else peak, peak_value=peak,
      warmup_steps=schedule.warmup_steps,
      decay_steps=max(schedule.total_steps, schedule.warmup_steps + 1))


def create_optimizer(config, learning_rate: optax.Schedule
                     ) -> optax.GradientTransformation:
  if config.optimizer == 'rmsprop':
    return optax.rmsprop(
        learning_rate, decay=config.rmsprop_decay, eps=config.rmsprop_epsilon,
        initial_scale=config.rmsprop_initial_scale, eps_in_sqrt=True,
        momentum=config.momentum)
  if config.optimizer == 'adam':
    # Not a paper recipe: from-scratch runs of minutes (the CPU quickstarts).
    return optax.adam(learning_rate, b1=config.momentum,
                      b2=config.adam_b2, eps=config.adam_epsilon)
  return optax.sgd(learning_rate, momentum=config.momentum, nesterov=True)


def weight_decay_mask(params: PyTree) -> PyTree:
  """True for conv and dense kernels, except depthwise kernels (TF-slim does
  not regularise them); BatchNorm scales and biases are never decayed."""
  def is_decayed(path, _):
    names = [getattr(entry, 'key', '') for entry in path]
    return names[-1] == 'kernel' and 'depthwise' not in names
  return jax.tree_util.tree_map_with_path(is_decayed, params)


def l2_penalty(params: PyTree, mask: PyTree) -> jax.Array:
  """sum(w^2) / 2 over the masked kernels: TF's l2_regularizer."""
  leaves = [jnp.sum(jnp.square(p)) for p, m in
            zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m]
  return 0.5 * sum(leaves)


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
  """TF's ExponentialMovingAverage with num_updates: min(decay, (1+n)/(10+n))."""
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array,
               *, model: nn.Module, optimizer: optax.GradientTransformation,
               config: ml_collections.ConfigDict,
               learning_rate: optax.Schedule, task=None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on a global batch. Pure; `rng` is per step.

  `task` (tasks.py) turns the model's training outputs into the data loss
  and its metrics; the default is classification of `batch['label']`.
  """
  if task is None:
    task = tasks.Classification(config, model.num_classes)
    task.model = model
  dropout_rng = jax.random.fold_in(rng, state.step)
  mask = weight_decay_mask(state.params)

  def loss_fn(params):
    outputs, updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'],
        train=True, mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    data_loss, task_metrics = task.loss(outputs, batch)
    loss = data_loss + config.weight_decay * l2_penalty(params, mask)
    return loss, (data_loss, task_metrics, updates['batch_stats'])

  grads, (data_loss, task_metrics, batch_stats) = jax.grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  if config.ema_decay:
    decay = ema_decay_at(state.step, config.ema_decay)
    average = lambda old, new: decay * old + (1.0 - decay) * new
    new_state = new_state.replace(
        ema_params=jax.tree.map(average, state.ema_params, params),
        ema_batch_stats=jax.tree.map(average, state.ema_batch_stats,
                                     batch_stats))
  metrics = {'loss': data_loss, **task_metrics,
             'grad_norm': optax.tree.norm(grads),
             'learning_rate': learning_rate(state.step)}
  return new_state, metrics


def create_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: all), axis 'data'.

  Devices are ordered by host so that each host's devices hold one contiguous
  block of the global batch, which is what assembling the global batch from
  per-host pieces (`global_batch`) requires.
  """
  devices = jax.devices() if devices is None else devices
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), ('data',))


def global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding
                 ) -> dict[str, jax.Array]:
  """Assembles the per-host numpy batches into one global sharded array."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


def create_train_state(config, variables: PyTree,
                       optimizer: optax.GradientTransformation) -> TrainState:
  """A step-0 state holding `variables` ({'params', 'batch_stats'}), fresh
  optimizer slots and, with `config.ema_decay`, the moving average's copy.
  Pure; used for new runs (`Trainer.init_state`) and imported weights
  (convert.save)."""
  params, batch_stats = variables['params'], variables['batch_stats']
  ema = config.ema_decay > 0
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
      opt_state=optimizer.init(params),
      ema_params=params if ema else None,
      ema_batch_stats=batch_stats if ema else None)


def model_input_shape(config) -> tuple[int, int, int, int]:
  """The image batch shape a model is initialised with (one image)."""
  return (1, config.image_size, config.image_size, 3)


def abstract_variables(config, model: nn.Module) -> PyTree:
  """Shapes and dtypes of `model`'s variables (traced, nothing computed)."""
  return jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0),
      jax.ShapeDtypeStruct(model_input_shape(config), jnp.float32))


def host_cpu_device() -> Optional[jax.Device]:
  """This host's first CPU device, or None where JAX runs without one."""
  try:
    return jax.local_devices(backend='cpu')[0]
  except RuntimeError:
    return None


def replicate(tree: PyTree, sharding: NamedSharding) -> PyTree:
  """Host arrays (the same on every host) as global arrays with `sharding`
  (replicated): every host fills its own devices."""
  def put(value):
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding,
                                        lambda index: value[index])
  return jax.tree.map(put, tree)


BACKBONE_PREFIX = "['backbone']"  # ssd.SSDLite's MobileNetV2


def initialize_from(state: TrainState, workdir: str) -> tuple[TrainState, str]:
  """Copies the weights of `workdir`'s latest checkpoint into `state`.

  Every parameter and BatchNorm statistic whose name and shape match is
  copied (also into the EMA copy); a detector's `backbone/...` arrays also
  match a classifier's top-level ones. The others (a classifier for another
  number of classes, detection heads) keep their initialisation. Returns the
  new state and a one-line report.

  Raises:
    ValueError: nothing matches (a checkpoint of another model).
  """
  step, source = checkpointing.read_variables(workdir)
  copied, kept = [], []

  def merge(tree, source_tree):
    flat_source = {jax.tree_util.keystr(path): value for path, value in
                   jax.tree_util.tree_flatten_with_path(source_tree)[0]}

    def pick(path, value):
      name = jax.tree_util.keystr(path)
      found = flat_source.get(name)
      if found is None and name.startswith(BACKBONE_PREFIX):
        # A detector's backbone from a classifier's checkpoint.
        found = flat_source.get(name[len(BACKBONE_PREFIX):])
      if found is not None and np.shape(found) == value.shape:
        copied.append(name)
        return jnp.asarray(found, value.dtype)
      kept.append(name + ('' if found is None else
                          f' (shape {np.shape(found)} there, {value.shape} here)'))
      return value
    return jax.tree_util.tree_map_with_path(pick, tree)

  params = merge(state.params, source['params'])
  batch_stats = merge(state.batch_stats, source['batch_stats'])
  if not copied:
    raise ValueError(
        f'config.init_from={workdir!r}: none of its arrays match this model '
        f'by name and shape (e.g. here: {kept[:3]}). Was it written for '
        'another architecture?')
  state = state.replace(params=params, batch_stats=batch_stats)
  if state.ema_params is not None:
    state = state.replace(ema_params=params, ema_batch_stats=batch_stats)
  report = (f'Initialised {len(copied)} arrays from {workdir} (step {step})'
            + (f'; kept the initialisation of {len(kept)}: '
               + ', '.join(kept[:8]) + (' ...' if len(kept) > 8 else '')
               if kept else '') + '.')
  return state, report


class Trainer:
  """Everything built from a config: model, optimizer, compiled steps, mesh."""

  def __init__(self, config: ml_collections.ConfigDict, devices=None):
    configuration.validate(config)
    input_pipeline.check_available(config)
    self.config = config
    self.info = input_pipeline.dataset_info(config)
    self.task = tasks.build(config, self.info.num_classes,
                            **self.info.task_kwargs())
    self.model = self.task.model
    self.schedule = make_schedule(config, self.info.num_train_examples)
    self.learning_rate = learning_rate_fn(config, self.schedule)
    self.optimizer = create_optimizer(config, self.learning_rate)
    self.mesh = create_mesh(devices)
    num_devices = self.mesh.devices.size
    for field in ('batch_size', 'eval_batch_size'):
      if config[field] % num_devices:
        raise ValueError(
            f'config.{field}={config[field]} must be divisible by the number '
            f'of devices ({num_devices}); e.g. --config.{field}='
            f'{max(1, config[field] // num_devices) * num_devices}.')
    self.data_sharding = NamedSharding(self.mesh, PartitionSpec('data'))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())

    # The initial state is made on the host: NumPy draws the variables
    # (initializers.host_variables) and XLA:CPU makes the optimizer's slots,
    # so a new run compiles nothing for its accelerator but its steps.
    self._create_state = jax.jit(functools.partial(
        create_train_state, config, optimizer=self.optimizer))
    abstract = jax.eval_shape(self._create_state,
                              abstract_variables(config, self.model))
    self.state_sharding = jax.tree.map(lambda _: self.replicated, abstract)
    self.abstract_state = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                       sharding=self.replicated), abstract)
    self.train_step = jax.jit(
        functools.partial(train_step, model=self.model,
                          optimizer=self.optimizer, config=config,
                          learning_rate=self.learning_rate, task=self.task),
        out_shardings=(self.state_sharding, self.replicated),
        donate_argnums=0)
    self.eval_step = jax.jit(
        functools.partial(self.task.eval_step,
                          microbatch=model_lib.resolve_inference_microbatch(
                              config.inference_microbatch)),
        out_shardings=self.replicated)

  def init_state(self) -> TrainState:
    """A new run's state, replicated over the mesh."""
    variables = initializers.host_variables(
        self.model, model_input_shape(self.config), self.config.seed,
        train=False)
    host = host_cpu_device()
    with jax.default_device(host) if host else contextlib.nullcontext():
      state = jax.device_get(self._create_state(variables))
    return replicate(state, self.replicated)

  def evaluate(self, state: TrainState) -> dict[str, float]:
    """The task's metrics over the whole eval split (top1/top5/loss for
    classification, COCO AP for detection), and ema_* with EMA."""
    weights = {'': {'params': state.params, 'batch_stats': state.batch_stats}}
    if state.ema_params is not None:
      weights['ema_'] = {'params': state.ema_params,
                         'batch_stats': state.ema_batch_stats}
    per_host = self.config.eval_batch_size // jax.process_count()
    accumulators = {prefix: self.task.accumulator() for prefix in weights}
    for host_batch in input_pipeline.eval_batches(
        self.config, per_host_batch_size=per_host):
      batch = global_batch(host_batch, self.data_sharding)
      for prefix, variables in weights.items():
        accumulators[prefix].add(self.eval_step(variables, batch), host_batch)
    results = {}
    for prefix, accumulator in accumulators.items():
      for key, value in accumulator.result().items():
        results[key if key == 'num_examples' else prefix + key] = value
    return results


def _record_config(config, workdir: str,
                   writer: metric_writers.MetricWriter) -> None:
  """Writes config.json for a new run; on resume keeps the original and
  reports every field the new config changes."""
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir) / 'config.json'
  new = json.loads(config.to_json_best_effort())
  old = None
  if path.exists():
    try:
      old = json.loads(path.read_text())
    except ValueError:  # cut short by a kill during the first write
      writer.log(f'WARNING: {path} was unreadable; rewriting it.')
  if old is not None:
    flat_old, flat_new = _flatten(old), _flatten(new)
    changed = sorted(k for k in set(flat_old) | set(flat_new)
                     if flat_old.get(k) != flat_new.get(k))
    if changed:
      writer.log('WARNING: resuming with a config that differs from '
                 f'{path} in: ' + ', '.join(
                     f'{k} ({flat_old.get(k)!r} -> {flat_new.get(k)!r})'
                     for k in changed))
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / f'{path.name}.tmp'
  temporary.write_text(json.dumps(new, indent=2))
  temporary.replace(path)  # atomic: a kill leaves the old file or the new


def _flatten(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


class _Prefetcher:
  """Fetches the next host batch while the device computes the current step,
  and records how long the loop waited for input."""

  def __init__(self, iterator: Iterator, to_device):
    import concurrent.futures  # pylint: disable=g-import-not-at-top
    self._iterator = iterator
    self._to_device = to_device
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self.wait_seconds = 0.0
    # Bad input the pipeline skipped or repaired, this host, this process.
    self.repair_counts = dict.fromkeys(input_pipeline.REPAIR_COUNTS, 0)
    self._future = self._pool.submit(self._fetch)

  def _fetch(self):
    batch = dict(next(self._iterator))
    for key in input_pipeline.REPAIR_COUNTS:
      if key in batch:
        self.repair_counts[key] += int(np.sum(batch.pop(key)))
    return self._to_device(batch)

  def __next__(self):
    start = time.perf_counter()
    batch = self._future.result()
    self.wait_seconds += time.perf_counter() - start
    self._future = self._pool.submit(self._fetch)
    return batch

  def close(self):
    self._future.cancel()
    self._pool.shutdown(wait=False, cancel_futures=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None, *, started_at: Optional[float] = None
                       ) -> dict[str, float]:
  """Trains (resuming from the latest checkpoint) and evaluates at the end.

  `started_at` (a `time.time()`; default: now) is when the command started,
  for the log's start-up time. Returns the final evaluation metrics, also
  written to metrics.jsonl.
  """
  started_at = time.time() if started_at is None else started_at
  trainer = Trainer(config, devices)
  if config.mode == 'eval':
    claim = contextlib.nullcontext()
  elif jax.process_index() == 0:
    # Fails at once if the workdir is unwritable or another run holds it.
    claim = workdir_lib.claim(workdir)
  else:
    claim = contextlib.nullcontext()  # process 0 holds it for the job
  with claim:
    manager = checkpointing.create_manager(
        workdir, save_every_steps=config.checkpoint_every_steps,
        keep=config.keep_checkpoints)
    if manager.latest_step() is not None:
      # Another model's checkpoint: stop before writing anything.
      checkpointing.check_compatible(manager, manager.latest_step(),
                                     trainer.abstract_state)
    writer = metric_writers.MetricWriter(workdir)
    try:
      if config.mode == 'eval':
        state = checkpointing.restore(manager, trainer.abstract_state)
        return _final_evaluation(trainer, state, writer)
      _record_config(config, workdir, writer)
      return _train(trainer, workdir, writer, manager, started_at)
    finally:
      manager.wait_until_finished()
      manager.close()
      writer.close()


def _final_evaluation(trainer: Trainer, state: TrainState,
                      writer: metric_writers.MetricWriter) -> dict[str, float]:
  step = int(jax.device_get(state.step))
  results = trainer.evaluate(state)
  writer.write(step, trainer.info.eval_split, results)
  writer.log(f'[{trainer.info.eval_split}] step {step}: ' + ', '.join(
      f'{k} {v:.4f}' for k, v in results.items() if k != 'num_examples'))
  return results


def _check_finite(metrics: dict[str, Any], step: int, manager) -> None:
  """Raises TrainingDivergedError naming the step and the quantity (the loss,
  or the gradients when only they overflowed) that is NaN or infinite."""
  loss, grad_norm = float(metrics['loss']), float(metrics['grad_norm'])
  if math.isfinite(loss) and math.isfinite(grad_norm):
    return
  what = (f'The training loss is {loss}' if not math.isfinite(loss) else
          f'The gradient norm is {grad_norm} (the loss, {loss:.4g}, is '
          'finite)')
  raise TrainingDivergedError(
      f'{what} at step {step}. The run stopped before saving that step; the '
      f'last good checkpoint (step {manager.latest_step()}) is kept in '
      f'{manager.directory}. Rerun the same command with a lower '
      'learning rate (--config.base_learning_rate) or more warm-up '
      '(--config.warmup_epochs) to resume from it, or use '
      'config.model.dtype=float32.')


def _train(trainer: Trainer, workdir: str,
           writer: metric_writers.MetricWriter, manager,
           started_at: float) -> dict[str, float]:
  config, schedule = trainer.config, trainer.schedule
  state = trainer.init_state()
  restored = checkpointing.restore_latest_usable(manager, state, writer.log)
  if restored is not None:
    state = restored
    writer.log(f'Resumed from step {int(state.step)} in {manager.directory}.')
  elif config.init_from:
    state, report = initialize_from(state, config.init_from)
    state = jax.device_put(state, trainer.replicated)
    writer.log(report)
  start_step = int(jax.device_get(state.step))
  # Lines a killed run wrote after its last checkpoint are redone now.
  writer.drop_after(start_step)
  writer.log(
      f'Training {config.dataset.name} for {schedule.total_steps} steps '
      f'({schedule.steps_per_epoch} per epoch), batch {config.batch_size} on '
      f'{trainer.mesh.devices.size} device(s), '
      f'{jax.process_count()} host(s).')

  per_host = config.batch_size // jax.process_count()
  batches = _Prefetcher(
      input_pipeline.train_batches(config, start_step=start_step,
                                   per_host_batch_size=per_host),
      functools.partial(global_batch, sharding=trainer.data_sharding))
  rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  # Metrics of the steps since the last log line (device arrays, fetched only
  # when needed); time spent in evaluation and saving is not training time.
  pending, unchecked = [], 0
  last_log_time, last_log_step, wait_at_last_log = (
      time.perf_counter(), start_step, 0.0)
  excluded_seconds = 0.0
  try:
    for step in range(start_step + 1, schedule.total_steps + 1):
      batch = next(batches)
      state, metrics = trainer.train_step(state, batch, rng)
      if step == start_step + 1:
        jax.block_until_ready(metrics)
        cache = compilation_cache.counts()
        writer.log(f'First step done {time.time() - started_at:.1f} s after '
                   'start (compilation cache: ' + (
                       f'{cache["hits"]} programs loaded, {cache["misses"]} '
                       'compiled).' if compilation_cache.is_enabled()
                       else 'off).'))
      pending.append(metrics)
      unchecked += 1
      is_last = step == schedule.total_steps
      due_log = step % config.log_every_steps == 0 or is_last
      # Every checkpoint_every_steps, at the end, and at a preemption
      # notice. Not Orbax's should_save(), which also saves the first step:
      # a run resumed there would log a mean over fewer steps at the next
      # log line than an uninterrupted run.
      due_save = (step % config.checkpoint_every_steps == 0 or is_last
                  or manager.reached_preemption(step))
      due_eval = step % schedule.eval_every_steps == 0 and not is_last
      if not (due_log or due_save or due_eval):
        continue
      # Never save a diverged state: every step's loss is checked first.
      fetched = jax.device_get(pending)
      recent = fetched[len(fetched) - unchecked:]
      unchecked = 0
      for offset, step_metrics in enumerate(recent):
        _check_finite(step_metrics, step - len(recent) + 1 + offset, manager)
      if due_log:
        means = {k: float(np.mean([m[k] for m in fetched]))
                 for k in fetched[-1]}
        elapsed = time.perf_counter() - last_log_time - excluded_seconds
        steps_done = step - last_log_step
        means['images_per_second'] = (steps_done * config.batch_size
                                      / max(elapsed, 1e-9))
        means['input_wait_fraction'] = (
            (batches.wait_seconds - wait_at_last_log) / max(elapsed, 1e-9))
        means['epoch'] = step / schedule.steps_per_epoch
        eta = (schedule.total_steps - step) * elapsed / max(steps_done, 1)
        # Totals since this process started; present once there were any.
        repaired = {k: v for k, v in batches.repair_counts.items() if v}
        means.update(repaired)
        writer.write(step, 'train', means)
        writer.log(
            f'step {step}/{schedule.total_steps} epoch {means["epoch"]:.2f}: '
            f'loss {means["loss"]:.4f} '
            + ('' if 'accuracy' not in means else
               f'acc {means["accuracy"]:.4f} ')
            + f'lr {means["learning_rate"]:.5f} '
            f'{means["images_per_second"]:.0f} img/s '
            f'input wait {100 * means["input_wait_fraction"]:.1f}% '
            f'ETA {eta:.0f}s'
            + ''.join(f', {k.replace("_", " ")} {v}'
                      for k, v in repaired.items()))
        pending = []
        last_log_time, last_log_step = time.perf_counter(), step
        wait_at_last_log, excluded_seconds = batches.wait_seconds, 0.0
      side_work_start = time.perf_counter()
      if due_save:
        checkpointing.save(manager, step, state, force=True)
      if due_eval:
        results = trainer.evaluate(state)
        writer.write(step, trainer.info.eval_split, results)
        headline = trainer.task.headline_metric
        writer.log(f'[eval] step {step}: {headline} {results[headline]:.4f}')
      excluded_seconds += time.perf_counter() - side_work_start
  finally:
    batches.close()
  return _final_evaluation(trainer, state, writer)


def evaluate_checkpoint(config: ml_collections.ConfigDict,
                        workdir: str) -> dict[str, float]:
  """Evaluates the latest checkpoint in `workdir` (config.mode='eval')."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.mode = 'eval'
  return train_and_evaluate(config, workdir)
