"""End-to-end training: metrics, checkpoints, resume, eval mode, divergence,
the ImageNet pipeline under mock data, and 1 vs 8 devices."""

import json
import os
import subprocess
import sys

import helpers
import jax
import numpy as np
import pytest

from mnv2_jax import configuration
from mnv2_jax.data import datasets
from mnv2_jax.training import checkpointing
from mnv2_jax.training import metric_writers
from mnv2_jax.training import optimization
from mnv2_jax.training import provenance
from mnv2_jax.training import trainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('trained'))
  results = trainer.train_and_evaluate(helpers.tiny_digits_config(), workdir)
  return workdir, results


def test_training_writes_metrics_checkpoints_and_events(trained_workdir):
  workdir, results = trained_workdir
  final = helpers.final_line(workdir)
  assert final['step'] == 4
  assert final['num_examples'] == 360  # every test digit exactly once
  assert 0.0 <= final['top1'] <= final['top5'] <= 1.0
  assert final['top1'] == pytest.approx(results['top1'])
  train_lines = [
    l for l in metric_writers.read_jsonl(workdir) if l['split'] == 'train'
  ]
  assert [l['step'] for l in train_lines] == [2, 4]
  for key in (
    'loss',
    'accuracy',
    'learning_rate',
    'images_per_second',
    'input_wait_fraction',
  ):
    assert key in train_lines[0]
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.all_steps() == [2, 4]
  # TensorBoard reads the scalars back, as metrics.jsonl has them.
  from tensorboard.backend.event_processing import event_accumulator

  events = event_accumulator.EventAccumulator(
    os.path.join(workdir, 'tensorboard')
  )
  events.Reload()
  assert [
    (e.step, pytest.approx(e.value)) for e in events.Scalars('train/loss')
  ] == [(l['step'], l['loss']) for l in train_lines]
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['model']['width_multiplier'] == helpers.TINY_WIDTH


def test_eval_mode_evaluates_the_latest_checkpoint(trained_workdir, tmp_path):
  workdir, results = trained_workdir
  record_path = os.path.join(workdir, 'result.json')
  with open(record_path) as f:
    training_record = f.read()
  evaluation_file = str(tmp_path / 'evaluation.json')
  evaluated = trainer.train_and_evaluate(
    helpers.tiny_digits_config(mode='eval'),
    workdir,
    command='evaluate',
    result_file=evaluation_file,
  )
  assert evaluated['top1'] == pytest.approx(results['top1'])
  assert evaluated['loss'] == pytest.approx(results['loss'], rel=1e-5)
  # The evaluation's record goes to --result_file; the training run's stays.
  with open(record_path) as f:
    assert f.read() == training_record
  with open(evaluation_file) as f:
    evaluation = json.load(f)
  assert evaluation['command'] == 'evaluate'
  assert evaluation['config']['mode'] == 'eval'
  assert evaluation['final']['test']['top1'] == pytest.approx(results['top1'])


def test_evaluation_record_holds_only_its_own_evaluations(
  trained_workdir, tmp_path
):
  """An evaluation without a test split records its validation figure only.
  The record used to take every evaluation at the last step of
  metrics.jsonl, so it carried the training run's test figure as its own
  (the DeepLab eval-scale checks showed one test mIoU for every scale)."""
  workdir, _ = trained_workdir
  evaluation_file = str(tmp_path / 'validation_only.json')
  evaluated = trainer.train_and_evaluate(
    helpers.tiny_digits_config(mode='eval', **{'dataset.test_split': ''}),
    workdir,
    result_file=evaluation_file,
  )
  with open(evaluation_file) as f:
    record = json.load(f)
  assert set(record['final']) == {'validation'}
  assert record['final']['validation'] == helpers.final_line(
    workdir, 'validation'
  )
  assert record['final']['validation']['top1'] == evaluated['top1']


