"""The trainer: one loop for classification, detection and segmentation.

`train_step` and the task's `eval_step` (tasks/) are pure functions compiled
with `jax.jit`. The batch is sharded along the 'data' axis of a
`jax.sharding.Mesh` over every device of every host; parameters and optimizer
state are replicated. BatchNorm statistics in training are computed over the
global batch (the reduction over the sharded batch axis becomes a
cross-device all-reduce), so 1 device and 8 devices compute the same step up
to float rounding. `train_and_evaluate` runs a whole experiment: resume,
train, checkpoint, evaluate, write metrics.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import math
import time
from typing import Any
from typing import Iterator
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from mnv2_jax import configuration
from mnv2_jax import tasks
from mnv2_jax.data import batch_format
from mnv2_jax.data import datasets
from mnv2_jax.models import initializers
from mnv2_jax.models import quantization
from mnv2_jax.tasks import inference
from mnv2_jax.training import checkpointing
from mnv2_jax.training import compilation_cache
from mnv2_jax.training import metric_writers
from mnv2_jax.training import optimization
from mnv2_jax.training import provenance
from mnv2_jax.training import state as state_lib
from mnv2_jax.training import workdir as workdir_lib

PyTree = Any


class TrainingDivergedError(FloatingPointError):
  """The loss became NaN or infinite."""


class Preempted(Exception):
  """The job was told to stop (SIGTERM to a process of a multi-process job);
  every process saved the same step and stopped."""


def _int8_consistency(model, variables, images, outputs, dropout_rng, config):
  """How far rounding as int8 TFLite does moves `outputs`
  (models/quantization.py). Training mode, as the float outputs: in
  inference mode, with the running averages, the term drove the training
  accuracy down and the drift up (docs/model.md)."""
  int8_outputs, _ = quantization.simulated_apply(
    model,
    variables,
    images,
    ranges=config.quantization_ranges,
    train=True,
    mutable=['batch_stats'],
    rngs={'dropout': dropout_rng},
  )
  return quantization.consistency(outputs, int8_outputs)


def train_step(
  state: state_lib.TrainState,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  *,
  model: nn.Module,
  task,
  optimizer: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  learning_rate: optax.Schedule,
) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
  """One optimisation step on a global batch. Pure; `rng` is per step.

  `model` computes the training outputs and `task` (tasks/) turns them into
  the data loss and its metrics.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)
  mask = optimization.weight_decay_mask(state.params)

  images = batch['image']
  if images.dtype == jnp.uint8:  # config.dataset.train_image_dtype='uint8'
    images = batch_format.pixels_to_input(
      images.astype(jnp.float32), config.preprocessing
    )

  def loss_fn(params):
    outputs, updates = model.apply(
      {'params': params, 'batch_stats': state.batch_stats},
      images,
      train=True,
      mutable=['batch_stats'],
      rngs={'dropout': dropout_rng},
    )
    data_loss, task_metrics = task.loss(outputs, batch)
    loss = data_loss + config.weight_decay * optimization.l2_penalty(
      params, mask
    )
    if config.quantization_consistency:
      consistency = _int8_consistency(
        model,
        {'params': params, 'batch_stats': state.batch_stats},
        images,
        outputs,
        dropout_rng,
        config,
      )
      loss = loss + config.quantization_consistency * consistency
      task_metrics = {**task_metrics, 'int8_consistency': consistency}
    return loss, (data_loss, task_metrics, updates['batch_stats'])

  grads, (data_loss, task_metrics, batch_stats) = jax.grad(
    loss_fn, has_aux=True
  )(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=batch_stats,
    opt_state=opt_state,
  )
  if config.ema_decay:
    decay = optimization.ema_decay_at(state.step, config.ema_decay)
    average = lambda old, new: decay * old + (1.0 - decay) * new
    new_state = new_state.replace(
      ema_params=jax.tree.map(average, state.ema_params, params),
      ema_batch_stats=jax.tree.map(average, state.ema_batch_stats, batch_stats),
    )
  metrics = {
    'loss': data_loss,
    **task_metrics,
    'grad_norm': optax.tree.norm(grads),
    'learning_rate': learning_rate(state.step),
  }
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


