"""Faults injected on purpose (issue 8): damaged and foreign checkpoints,
NaN gradients, two runs on one workdir, an unwritable workdir or a full disk,
and determinism. The SIGKILL loop is in test_kill_resume.py; config fuzzing
in test_config_fuzz.py."""

import errno
import os
import shutil

import helpers
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mnv2_jax.training import checkpointing
from mnv2_jax.training import metric_writers
from mnv2_jax.training import optimization
from mnv2_jax.training import trainer
from mnv2_jax.training import workdir as workdir_lib


@pytest.fixture(scope='module')
def four_step_run(tmp_path_factory):
  """A finished 4-step run (checkpoints at steps 2 and 4) and its results."""
  workdir = str(tmp_path_factory.mktemp('four_steps'))
  results = trainer.train_and_evaluate(helpers.tiny_digits_config(), workdir)
  return workdir, results


def copy_of(run, tmp_path) -> str:
  workdir = str(tmp_path / 'run')
  shutil.copytree(run[0], workdir)
  return workdir


def listing(directory: str) -> dict[str, int]:
  """{relative path: size} of every file under `directory` but the lock."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      if name == workdir_lib.LOCK_NAME:
        continue
      path = os.path.join(root, name)
      files[os.path.relpath(path, directory)] = os.path.getsize(path)
  return files


def damage(step_dir: str, how: str) -> int:
  """Garbles or truncates every data file of a checkpoint step."""
  damaged = 0
  for root, _, names in os.walk(step_dir):
    for name in names:
      if name in ('_CHECKPOINT_METADATA', 'commit_success.txt'):
        continue
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      if how == 'truncate':
        with open(path, 'r+b') as f:
          f.truncate(size // 2)
      else:
        with open(path, 'r+b') as f:
          f.seek(size // 3)
          f.write(os.urandom(max(16, size // 3)))
      damaged += 1
  return damaged


def final_params(workdir: str):
  return checkpointing.read_variables(workdir)[1]['params']


@pytest.mark.parametrize('how', ['truncate', 'garble'])
def test_damaged_latest_checkpoint_resumes_from_the_previous_one(
  four_step_run, tmp_path, how, capsys
):
  workdir = copy_of(four_step_run, tmp_path)
  step_2 = listing(os.path.join(workdir, 'checkpoints', '2'))
  assert damage(os.path.join(workdir, 'checkpoints', '4'), how) > 0

  resumed = trainer.train_and_evaluate(helpers.tiny_digits_config(), workdir)

  out = capsys.readouterr().out
  assert 'the checkpoint of step 4 is unusable' in out
  assert 'Resumed from step 2' in out
  # The damaged step was moved aside, not deleted; step 2 was not touched.
  moved = os.listdir(os.path.join(workdir, 'unusable_checkpoints'))
  assert len(moved) == 1 and moved[0].startswith('4-')
  assert listing(os.path.join(workdir, 'checkpoints', '2')) == step_2
  assert checkpointing.create_manager(workdir, read_only=True).all_steps() == [
    2,
    4,
  ]
  # Steps 3-4 redone from step 2: the same result as the first run.
  for key in ('top1', 'top5', 'loss'):
    assert resumed[key] == four_step_run[1][key], key
  # metrics.jsonl reads like one run: the redone step-4 lines replaced the old.
  steps = [(l['step'], l['split']) for l in metric_writers.read_jsonl(workdir)]
  assert steps == [
    (2, 'train'),
    (4, 'train'),
    (4, 'validation'),
    (4, 'test'),
  ]


def test_every_checkpoint_damaged_starts_over_and_keeps_the_files(
  four_step_run, tmp_path, capsys
):
  workdir = copy_of(four_step_run, tmp_path)
  for step in ('2', '4'):
    damage(os.path.join(workdir, 'checkpoints', step), 'garble')
  trainer.train_and_evaluate(helpers.tiny_digits_config(), workdir)
  out = capsys.readouterr().out
  assert 'step 4 is unusable' in out and 'step 2 is unusable' in out
  assert 'Resumed' not in out
  assert sorted(
    name.split('-')[0]
    for name in os.listdir(os.path.join(workdir, 'unusable_checkpoints'))
  ) == ['2', '4']
  assert helpers.final_line(workdir)['step'] == 4


@pytest.mark.parametrize(
  'override,expected',
  [
    (
      {'model.width_multiplier': 0.5},
      r'arrays with other shapes: \[params\]\[\w+\]\S* \(saved \(\d',
    ),
    ({'optimizer': 'adam'}, r'missing from the checkpoint: \[opt_state\]'),
    ({'ema_decay': 0.999}, r'missing from the checkpoint: \[ema_params\]'),
  ],
)
def test_checkpoint_of_another_model_names_the_arrays(
  four_step_run, tmp_path, override, expected
):
  workdir = copy_of(four_step_run, tmp_path)
  before = listing(workdir)
  config = helpers.tiny_digits_config(num_train_steps=6, **override)
  with pytest.raises(
    checkpointing.IncompatibleCheckpointError, match=expected
  ) as error:
    trainer.train_and_evaluate(config, workdir)
  assert 'config.json' in str(error.value)
  assert 'Nothing was changed on disk' in str(error.value)
  assert listing(workdir) == before
  # The same in eval mode.
  with pytest.raises(checkpointing.IncompatibleCheckpointError):
    trainer.train_and_evaluate(
      helpers.tiny_digits_config(mode='eval', **override), workdir
    )


@jax.custom_jvp
def _nan_gradient(x):
  return x * 0.0


@_nan_gradient.defjvp
def _nan_gradient_jvp(primals, tangents):
  return _nan_gradient(primals[0]), tangents[0] * np.nan


def test_nan_gradients_stop_the_run_naming_them_and_the_rerun_resumes(
  four_step_run, tmp_path, monkeypatch
):
  workdir = copy_of(four_step_run, tmp_path)  # resumes from step 2:
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))
  real_penalty = optimization.l2_penalty

  def penalty_with_nan_gradient(params, mask):
    # The loss stays finite; only the gradient of one kernel is NaN.
    kernel = params['Conv2d_0']['conv']['kernel']
    return real_penalty(params, mask) + jax.numpy.sum(_nan_gradient(kernel))

  monkeypatch.setattr(optimization, 'l2_penalty', penalty_with_nan_gradient)
  with pytest.raises(
    trainer.TrainingDivergedError,
    match=r'gradient norm is nan \(the loss, [0-9.]+, is '
    r'finite\) at step 3.*last good checkpoint \(step 2\)',
  ):
    trainer.train_and_evaluate(helpers.tiny_digits_config(), workdir)
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.latest_step() == 2  # the NaN step was never saved

  # The cause gone (in practice a lower learning rate, which the message
  # suggests; the same one here, so that the fixture's programs are reused),
  # the rerun resumes from the last good checkpoint.
  monkeypatch.setattr(optimization, 'l2_penalty', real_penalty)
  results = trainer.train_and_evaluate(helpers.tiny_digits_config(), workdir)
  assert helpers.final_line(workdir)['step'] == 4
  assert np.isfinite(results['loss'])
  # Resumed from step 2 with the fixture's config: the uninterrupted run's
  # parameters, to the last bit.
  for resumed, uninterrupted in zip(
    jax.tree.leaves(final_params(workdir)),
    jax.tree.leaves(final_params(four_step_run[0])),
    strict=True,
  ):
    np.testing.assert_array_equal(resumed, uninterrupted)


def test_second_run_on_a_live_workdir_fails_and_changes_nothing(
  four_step_run, tmp_path
):
  workdir = copy_of(four_step_run, tmp_path)
  before = listing(workdir)
  with workdir_lib.claim(workdir):  # the live run
    with pytest.raises(
      workdir_lib.WorkdirBusyError,
      match=f'Another training run is using --workdir='
      f'{workdir} \\(pid {os.getpid()} on .*another '
      '--workdir',
    ):
      trainer.train_and_evaluate(
        helpers.tiny_digits_config(num_train_steps=6), workdir
      )
    assert listing(workdir) == before
  # Released with the live run: the next run proceeds.
  trainer.train_and_evaluate(
    helpers.tiny_digits_config(num_train_steps=6), workdir
  )
  assert helpers.final_line(workdir)['step'] == 6


def test_unwritable_workdir_fails_before_training(tmp_path, monkeypatch):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  started = []
  monkeypatch.setattr(
    trainer, '_train', lambda *args: started.append(1)
  )  # must not be reached
  with pytest.raises(
    workdir_lib.WorkdirNotWritableError,
    match='Cannot write to --workdir=.*a_file/run.*another '
    '--workdir. Nothing was trained',
  ):
    trainer.train_and_evaluate(
      helpers.tiny_digits_config(), str(blocker / 'run')
    )
  assert not started


def test_disk_full_at_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  real_save = ocp.CheckpointManager.save
  calls = []

  def save_then_disk_full(self, step, *args, **kwargs):
    calls.append(step)
    if step < 4:
      return real_save(self, step, *args, **kwargs)
    # What a full disk leaves: a half-written temporary step, then ENOSPC.
    partial = os.path.join(
      str(self.directory), f'{step}.orbax-checkpoint-tmp-1'
    )
    os.makedirs(partial)
    with open(os.path.join(partial, 'partial'), 'wb') as f:
      f.write(b'\0' * 100)
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(ocp.CheckpointManager, 'save', save_then_disk_full)
  with pytest.raises(
    checkpointing.CheckpointSaveError,
    match=r'Could not save the checkpoint of step 4 .*No '
    r'space left on device.*step 2.* is intact',
  ):
    trainer.train_and_evaluate(helpers.tiny_digits_config(), workdir)
  assert calls[-2:] == [2, 4]
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.latest_step() == 2
  run = trainer.Trainer(helpers.tiny_digits_config())
  checkpointing.restore(manager, run.abstract_state)  # readable

  monkeypatch.setattr(ocp.CheckpointManager, 'save', real_save)
  trainer.train_and_evaluate(
    helpers.tiny_digits_config(), workdir
  )  # space freed
  assert (
    checkpointing.create_manager(workdir, read_only=True).latest_step() == 4
  )


def test_same_seed_same_run_bitwise(four_step_run, tmp_path):
  workdir = str(tmp_path)
  again = trainer.train_and_evaluate(helpers.tiny_digits_config(), workdir)
  assert again == four_step_run[1]
  first, second = final_params(four_step_run[0]), final_params(workdir)
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('eval_batch_size', [7, 512])
def test_evaluation_counts_every_example_once(
  four_step_run, tmp_path, eval_batch_size
):
  workdir = copy_of(four_step_run, tmp_path)
  results = trainer.train_and_evaluate(
    helpers.tiny_digits_config(mode='eval', eval_batch_size=eval_batch_size),
    workdir,
  )
  assert results['num_examples'] == 360
  reference = four_step_run[1]
  assert results['top1'] == reference['top1']
  assert results['loss'] == pytest.approx(reference['loss'], rel=1e-5)
