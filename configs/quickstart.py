r"""Quickstart: MobileNetV2 on scikit-learn's handwritten digits, on a laptop CPU.

Not a paper row: a few-minute check that the whole pipeline (model, training,
evaluation, checkpoints, metrics) works on real pixels with no download.

  python -m mnv2_jax.main --config configs/quickstart.py --workdir /tmp/mnv2_quickstart

Expected: >= 97% test top-1 on the 360 held-out digits (README has the
measured figure). Cost: a few minutes on 2 CPU cores.
"""

from mnv2_jax import configuration


def get_config():
  config = configuration.base_config()
  config.dataset.name = 'digits'
  config.dataset.eval_split = 'validation'  # settings are chosen on it
  config.dataset.test_split = 'test'  # scored once, at the end
  config.num_classes = 10
  config.image_size = 32  # digits are 8x8; 32 leaves a 1x1 final feature map

  config.model.width_multiplier = 0.5
  config.model.dropout_rate = 0.0
  # Few steps: a faster BatchNorm average than the ImageNet 0.997.
  config.model.batch_norm_momentum = 0.9

  config.num_epochs = 50.0
  config.batch_size = 64
  config.eval_batch_size = 120
  config.base_learning_rate = 0.045
  config.base_batch_size = 96
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 1.0
  config.ema_decay = 0.0

  config.log_every_steps = 50
  config.eval_every_epochs = 10.0
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 2
  return config
