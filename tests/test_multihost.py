"""Several processes under jax.distributed on this machine (CPU, gloo).

`python -m mnv2_jax.launch` starts 2 processes of 1 CPU device each (2
hosts; several fake devices per process multiply gloo's collectives and
train at a tenth of the speed on 2 cores); they are compared with 1 process
of 2 devices (`JAX_NUM_CPU_DEVICES=2`) on the digits:

* the same training, to the last bit;
* checkpoints written by 2 processes resumed by 1, equal to the
  uninterrupted run (2 processes resume their own after SIGTERM; 1 -> 2 is
  not tested);
* SIGTERM to one process: every process saves the same step and stops;
* SIGKILL of one process: the other ends within a bound (the coordination
  service's heartbeat timeout) instead of hanging in a collective, and the
  job resumes from the last complete checkpoint.

The per-host data shards are tested in-process (a patched process index),
below.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import helpers
import jax
import numpy as np
import pytest

from mnv2_jax.data import batch_format
from mnv2_jax.data import datasets
from mnv2_jax.training import checkpointing

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT_SECONDS = 5
# The survivor of a SIGKILL must end within this (measured: see the test).
EXIT_BOUND_SECONDS = 45

# MobileNetV1 0.25, the network of this repository that compiles fastest
# (each process compiles its own programs): what is tested here is the
# processes' cooperation, the same for every network.
TINY = [
  '--config',
  os.path.join(REPO_ROOT, 'configs', 'quickstart.py'),
  '--config.model.architecture=mobilenet_v1',
  '--config.model.width_multiplier=0.25',
  '--config.batch_size=16',
  '--config.eval_batch_size=120',
  '--config.warmup_epochs=0',
  '--config.lr_schedule=exponential',
  '--config.base_learning_rate=0.01',
  '--config.log_every_steps=2',
  '--config.checkpoint_every_steps=2',
  '--config.eval_every_epochs=1000',
]


def _launch_command(workdir, steps, *extra, grace=60):
  return [
    sys.executable,
    '-m',
    'mnv2_jax.launch',
    '--num_processes',
    '2',
    '--devices_per_process',
    '1',
    '--heartbeat_timeout',
    str(HEARTBEAT_SECONDS),
    '--grace_seconds',
    str(grace),
    '--',
    *TINY,
    f'--workdir={workdir}',
    f'--config.num_train_steps={steps}',
    *extra,
  ]


def _one_process_command(workdir, steps, *extra):
  return [
    sys.executable,
    '-m',
    'mnv2_jax.main',
    *TINY,
    f'--workdir={workdir}',
    f'--config.num_train_steps={steps}',
    *extra,
  ]


def _run(command, devices=None) -> str:
  env = dict(os.environ)
  if devices:
    env['JAX_NUM_CPU_DEVICES'] = str(devices)
  out = subprocess.run(
    command,
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
  return out.stdout


def _final(workdir) -> dict:
  with open(os.path.join(workdir, 'result.json')) as f:
    return json.load(f)['final']


def _assert_same_metrics(a: dict, b: dict, *, rtol: float) -> None:
  for split in ('validation', 'test'):
    assert a[split]['top1'] == b[split]['top1'], split
    np.testing.assert_allclose(a[split]['loss'], b[split]['loss'], rtol=rtol)


def _at_step(workdir: str, step: int, root) -> str:
  """A copy of `workdir` holding only the checkpoints up to `step`."""
  copy = str(root / f'{os.path.basename(workdir)}_at_{step}')
  if not os.path.isdir(copy):
    shutil.copytree(workdir, copy)
    for name in os.listdir(os.path.join(copy, 'checkpoints')):
      if name.isdigit() and int(name) > step:
        shutil.rmtree(os.path.join(copy, 'checkpoints', name))
  return copy


# A checkpoint every other step (a multi-process save takes about 2.5 s on 2
# cores), every step's loss logged.
EVERY_STEP = (
  '--config.log_every_steps=1',
  '--config.checkpoint_every_steps=2',
  '--config.keep_checkpoints=2',
)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """4 steps, a checkpoint after steps 2 and 4, by 2 processes and by 1."""
  root = tmp_path_factory.mktemp('multihost')
  two, one = str(root / 'two'), str(root / 'one')
  start = time.perf_counter()
  two_out = _run(_launch_command(two, 4, *EVERY_STEP))
  two_seconds = time.perf_counter() - start
  _run(_one_process_command(one, 4, *EVERY_STEP), devices=2)
  return {
    'root': root,
    'two': two,
    'one': one,
    'two_out': two_out,
    'two_seconds': two_seconds,
  }


def _train_losses(workdir: str) -> list[float]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  return [line['loss'] for line in lines if line['split'] == 'train']


def test_two_processes_train_bitwise_as_one_process_of_two_devices(runs):
  assert 'on 2 device(s), 2 host(s)' in runs['two_out']
  # Both processes ran and finished; only process 0 writes the metrics.
  assert '[process 1]' in runs['two_out']
  assert '[process 0] Wrote' in runs['two_out']
  # The same global batches, initial state and summation order (one device
  # per process): the runs are the same to the last bit, every step's loss
  # and the checkpoints of steps 2 and 4, but for the evaluation's sums (measured on the whole
  # quickstart: test loss 7e-8 relative, every array bitwise equal).
  assert _train_losses(runs['two']) == _train_losses(runs['one'])
  for step in (2, 4):
    _, two = checkpointing.read_variables(
      _at_step(runs['two'], step, runs['root'])
    )
    _, one = checkpointing.read_variables(
      _at_step(runs['one'], step, runs['root'])
    )
    for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(one), strict=True):
      np.testing.assert_array_equal(a, b)
  _assert_same_metrics(_final(runs['two']), _final(runs['one']), rtol=1e-6)


def test_checkpoints_restore_across_process_counts(runs):
  """A job resumed under another process layout (rescheduled on fewer
  hosts) restores the weights and the optimizer state and trains on to the
  uninterrupted run's result: the layouts train bitwise alike (the test
  above), so the resumed run equals both. (A 2-process job restoring its
  own checkpoint is the SIGTERM test's second command below; a 1-process
  checkpoint restored by 2 processes is not tested, for the suite's time.)"""
  root = runs['root']
  # 2 processes' checkpoint of step 2, resumed by 1 process of 2 devices.
  moved = _at_step(runs['two'], 2, root)
  out = _run(_one_process_command(moved, 4, *EVERY_STEP), devices=2)
  assert 'Resumed from step 2' in out, out[-3000:]
  assert _train_losses(moved) == _train_losses(runs['two'])
  _assert_same_metrics(_final(moved), _final(runs['two']), rtol=1e-5)
  _assert_same_metrics(_final(moved), _final(runs['one']), rtol=1e-5)


def _start(command) -> tuple[subprocess.Popen, list[int]]:
  launcher = subprocess.Popen(
    command,
    cwd=REPO_ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  first = launcher.stdout.readline()
  pids = [int(p) for p in re.findall(r'\d+', first.split('pids')[1])]
  return launcher, pids


def _read_until(launcher, pattern: str, lines: list[str]) -> None:
  for line in launcher.stdout:
    lines.append(line)
    if re.search(pattern, line):
      return
  raise AssertionError(f'{pattern!r} never came:\n' + ''.join(lines[-40:]))


def test_sigterm_saves_on_every_process_and_sigkill_ends_the_other(tmp_path):
  workdir = str(tmp_path / 'job')
  # No periodic checkpoints: only the preemption saves.
  command = _launch_command(
    workdir, 400, '--config.checkpoint_every_steps=1000', grace=300
  )
  launcher, pids = _start(command)
  lines = []
  _read_until(launcher, r'\[process 0\] step 2/400', lines)
  os.kill(pids[1], signal.SIGTERM)  # what a cluster scheduler sends
  rest, _ = launcher.communicate(timeout=300)
  out = ''.join(lines) + rest
  assert launcher.returncode == 75, out[-3000:]
  stopped = {
    int(m)
    for m in re.findall(r'\] Preempted at step (\d+): every process', out)
  }
  # Both processes stopped at one step, agreed between them, and saved it.
  assert len(stopped) == 1 and out.count('Preempted at step') == 2, out[-3000:]
  (step,) = stopped
  assert 2 < step < 400
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.all_steps() == [step]

  # The same command resumes; then one process is killed outright.
  launcher, pids = _start(command)
  lines = []
  _read_until(launcher, rf'Resumed from step {step}', lines)
  _read_until(launcher, r'\[process 0\] step \d+/400', lines)
  os.kill(pids[1], signal.SIGKILL)
  rest, _ = launcher.communicate(timeout=600)
  out = ''.join(lines) + rest
  (after,) = re.findall(
    r'\[launch\] process 0 ended \(([^)]*)\) ([\d.]+) s after process 1', out
  )
  # The survivor was ended by JAX's coordination service (an abort naming
  # the task that stopped sending heartbeats), not by the launcher's grace
  # period, within the bound.
  print(f'process 0 ended ({after[0]}) {after[1]} s after the SIGKILL')
  assert float(after[1]) < EXIT_BOUND_SECONDS, out[-3000:]
  assert 'killed by SIGKILL' in out and after[0] != 'exit status 0'
  assert 'heartbeat' in out.lower() or 'unavailable' in out.lower()
  assert launcher.returncode != 0
  # The last complete checkpoint, the preemption's, is intact: the next
  # command resumes from it, as the second one did above.
  assert checkpointing.create_manager(workdir, read_only=True).all_steps() == [
    step
  ]


# ------------------------------------------------------ per-host data


@pytest.fixture
def hosts(monkeypatch):
  """Makes the pipelines believe they run as process `i` of `n`."""

  def become(index: int, count: int) -> None:
    monkeypatch.setattr(jax, 'process_index', lambda: index)
    monkeypatch.setattr(jax, 'process_count', lambda: count)

  return become


@pytest.mark.parametrize('count', [2, 3])
def test_in_memory_training_shards_are_disjoint_and_make_the_global_batch(
  hosts, count
):
  per_host = 8
  hosts(0, 1)
  whole = list(
    itertools.islice(
      batch_format.shuffled_host_batches(1000, 0, per_host * count, 0, 'x'), 20
    )
  )
  shards = []
  for index in range(count):
    hosts(index, count)
    shards.append(
      list(
        itertools.islice(
          batch_format.shuffled_host_batches(1000, 0, per_host, 0, 'x'), 20
        )
      )
    )
  for step, (_, indices) in enumerate(whole):
    parts = [shards[i][step][1] for i in range(count)]
    assert len(set(np.concatenate(parts))) == per_host * count  # disjoint
    np.testing.assert_array_equal(np.concatenate(parts), indices)


@pytest.mark.parametrize('name', ['digits', 'cluttered_digits', 'scenes'])
def test_in_memory_evaluation_counts_every_example_once(
  hosts, small_scenes, name
):

  config = helpers.tiny_digits_config()
  config.dataset.name = name
  if name == 'scenes':
    config.task = 'segmentation'
    config.num_classes = 11
    config.image_size = 33
  seen, batches_per_host = [], []
  for index in range(3):  # 3 hosts: the split does not divide evenly
    hosts(index, 3)
    batches = list(datasets.eval_batches(config, per_host_batch_size=7))
    batches_per_host.append(len(batches))
    for batch in batches:
      for image in batch['image'][batch['mask']]:
        seen.append(hash(np.asarray(image).tobytes()))
  hosts(0, 1)
  total = datasets.dataset_info(config).num_eval_examples
  # Every host runs the same number of batches (no host waits in a
  # collective for one that has none), padded and masked.
  assert len(set(batches_per_host)) == 1
  assert len(seen) == total
  assert len(set(seen)) == total


def _write_coco(data_dir: str, splits: dict[str, int]) -> None:
  """coco/2017-format TFRecord files and metadata (image ids 1, 2, ...)."""
  import tensorflow as tf  # noqa: PLC0415 (heavy; this test only)
  import tensorflow_datasets as tfds  # noqa: PLC0415

  builder = tfds.builder('coco/2017', data_dir=data_dir)
  version = os.path.join(data_dir, 'coco', '2017', str(builder.version))
  os.makedirs(version)
  rng = np.random.default_rng(0)
  image_id = 0
  for split, count in splits.items():
    path = os.path.join(version, f'coco-{split}.tfrecord-00000-of-00001')
    with tf.io.TFRecordWriter(path) as writer:
      for _ in range(count):
        image_id += 1
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        writer.write(
          builder.info.features.serialize_example(
            {
              'image': tf.io.encode_jpeg(pixels).numpy(),
              'image/filename': f'{image_id}.jpg',
              'image/id': image_id,
              'objects': {
                'area': [100],
                'bbox': [np.asarray([0.1, 0.2, 0.6, 0.7], np.float32)],
                'id': [image_id],
                'is_crowd': [False],
                'label': [image_id % 80],
              },
            }
          )
        )
  tfds.folder_dataset.write_metadata(
    data_dir=version, features=builder.info.features, check_data=False
  )


def test_coco_evaluation_counts_every_image_once_across_hosts(hosts, tmp_path):

  data_dir = str(tmp_path / 'tfds')
  _write_coco(data_dir, {'train': 6, 'validation': 7})
  config = helpers.tiny_detection_config(eval_batch_size=4)
  config.dataset.name = 'coco/2017'
  config.dataset.data_dir = data_dir
  config.dataset.eval_split = 'validation'
  config.num_classes = 80
  ids, batch_counts = [], []
  for index in range(2):  # 7 images over 2 hosts: 4 and 3
    hosts(index, 2)
    batches = list(datasets.eval_batches(config, per_host_batch_size=2))
    batch_counts.append(len(batches))
    for batch in batches:
      ids += batch['image_id'][batch['mask']].tolist()
  assert batch_counts == [2, 2]  # the host with fewer pads and masks
  assert sorted(ids) == list(range(7, 14))  # the validation ids, once each
