"""Orbax checkpoints in `<workdir>/checkpoints`.

The manager saves every `config.checkpoint_every_steps` steps, at the end, and
when the cluster signals preemption; keeps the last `config.keep_checkpoints`;
and a restarted run resumes from the latest step automatically. A step is
written to a temporary directory and renamed when complete, so an interrupted
save never replaces a good checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
  if '://' in workdir:  # gs://... : Orbax writes to cloud storage directly
    return workdir.rstrip('/') + '/checkpoints'
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(workdir: str, *, save_every_steps: int = 1,
                   keep: Optional[int] = None,
                   read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every_steps, max_to_keep=keep,
      create=not read_only, read_only=read_only,
      # Synchronous: a MobileNetV2 state is tens of MB (under a second to
      # write), and with Orbax 0.12 async saves lost a directory when TFDS
      # mock data was active (tests/test_train.py, ImageNet under mock_data).
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *,
         force: bool = False) -> bool:
  """Saves `state` at `step` if due (interval, preemption) or if `force`."""
  return manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore(manager: ocp.CheckpointManager, target: Any,
            step: Optional[int] = None) -> Any:
  """Restores `step` (default: the latest) with the structure and shardings
  of `target`.

  Raises:
    FileNotFoundError: there is no checkpoint.
    ValueError: the checkpoint is unreadable or does not match the model
      built from the config; nothing on disk is changed.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(
        f'No checkpoint in {manager.directory}. Train first (config.mode='
        "'train') or point --workdir at a directory with checkpoints/.")
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
        'aside to resume from the previous checkpoint.') from error


def read_variables(workdir: str) -> tuple[int, dict[str, Any]]:
  """The latest checkpoint's 'params' and 'batch_stats' (host numpy arrays)
  without knowing the model that wrote it (`config.init_from`, export,
  predict). Prefers the EMA weights when the run kept them.

  Raises:
    FileNotFoundError: no checkpoint in `workdir`.
    ValueError: the checkpoint cannot be read.
  """
  manager = create_manager(workdir, read_only=True)
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(
          f'No checkpoint in {manager.directory}: point the path at a workdir '
          'of a finished run or of `python -m mnv2_jax.convert`.')
    try:
      tree = manager.restore(step, args=ocp.args.StandardRestore())
    except Exception as error:  # Orbax raises many types for damaged files.
      raise ValueError(
          f'Could not read the checkpoint of step {step} in '
          f'{manager.directory}: {type(error).__name__}: {error}') from error
  finally:
    manager.close()
  if tree.get('ema_params') is not None:
    params, stats = tree['ema_params'], tree['ema_batch_stats']
  else:
    params, stats = tree['params'], tree['batch_stats']
  to_host = lambda x: jax.device_get(x)  # pylint: disable=unnecessary-lambda
  return step, {'params': jax.tree.map(to_host, params),
                'batch_stats': jax.tree.map(to_host, stats)}
