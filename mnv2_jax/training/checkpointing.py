"""Orbax checkpoints in `<workdir>/checkpoints`.

The manager saves every `config.checkpoint_every_steps` steps, at the end, and
when the cluster signals preemption; keeps the last `config.keep_checkpoints`;
and a restarted run resumes from the latest step automatically. A step is
written to a temporary directory and renamed when complete, so an interrupted
save never replaces a good checkpoint.

A step that cannot be read (truncated or garbled files) is moved aside to
`<workdir>/unusable_checkpoints/` and the run resumes from the newest step
that can; nothing is deleted. A checkpoint of another model (other width,
other task) is not damage: it stops the run with the mismatched arrays named.
"""

from __future__ import annotations

import os
import time
from typing import Any
from typing import Callable
from typing import Optional

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


def checkpoint_dir(workdir: str) -> str:
  if '://' in workdir:  # gs://... : Orbax writes to cloud storage directly
    return workdir.rstrip('/') + '/checkpoints'
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(
  workdir: str,
  *,
  save_every_steps: int = 1,
  keep: Optional[int] = None,
  read_only: bool = False,
) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    save_interval_steps=save_every_steps,
    max_to_keep=keep,
    create=not read_only,
    read_only=read_only,
    # Synchronous: a MobileNetV2 state is tens of MB (under a second to
    # write), and with Orbax 0.12 async saves lost a directory when TFDS
    # mock data was active (tests/test_train.py, ImageNet under mock_data).
    enable_async_checkpointing=False,
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


class CheckpointSaveError(OSError):
  """A save failed (full disk, lost permissions); older steps are intact."""


def save(
  manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False
) -> bool:
  """Saves `state` at `step` if due (interval, preemption) or if `force`.

  Raises:
    CheckpointSaveError: the write failed. Orbax writes a step to a temporary
      directory and renames it when complete, so the steps saved before are
      untouched; the message names the newest of them.
  """
  try:
    return manager.save(step, args=ocp.args.StandardSave(state), force=force)
  except Exception as error:  # OSError, or Orbax/TensorStore wrapping one.
    previous = [s for s in manager.all_steps() if s != step]
    kept = (
      f'The previous checkpoint (step {max(previous)}) is intact'
      if previous
      else 'There is no earlier checkpoint'
    )
    raise CheckpointSaveError(
      f'Could not save the checkpoint of step {step} in {manager.directory}'
      f' ({type(error).__name__}: {error}). {kept}: free space or fix the '
      'permissions, then rerun the same command to resume from it.'
    ) from error