def test_run_record_has_each_split_the_config_and_the_machine(
  trained_workdir,
):
  workdir, results = trained_workdir
  with open(os.path.join(workdir, 'result.json')) as f:
    record = json.load(f)
  # Chosen on validation, scored once on test: both, at the final step.
  assert set(record['final']) == {'validation', 'test'}
  assert record['final']['validation']['num_examples'] == 180
  assert record['final']['test'] == {
    **helpers.final_line(workdir),
    'top1': pytest.approx(results['top1']),
  }
  assert record['config']['model']['width_multiplier'] == helpers.TINY_WIDTH
  assert record['machine']['cpu_cores'] == os.cpu_count()
  # What decides a run's rounding besides the code: the CPU's vector
  # instruction sets and the XLA flags.
  assert set(record['machine']['cpu_features']) <= set(
    provenance.VECTOR_FEATURES
  )
  assert record['machine']['xla_flags'] == os.environ.get('XLA_FLAGS', '')
  assert record['versions']['jax'] == jax.__version__
  assert record['wall_seconds'] > 0


def test_learning_rate_schedule_is_the_paper_recipe():
  config = helpers.tiny_digits_config()
  config.base_learning_rate, config.base_batch_size = 0.045, 96
  config.batch_size = 192  # linear scaling: peak 0.09
  schedule = optimization.make_schedule(config, num_train_examples=192 * 10)
  assert schedule.steps_per_epoch == 10
  lr = optimization.learning_rate_fn(config, schedule)
  # x0.98 per epoch, staircase (paper §6.1).
  assert float(lr(0)) == pytest.approx(0.09)
  assert float(lr(9)) == pytest.approx(0.09)
  assert float(lr(10)) == pytest.approx(0.09 * 0.98)
  assert float(lr(35)) == pytest.approx(0.09 * 0.98**3)
  config.warmup_epochs, config.lr_schedule = 1.0, 'cosine'
  config.num_train_steps = 100
  lr = optimization.learning_rate_fn(
    config, optimization.make_schedule(config, 1920)
  )
  assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(0.09)
  assert float(lr(100)) == pytest.approx(0.0, abs=1e-7)
  # DeepLab's 'poly': peak x (1 - step / total)^0.9, after the warm-up.
  config.lr_schedule = 'poly'
  lr = optimization.learning_rate_fn(
    config, optimization.make_schedule(config, 1920)
  )
  assert float(lr(5)) == pytest.approx(0.045)
  assert float(lr(55)) == pytest.approx(0.09 * 0.5**0.9)
  config.warmup_epochs = 0.0
  lr = optimization.learning_rate_fn(
    config, optimization.make_schedule(config, 1920)
  )
  assert float(lr(0)) == pytest.approx(0.09)
  assert float(lr(25)) == pytest.approx(0.09 * 0.75**0.9)


def test_release_recipe_is_the_tf_slim_readme_one():
  """configs/imagenet_mnv2_release.py (and imagenet_mnv2_140.py, which
  loads it): TF-slim's MobileNet README flags, where the paper config keeps
  §6.1's decay every epoch."""
  paper = helpers.config_file('imagenet_mnv2')
  release = helpers.config_file('imagenet_mnv2_release')
  wide = helpers.config_file('imagenet_mnv2_140')
  assert (paper.lr_decay_epochs, paper.label_smoothing, paper.ema_decay) == (
    1.0,
    0.0,
    0.0,
  )
  for config in (release, wide):
    configuration.validate(config)
    assert config.lr_decay_rate == 0.98 and config.lr_decay_epochs == 2.5
    assert (config.label_smoothing, config.ema_decay) == (0.1, 0.9999)
    assert config.num_epochs == 420.0  # 700K steps of 8 x 96 images
    # 0.045 x NUM_GPUS at 96 images per GPU: 0.045 per 96 images.
    assert (config.base_learning_rate, config.base_batch_size) == (0.045, 96)
  assert wide.model.width_multiplier == 1.4
  assert release.model.width_multiplier == 1.0
  # Staircase x0.98 every 2.5 epochs of 1,281,167 images at batch 1536.
  schedule = optimization.make_schedule(release, 1_281_167)
  lr = optimization.learning_rate_fn(release, schedule)
  peak = 0.045 * 1536 / 96
  decay_steps = int(2.5 * schedule.steps_per_epoch)
  assert float(lr(decay_steps - 1)) == pytest.approx(peak)
  assert float(lr(decay_steps)) == pytest.approx(peak * 0.98)