def global_batch(
  batch: dict[str, np.ndarray], sharding: NamedSharding
) -> dict[str, jax.Array]:
  """Assembles the per-host numpy batches into one global sharded array."""
  return {
    k: jax.make_array_from_process_local_data(sharding, v)
    for k, v in batch.items()
  }


class Trainer:
  """Everything built from a config: model, optimizer, compiled steps, mesh."""

  def __init__(self, config: ml_collections.ConfigDict, devices=None):
    configuration.validate(config)
    datasets.check_available(config)
    self.config = config
    self.info = datasets.dataset_info(config)
    self.task = tasks.build_task(config, self.info)
    self.model = self.task.model
    self.schedule, self.learning_rate, self.optimizer = optimization.build(
      config, self.info.num_train_examples
    )
    self.mesh = create_mesh(devices)
    num_devices = self.mesh.devices.size
    for field in ('batch_size', 'eval_batch_size'):
      if config[field] % num_devices:
        raise ValueError(
          f'config.{field}={config[field]} must be divisible by the number '
          f'of devices ({num_devices}); e.g. --config.{field}='
          f'{max(1, config[field] // num_devices) * num_devices}.'
        )
    self.data_sharding = NamedSharding(self.mesh, PartitionSpec('data'))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())

    # The initial state is made on the host: NumPy draws the variables
    # (models/initializers.py) and XLA:CPU makes the optimizer's slots, so a
    # new run compiles nothing for its accelerator but its steps. The plan
    # (model.init traced once) also gives every array's shape.
    self._init_plan = initializers.plan(
      self.model, state_lib.model_input_shape(config), train=False
    )
    self._create_state = jax.jit(
      functools.partial(
        state_lib.create_train_state, config, optimizer=self.optimizer
      )
    )
    abstract = jax.eval_shape(self._create_state, self._init_plan.abstract)
    self.state_sharding = jax.tree.map(lambda _: self.replicated, abstract)
    self.abstract_state = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(
        s.shape, s.dtype, sharding=self.replicated
      ),
      abstract,
    )
    self.train_step = jax.jit(
      functools.partial(
        train_step,
        model=self.model,
        optimizer=self.optimizer,
        config=config,
        learning_rate=self.learning_rate,
        task=self.task,
      ),
      out_shardings=(self.state_sharding, self.replicated),
      donate_argnums=0,
    )
    self.eval_step = jax.jit(
      functools.partial(
        self.task.eval_step,
        microbatch=inference.resolve_inference_microbatch(
          config.inference_microbatch
        ),
      ),
      out_shardings=self.replicated,
    )

  def init_state(self) -> state_lib.TrainState:
    """A new run's state, replicated over the mesh."""
    variables = initializers.draw(self._init_plan, self.config.seed)
    host = state_lib.host_cpu_device()
    with jax.default_device(host) if host else contextlib.nullcontext():
      state = jax.device_get(self._create_state(variables))
    return state_lib.replicate(state, self.replicated)

  def evaluate(
    self, state: state_lib.TrainState, split: Optional[str] = None
  ) -> dict[str, float]:
    """The task's metrics over the whole eval split, or over `split` (top1/
    top5/loss for classification, COCO AP for detection, mIoU for
    segmentation), and ema_* with EMA."""
    config = self.config
    weights = {'': {'params': state.params, 'batch_stats': state.batch_stats}}
    if state.ema_params is not None:
      weights['ema_'] = {
        'params': state.ema_params,
        'batch_stats': state.ema_batch_stats,
      }
    per_host = config.eval_batch_size // jax.process_count()
    accumulators = {prefix: self.task.accumulator() for prefix in weights}
    for host_batch in datasets.eval_batches(
      config, per_host_batch_size=per_host, split=split
    ):
      batch = global_batch(host_batch, self.data_sharding)
      for prefix, variables in weights.items():
        accumulators[prefix].add(self.eval_step(variables, batch), host_batch)
    results = {}
    for prefix, accumulator in accumulators.items():
      for key, value in accumulator.result().items():
        results[key if key == 'num_examples' else prefix + key] = value
    return results