def restore(
  manager: ocp.CheckpointManager, target: Any, step: Optional[int] = None
) -> Any:
  """Restores `step` (default: the latest) with the structure and shardings
  of `target`.

  Raises:
    FileNotFoundError: there is no checkpoint.
    IncompatibleCheckpointError: it holds another model's arrays.
    ValueError: the checkpoint is unreadable; nothing on disk is changed.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(
      f'No checkpoint in {manager.directory}. Train first (config.mode='
      "'train') or point --workdir at a directory with checkpoints/."
    )
  check_compatible(manager, step, target)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as error:  # Orbax raises many types for damaged files.
    raise ValueError(
      f'Could not restore the checkpoint of step {step} from '
      f'{manager.directory}: {type(error).__name__}: {error}\n'
      'Either the files are damaged (an interrupted copy, a full disk) or '
      'the config builds a different model than the one saved (compare '
      'with config.json in the workdir). Nothing was deleted: move the bad '
      f'step directory ({os.path.join(str(manager.directory), str(step))}) '
      'aside to resume from the previous checkpoint.'
    ) from error


class IncompatibleCheckpointError(ValueError):
  """The checkpoint holds another model's arrays (names or shapes differ)."""


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{array name: shape}, names written [field][0][key] for both a saved
  tree (Orbax's metadata) and a live TrainState."""
  return {
    jax.tree_util.keystr(key).replace("'", ''): tuple(leaf.shape)
    for key, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    if hasattr(leaf, 'shape')
  }


def _saved_shapes(
  manager: ocp.CheckpointManager, step: int
) -> Optional[dict[str, tuple[int, ...]]]:
  """The step's {array name: shape} from its metadata; None if unreadable."""
  path = epath.Path(str(manager.directory)) / str(step) / 'default'
  handler = ocp.PyTreeCheckpointHandler()
  try:
    metadata = handler.metadata(path)
    return _flat_shapes(getattr(metadata, 'tree', metadata))
  except Exception:
    return None  # damaged metadata: restoring will say more
  finally:
    handler.close()


def check_compatible(
  manager: ocp.CheckpointManager, step: int, target: Any
) -> None:
  """Raises IncompatibleCheckpointError naming the arrays whose names or
  shapes differ between `step` and `target` (a TrainState: parameters,
  BatchNorm statistics, optimizer slots, EMA copies). Does nothing when the
  metadata cannot be read: that is damage, which restoring reports."""
  saved = _saved_shapes(manager, step)
  if not saved:
    return
  model = _flat_shapes(flax.serialization.to_state_dict(target))
  # Report the parameters first: they name the layer that differs.
  order = ('[params]', '[batch_stats]', '[ema_params]', '[ema_batch_stats]')
  model = dict(
    sorted(
      model.items(),
      key=lambda item: next(
        (i for i, field in enumerate(order) if item[0].startswith(field)),
        len(order),
      ),
    )
  )
  differ = [
    f'{name} (saved {saved[name]}, model {shape})'
    for name, shape in model.items()
    if name in saved and saved[name] != shape
  ]
  only_model = [name for name in model if name not in saved]
  only_saved = [name for name in saved if name not in model]
  if not (differ or only_model or only_saved):
    return
  lines = []
  for title, names in (
    ('with other shapes', differ),
    ('missing from the checkpoint', only_model),
    ('in the checkpoint but not in the model', only_saved),
  ):
    if names:
      lines.append(
        f'  {len(names)} arrays {title}: '
        + ', '.join(names[:4])
        + (' ...' if len(names) > 4 else '')
      )
  raise IncompatibleCheckpointError(
    f'The checkpoint of step {step} in {manager.directory} was written for '
    'another model or optimizer than the config builds:\n'
    + '\n'.join(lines)
    + '\n'
    'Resume with the config the run was started with (config.json in the '
    'workdir: model.width_multiplier, task, optimizer, ema_decay, ...), or '
    'use another --workdir. Nothing was changed on disk.'
  )


def quarantine(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves an unreadable step out of the checkpoint directory (never
  deletes it) and returns where it went."""
  source = epath.Path(str(manager.directory)) / str(step)
  destination_dir = source.parent.parent / 'unusable_checkpoints'
  destination_dir.mkdir(parents=True, exist_ok=True)
  destination = destination_dir / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
  source.rename(destination)
  manager.reload()
  return str(destination)


def restore_latest_usable(
  manager: ocp.CheckpointManager, target: Any, log: Callable[[str], None]
) -> Optional[Any]:
  """Restores the newest readable step (None if there is none).

  Each newer step that cannot be read is reported through `log` and moved to
  `<workdir>/unusable_checkpoints/`; older steps are kept untouched.

  Raises:
    IncompatibleCheckpointError: a step holds another model's arrays.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return restore(manager, target, step)
    except IncompatibleCheckpointError:
      raise  # the config's fault, not the files'
    except ValueError as error:
      if jax.process_count() > 1:
        raise  # hosts would race to move it: the error says what to do
      moved_to = quarantine(manager, step)
      cause = str(error.__cause__ or error).splitlines()[0][:300]
      log(
        f'WARNING: the checkpoint of step {step} is unusable ({cause}); '
        f'moved it to {moved_to} and trying the previous one.'
      )
  return None


def read_variables(workdir: str) -> tuple[int, dict[str, Any]]:
  """The latest checkpoint's 'params' and 'batch_stats' (host numpy arrays)
  without knowing the model that wrote it (`config.init_from`, export,
  predict). Prefers the EMA weights when the run kept them.

  Raises:
    FileNotFoundError: no checkpoint in `workdir`.
    ValueError: the checkpoint cannot be read.
  """
  manager = ocp.CheckpointManager(
    checkpoint_dir(workdir),
    item_handlers=ocp.StandardCheckpointHandler(),
    options=ocp.CheckpointManagerOptions(read_only=True, create=False),
  )
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(
        f'No checkpoint in {manager.directory}: point the path at a workdir '
        'of a finished run or of `python -m mnv2_jax.convert`.'
      )
    try:
      # Into host arrays of the saved shapes: a checkpoint written by other
      # devices or processes (8 devices, 2 hosts) carries their shardings,
      # which this process cannot build.
      saved = manager.item_metadata(step)
      target = jax.tree.map(
        lambda leaf: np.zeros(leaf.shape, leaf.dtype), dict(saved)
      )
      tree = manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as error:  # Orbax raises many types for damaged files.
      raise ValueError(
        f'Could not read the checkpoint of step {step} in '
        f'{manager.directory}: {type(error).__name__}: {error}'
      ) from error
  finally:
    manager.close()
  if tree.get('ema_params') is not None:
    params, stats = tree['ema_params'], tree['ema_batch_stats']
  else:
    params, stats = tree['params'], tree['batch_stats']
  to_host = lambda x: jax.device_get(x)
  return step, {
    'params': jax.tree.map(to_host, params),
    'batch_stats': jax.tree.map(to_host, stats),
  }