def test_weight_decay_skips_depthwise_batch_norm_and_biases():
  from mnv2_jax.models import mobilenet_v2

  params = jax.eval_shape(
    mobilenet_v2.MobileNetV2(num_classes=10, width_multiplier=0.35).init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32),
  )['params']
  mask = optimization.weight_decay_mask(params)
  assert mask['layer_3']['expand']['conv']['kernel']
  assert mask['layer_3']['project']['conv']['kernel']
  assert mask['classifier']['kernel']
  assert not mask['layer_3']['depthwise']['conv']['kernel']
  assert not mask['layer_3']['expand']['bn']['scale']
  assert not mask['classifier']['bias']
  # TF's l2_regularizer: weight_decay * sum(w^2) / 2.
  tree = {'a': {'kernel': np.full((2, 2), 3.0)}, 'b': {'bias': np.ones(2)}}
  penalty = optimization.l2_penalty(tree, optimization.weight_decay_mask(tree))
  assert float(penalty) == pytest.approx(0.5 * 4 * 9.0)


def test_ema_decay_warms_up_like_tensorflow():
  # min(decay, (1 + n) / (10 + n)): 0.1 at step 0, the full decay later.
  assert float(optimization.ema_decay_at(np.int32(0), 0.9999)) == pytest.approx(
    0.1
  )
  assert float(
    optimization.ema_decay_at(np.int32(10**6), 0.9999)
  ) == pytest.approx(0.9999)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
  tmp_path, monkeypatch
):
  workdir = str(tmp_path)
  real_batches = datasets.train_batches

  def poisoned_from_step_three(*args, **kwargs):
    for step, batch in enumerate(real_batches(*args, **kwargs), start=1):
      if step >= 3:
        batch = dict(batch, image=np.full_like(batch['image'], np.nan))
      yield batch

  monkeypatch.setattr(datasets, 'train_batches', poisoned_from_step_three)
  config = helpers.tiny_digits_config(
    checkpoint_every_steps=1, log_every_steps=100
  )
  with pytest.raises(trainer.TrainingDivergedError, match='nan at step 3'):
    trainer.train_and_evaluate(config, workdir)
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.latest_step() == 2
  run = trainer.Trainer(config)
  state = checkpointing.restore(manager, run.abstract_state)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


def test_corrupt_checkpoint_gives_a_clear_error_and_deletes_nothing(
  trained_workdir, tmp_path
):
  import shutil

  workdir = str(tmp_path / 'copy')
  shutil.copytree(trained_workdir[0], workdir)
  step_dir = os.path.join(workdir, 'checkpoints', '4')
  for root, _, files in os.walk(step_dir):
    for name in files:
      if name != '_CHECKPOINT_METADATA':
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'garbage')
  with pytest.raises(
    ValueError, match='Could not restore the checkpoint of step 4'
  ):
    trainer.train_and_evaluate(helpers.tiny_digits_config(mode='eval'), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']


@pytest.mark.parametrize(
  'field,value,message',
  [
    ('model.width_multiplier', 0.0, 'model.width_multiplier=0.0 is invalid'),
    ('model.width_multiplier', -1.0, 'number > 0'),
    ('model.output_stride', 12, r'allowed values are \[8, 16, 32\]'),
    ('image_size', 16, 'image_size=16 is invalid: it must be >= 32'),
    ('model.residual', 'dense', "'bottleneck', 'expansion', 'none'"),
    ('model.bottleneck_activation', 'relu', "'linear', 'relu6'"),
    ('num_classes', 1000, "dataset 'digits' has 10 classes"),
    ('model.expansion_ratio', 0.5, 'number >= 1'),
    ('dataset.name', 'mnist', "'digits', 'cluttered_digits', 'imagenet2012'"),
    ('inference_microbatch', -2, '-1 \\(auto\\), 0 \\(whole batch\\)'),
  ],
)
def test_config_errors_name_the_field_and_the_fix(field, value, message):
  # MobileNetV2's own options are checked on MobileNetV2.
  config = helpers.tiny_digits_config(**{'model.architecture': 'mobilenet_v2'})
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=message) as error:
    configuration.validate(config)
  assert f'--config.{field}=' in str(error.value)