def _record_config(
  config, workdir: str, writer: metric_writers.MetricWriter
) -> None:
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
    flat_old, flat_new = configuration.flatten(old), configuration.flatten(new)
    changed = sorted(
      k
      for k in set(flat_old) | set(flat_new)
      if flat_old.get(k) != flat_new.get(k)
    )
    if changed:
      writer.log(
        'WARNING: resuming with a config that differs from '
        f'{path} in: '
        + ', '.join(
          f'{k} ({flat_old.get(k)!r} -> {flat_new.get(k)!r})' for k in changed
        )
      )
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / f'{path.name}.tmp'
  temporary.write_text(json.dumps(new, indent=2))
  temporary.replace(path)  # atomic: a kill leaves the old file or the new


class Prefetcher:
  """Fetches the next host batch while the device computes the current step,
  and records how long the loop waited for input."""

  def __init__(self, iterator: Iterator, to_device):
    self._iterator = iterator
    self._to_device = to_device
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self.wait_seconds = 0.0
    # Bad input the pipeline skipped or repaired, this host, this process.
    self.repair_counts = dict.fromkeys(batch_format.REPAIR_COUNTS, 0)
    self._future = self._pool.submit(self._fetch)

  def _fetch(self):
    batch = dict(next(self._iterator))
    for key in batch_format.REPAIR_COUNTS:
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


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  devices=None,
  *,
  started_at: Optional[float] = None,
  command: Optional[str] = None,
  result_file: Optional[str] = None,
) -> dict[str, float]:
  """Trains (resuming from the latest checkpoint) and evaluates at the end;
  with `config.mode == 'eval'`, only evaluates the latest checkpoint.

  `started_at` (a `time.time()`; default: now) is when the command started,
  for the log's start-up time. A finished training run's record (the final
  metrics of each split, the config, `command`, the machine, the versions)
  goes to `<workdir>/result.json`, and also to `result_file` if given; an
  evaluation's record only to `result_file` (the training run's stays).
  Returns the final evaluation metrics, also written to metrics.jsonl.
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
      workdir,
      save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints,
    )
    if manager.latest_step() is not None:
      # Another model's checkpoint: stop before writing anything.
      checkpointing.check_compatible(
        manager, manager.latest_step(), trainer.abstract_state
      )
    writer = metric_writers.MetricWriter(workdir)
    try:
      if config.mode == 'eval':
        state = checkpointing.restore(manager, trainer.abstract_state)
        evaluations = _final_evaluation(trainer, state, writer)
        paths = [result_file] if result_file else []
      else:
        _record_config(config, workdir, writer)
        evaluations = _train(trainer, workdir, writer, manager, started_at)
        paths = [epath.Path(workdir) / 'result.json'] + (
          [result_file] if result_file else []
        )
      _write_result(paths, config, evaluations, writer, started_at, command)
      results = {
        k: v for k, v in evaluations[-1].items() if k not in ('step', 'split')
      }
      return results
    finally:
      manager.wait_until_finished()
      manager.close()
      writer.close()


def run_record(
  config, evaluations: list[dict], started_at: float, command: Optional[str]
) -> dict[str, Any]:
  """What a finished run gave, and under which conditions: the final
  evaluation of each split, the wall time, the config, the command, the
  machine, the date and the versions."""
  return provenance.record(
    command,
    final={record['split']: record for record in evaluations},
    wall_seconds=time.time() - started_at,
    config=json.loads(config.to_json_best_effort()),
  )


def _write_result(
  paths: list,
  config,
  evaluations: list[dict[str, Any]],
  writer: metric_writers.MetricWriter,
  started_at: float,
  command: Optional[str],
) -> None:
  """Writes the run's record (`run_record`) to each of `paths` (process 0).

  `evaluations` are the lines this run wrote at its end (its final
  evaluation of each split), not what metrics.jsonl holds at the last step:
  an evaluation-only run without a test split would otherwise carry the
  training run's test figure into its own record."""
  if jax.process_index() != 0 or not paths:
    return
  record = run_record(config, evaluations, started_at, command)
  for path in paths:
    provenance.write(path, record)
    writer.log(f'Wrote {path}.')