def test_unknown_config_key_fails_at_parse_time(capsys):
  from mnv2_jax import main as main_cli

  arguments = [
    f'--config={REPO_ROOT}/configs/quickstart.py',
    '--workdir=/tmp/unused',
  ]
  with pytest.raises(SystemExit) as exit_status:
    main_cli.parse_arguments([*arguments, '--config.model.width_multipler=0.5'])
  assert exit_status.value.code == 2
  assert 'width_multipler: no such config field' in capsys.readouterr().err
  # Both spellings of an override, as absl took them, typed by the field.
  config, _ = main_cli.parse_arguments(
    [*arguments, '--config.model.width_multiplier', '0.5', '--config.seed=3']
  )
  assert config.model.width_multiplier == 0.5 and config.seed == 3
  for bad in ('--config.seed=1.5', '--config.model.width_multiplier=wide'):
    with pytest.raises(SystemExit):
      main_cli.parse_arguments([*arguments, bad])
    assert 'expected' in capsys.readouterr().err


def test_missing_imagenet_directory_fails_before_training(tmp_path):
  config = helpers.tiny_digits_config()
  config.dataset.name = 'imagenet2012'
  config.num_classes = 1000
  config.dataset.data_dir = str(tmp_path / 'no_such_dir')
  with pytest.raises(ValueError, match='no_such_dir'):
    trainer.Trainer(config)
  assert not os.path.exists(tmp_path / 'no_such_dir')