def _final_evaluation(
  trainer: Trainer,
  state: state_lib.TrainState,
  writer: metric_writers.MetricWriter,
) -> list[dict[str, Any]]:
  """Evaluates the eval split, then the test split if the config has one
  (scored once, here); returns the lines written to metrics.jsonl, one per
  split, in that order."""
  step = int(jax.device_get(state.step))
  splits = [trainer.info.eval_split]
  if trainer.config.dataset.test_split:
    splits.append(trainer.config.dataset.test_split)
  evaluations = []
  for split in splits:
    results = trainer.evaluate(state, split)
    evaluations.append(writer.write(step, split, results))
    writer.log(
      f'[{split}] step {step}: '
      + ', '.join(
        f'{k} {v:.4f}' for k, v in results.items() if k != 'num_examples'
      )
    )
  return evaluations


def _check_finite(metrics: dict[str, Any], step: int, manager) -> None:
  """Raises TrainingDivergedError naming the step and the quantity (the loss,
  or the gradients when only they overflowed) that is NaN or infinite."""
  loss, grad_norm = float(metrics['loss']), float(metrics['grad_norm'])
  if math.isfinite(loss) and math.isfinite(grad_norm):
    return
  what = (
    f'The training loss is {loss}'
    if not math.isfinite(loss)
    else f'The gradient norm is {grad_norm} (the loss, {loss:.4g}, is finite)'
  )
  raise TrainingDivergedError(
    f'{what} at step {step}. The run stopped before saving that step; the '
    f'last good checkpoint (step {manager.latest_step()}) is kept in '
    f'{manager.directory}. Rerun the same command with a lower '
    'learning rate (--config.base_learning_rate) or more warm-up '
    '(--config.warmup_epochs) to resume from it, or use '
    'config.model.dtype=float32.'
  )


def _train(
  trainer: Trainer,
  workdir: str,
  writer: metric_writers.MetricWriter,
  manager,
  started_at: float,
) -> list[dict[str, Any]]:
  """Trains from the latest usable checkpoint to the end of the schedule,
  then evaluates (`_final_evaluation`, whose lines it returns)."""
  config, schedule = trainer.config, trainer.schedule
  state = _restore_or_initialise(trainer, manager, writer)
  start_step = int(jax.device_get(state.step))
  # Lines a killed run wrote after its last checkpoint are redone now.
  writer.drop_after(start_step)
  writer.log(
    f'Training {config.dataset.name} for {schedule.total_steps} steps '
    f'({schedule.steps_per_epoch} per epoch), batch {config.batch_size} on '
    f'{trainer.mesh.devices.size} device(s), '
    f'{jax.process_count()} host(s).'
  )
  per_host = config.batch_size // jax.process_count()
  batches = Prefetcher(
    datasets.train_batches(
      config, start_step=start_step, per_host_batch_size=per_host
    ),
    functools.partial(global_batch, sharding=trainer.data_sharding),
  )
  rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  log = _IntervalLog(trainer, writer, batches, start_step)
  try:
    for step in range(start_step + 1, schedule.total_steps + 1):
      state, metrics = trainer.train_step(state, next(batches), rng)
      if step == start_step + 1:
        _log_first_step(writer, metrics, started_at)
      log.add(metrics)
      is_last = step == schedule.total_steps
      due_log = step % config.log_every_steps == 0 or is_last
      # Every checkpoint_every_steps, at the end, and at a preemption
      # notice. Not Orbax's should_save(), which also saves the first step:
      # a run resumed there would log a mean over fewer steps at the next
      # log line than an uninterrupted run.
      # Every process asks at every step: the step they stop at is agreed
      # through the coordination service (JAX's preemption sync point).
      preempted = manager.reached_preemption(step) and not is_last
      due_save = (
        step % config.checkpoint_every_steps == 0 or is_last or preempted
      )
      due_eval = step % schedule.eval_every_steps == 0 and not is_last
      if not (due_log or due_save or due_eval):
        continue
      # Never save a diverged state: every step's loss is checked first.
      fetched = log.check_finite(step, manager)
      if due_log:
        log.write(step, fetched)
      side_work_start = time.perf_counter()
      if due_save:
        checkpointing.save(manager, step, state, force=True)
      if due_eval:
        results = trainer.evaluate(state)
        writer.write(step, trainer.info.eval_split, results)
        headline = trainer.task.headline_metric
        writer.log(f'[eval] step {step}: {headline} {results[headline]:.4f}')
      log.exclude(time.perf_counter() - side_work_start)
      if preempted:
        manager.wait_until_finished()
        raise Preempted(
          f'Preempted at step {step}: every process saved it in '
          f'{manager.directory}. Run the same command again to resume.'
        )
  finally:
    batches.close()
  return _final_evaluation(trainer, state, writer)


def _restore_or_initialise(trainer: Trainer, manager, writer):
  """The latest usable checkpoint's state, or a new run's (from
  config.init_from when set). A resumed run restores into the state's
  shapes; only a new one makes it."""
  state = checkpointing.restore_latest_usable(
    manager, trainer.abstract_state, writer.log
  )
  if state is not None:
    writer.log(f'Resumed from step {int(state.step)} in {manager.directory}.')
    return state
  state = trainer.init_state()
  if trainer.config.init_from:
    state, report = state_lib.initialize_from(state, trainer.config.init_from)
    state = jax.device_put(state, trainer.replicated)
    writer.log(report)
  return state


def _log_first_step(writer, metrics, started_at: float) -> None:
  """When the first step finished, and what the compilation cache did."""
  jax.block_until_ready(metrics)
  cache = compilation_cache.counts()
  writer.log(
    f'First step done {time.time() - started_at:.1f} s after '
    'start (compilation cache: '
    + (
      f'{cache["hits"]} programs loaded, {cache["misses"]} compiled).'
      if compilation_cache.is_enabled()
      else 'off).'
    )
  )


class _IntervalLog:
  """The training log of the steps since the last log line: their metrics
  (device arrays, fetched only when needed), and the time they took, less
  the time spent evaluating and saving."""

  def __init__(self, trainer: Trainer, writer, batches, start_step: int):
    self.trainer, self.writer, self.batches = trainer, writer, batches
    self.pending, self.unchecked = [], 0
    self.last_time, self.last_step = time.perf_counter(), start_step
    self.wait_at_last, self.excluded_seconds = 0.0, 0.0

  def add(self, metrics) -> None:
    self.pending.append(metrics)
    self.unchecked += 1

  def exclude(self, seconds: float) -> None:
    self.excluded_seconds += seconds

  def check_finite(self, step: int, manager) -> list[dict]:
    """The interval's metrics on the host, every step not yet checked
    checked for a non-finite loss or gradient."""
    fetched = jax.device_get(self.pending)
    recent = fetched[len(fetched) - self.unchecked :]
    self.unchecked = 0
    for offset, step_metrics in enumerate(recent):
      _check_finite(step_metrics, step - len(recent) + 1 + offset, manager)
    return fetched

  def write(self, step: int, fetched: list[dict]) -> None:
    """The interval's means, throughput and input wait, to metrics.jsonl
    and the log; starts the next interval."""
    schedule, batches = self.trainer.schedule, self.batches
    means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
    elapsed = time.perf_counter() - self.last_time - self.excluded_seconds
    steps_done = step - self.last_step
    means['images_per_second'] = (
      steps_done * self.trainer.config.batch_size / max(elapsed, 1e-9)
    )
    means['input_wait_fraction'] = (
      batches.wait_seconds - self.wait_at_last
    ) / max(elapsed, 1e-9)
    means['epoch'] = step / schedule.steps_per_epoch
    eta = (schedule.total_steps - step) * elapsed / max(steps_done, 1)
    # Totals since this process started; present once there were any.
    repaired = {k: v for k, v in batches.repair_counts.items() if v}
    means.update(repaired)
    self.writer.write(step, 'train', means)
    self.writer.log(
      f'step {step}/{schedule.total_steps} epoch {means["epoch"]:.2f}: '
      f'loss {means["loss"]:.4f} '
      + ('' if 'accuracy' not in means else f'acc {means["accuracy"]:.4f} ')
      + f'lr {means["learning_rate"]:.5f} '
      f'{means["images_per_second"]:.0f} img/s '
      f'input wait {100 * means["input_wait_fraction"]:.1f}% '
      f'ETA {eta:.0f}s'
      + ''.join(f', {k.replace("_", " ")} {v}' for k, v in repaired.items())
    )
    self.pending = []
    self.last_time, self.last_step = time.perf_counter(), step
    self.wait_at_last, self.excluded_seconds = batches.wait_seconds, 0.0