def test_one_imagenet_train_step_under_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  config = helpers.tiny_digits_config(
    num_train_steps=1, log_every_steps=1, checkpoint_every_steps=1
  )
  config.dataset.name = 'imagenet2012'
  config.dataset.eval_split = 'validation'
  config.num_classes = 1000
  config.batch_size = 4
  config.eval_batch_size = 4
  config.dataset.shuffle_buffer_size = 8
  # The released recipe's extras (docs/paper.md): label smoothing and a moving
  # average of the weights, checkpointed and evaluated alongside.
  config.label_smoothing = 0.1
  config.ema_decay = 0.9999
  with tfds.testing.mock_data(
    num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    results = trainer.train_and_evaluate(config, str(tmp_path))
  final = helpers.final_line(str(tmp_path), 'validation')
  assert final['step'] == 1 and final['num_examples'] == 6
  assert np.isfinite(results['loss']) and np.isfinite(results['ema_loss'])
  assert 0.0 <= final['ema_top1'] <= final['ema_top5'] <= 1.0
  train_line = helpers.final_line(str(tmp_path), 'train')
  assert np.isfinite(train_line['loss'])


_ONE_VS_EIGHT = """
import jax, numpy as np
from mnv2_jax.data import datasets
from mnv2_jax.training import trainer
import helpers
assert jax.device_count() == 8
config = helpers.tiny_digits_config()
results = []
initial = None
for devices in (jax.devices()[:1], jax.devices()):
  run = trainer.Trainer(config, devices=devices)
  # One random state, drawn on the host (compiling init was a third of this
  # test's time); the 8-device run starts from the same state, replicated.
  if initial is None:
    rng = np.random.default_rng(0)
    initial = jax.tree.map(
        lambda s: np.zeros(s.shape, s.dtype)
        if np.issubdtype(s.dtype, np.integer)
        else (rng.uniform(0.5, 1.5, s.shape)
              / np.sqrt(max(1, np.prod(s.shape[:-1])))).astype(s.dtype),
        run.abstract_state)
  state = jax.device_put(initial, run.replicated)
  batch = next(datasets.train_batches(config, start_step=0,
                                            per_host_batch_size=16))
  state, metrics = run.train_step(
      state, trainer.global_batch(batch, run.data_sharding), jax.random.key(0))
  results.append((float(metrics['loss']),
                  jax.device_get((state.params, state.batch_stats))))
(loss_1, state_1), (loss_8, state_8) = results
np.testing.assert_allclose(loss_8, loss_1, rtol=1e-5)
# Compare the step's updates, not the states (mostly the shared initial
# state): each leaf's change on 8 devices within 1e-4 of its change on 1
# (relative L2; reductions over the batch run in another order). Leaves whose
# update is rounding noise (a bias before a BatchNorm, whose gradient is 0 in
# exact arithmetic) are measured against the largest update instead.
initial_tree = (initial.params, initial.batch_stats)
update_1 = jax.tree.map(np.subtract, state_1, initial_tree)
update_8 = jax.tree.map(np.subtract, state_8, initial_tree)
largest = max(float(np.linalg.norm(u)) for u in jax.tree.leaves(update_1))
worst = 0.0
for u1, u8 in zip(jax.tree.leaves(update_1), jax.tree.leaves(update_8)):
  scale = max(float(np.linalg.norm(u1)), 1e-4 * largest)
  worst = max(worst, float(np.linalg.norm(u8 - u1)) / scale)
assert largest > 0 and worst < 1e-4, worst  # measured 1.1e-6
print('ONE_VS_EIGHT_OK', loss_1, loss_8, worst)
"""


def test_one_and_eight_devices_agree():
  """A training step of the same global batch on 1 and on 8 (virtual CPU)
  devices gives the same loss, parameters and BatchNorm statistics up to float
  rounding: BatchNorm statistics are over the global batch on any mesh."""
  flags = os.environ.get('XLA_FLAGS', '')  # conftest's -O0 kept
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count=8',
    # The suite's cache: the 1-device step is the other tests' one.
    JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5',
    # The repository and tests/ (helpers), as conftest and pytest give them.
    PYTHONPATH=os.pathsep.join([REPO_ROOT, os.path.join(REPO_ROOT, 'tests')]),
  )
  run = subprocess.run(
    [sys.executable, '-c', _ONE_VS_EIGHT],
    env=env,
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'ONE_VS_EIGHT_OK' in run.stdout
  print(run.stdout.strip().splitlines()[-1])


def test_prefetcher_takes_out_and_adds_up_the_repair_counts():
  batches = iter(
    [
      {
        'image': np.zeros((2, 1)),
        'skipped_examples': np.int64(2),
        'dropped_boxes': np.array([1, 0]),
      },
      {
        'image': np.ones((2, 1)),
        'skipped_examples': np.int64(1),
        'clipped_boxes': np.array([0, 3]),
      },
    ]
  )
  seen = []
  prefetcher = trainer.Prefetcher(batches, lambda b: seen.append(b) or b)
  next(prefetcher)
  next(prefetcher)
  prefetcher.close()
  assert [sorted(b) for b in seen] == [['image'], ['image']]
  assert prefetcher.repair_counts == {
    'skipped_examples': 3,
    'clipped_boxes': 3,
    'dropped_boxes': 1,
  }


def test_main_rejects_a_bad_value_in_one_line_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'run'
  run = subprocess.run(
    [
      sys.executable,
      '-m',
      'mnv2_jax.main',
      '--config',
      os.path.join(REPO_ROOT, 'configs', 'quickstart.py'),
      '--workdir',
      str(workdir),
      '--config.optimizer=adamw',
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
  )
  assert run.returncode == 2
  # The project's message alone, naming the field and the fix: no traceback.
  assert run.stderr.strip().splitlines() == [
    "error: config.optimizer='adamw' is invalid: allowed values are "
    "['rmsprop', 'sgd', 'adam']. Fix it in the config file or with "
    '--config.optimizer=rmsprop.'
  ]
  assert not workdir.exists()


@pytest.mark.parametrize(
  'task', ['classification', 'detection', 'segmentation']
)
def test_every_task_implements_the_interface(task, small_scenes):
  from mnv2_jax import tasks  # noqa: PLC0415

  del small_scenes
  config = configuration.base_config()
  config.task = task
  config.dataset.name = 'digits' if task == 'classification' else 'scenes'
  config.num_classes = {'classification': 10, 'detection': 10}.get(task, 11)
  config.image_size = 64
  built = tasks.build_task(config)
  assert isinstance(built, tasks.interface.Task)
  assert built.name == task
  assert isinstance(built.accumulator(), tasks.interface.Accumulator)
