r"""Mobile DeepLabv3 quickstart: MobileNetV2 + DeepLabv3 on the built-in scenes,
on a CPU.

Not a paper row: the segmentation pipeline of paper §6.3 (atrous backbone at
output stride 8, the reduced head of MNetV2*, cross-entropy ignoring 255,
mIoU from the confusion matrix of the whole split) trained end to end on real
shipped pixels, no download: scikit-learn digits pasted on crops of
scikit-image's photos (mnv2_jax/scenes.py); 11 classes (photo + 10 digits),
the anti-aliased rim of each digit ignored.

  python -m mnv2_jax.main --config configs/deeplab_quickstart.py --workdir /tmp/deeplab_quickstart

Expected: mIoU >= 0.75 on the 200 test scenes, background included (README
has the measured figures and time).
"""

from mnv2_jax import configuration


def get_config():
  config = configuration.base_config()
  config.task = 'segmentation'
  config.dataset.name = 'scenes'
  config.dataset.eval_split = 'test'
  config.num_classes = 11  # photo + 10 digits
  # DeepLab's crops are k·stride + 1 pixels (513 = 32·16 + 1): corners align.
  config.image_size = 161

  config.model.width_multiplier = 0.5
  config.model.output_stride = 8
  config.model.dropout_rate = 0.1  # DeepLab: keep probability 0.9
  config.model.batch_norm_momentum = 0.9  # few steps
  config.segmentation.aspp = False
  config.segmentation.flip = False  # a mirrored digit is another glyph
  config.segmentation.min_scale_factor = 0.75
  config.segmentation.max_scale_factor = 1.5

  config.num_epochs = 8.0  # ~20 minutes on 2 cores (13 images/s)
  config.batch_size = 16
  config.eval_batch_size = 50
  # DeepLab trains with momentum SGD, lr 0.007 ('poly' decay) at batch 8-16;
  # a run of minutes from scratch uses RMSProp as the SSDLite quickstart
  # does, at its learning rate (the classifier's 0.045 per 96 left the loss
  # at the class prior for two epochs).
  config.base_learning_rate = 0.06
  config.base_batch_size = 24
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 1.0
  config.ema_decay = 0.0

  config.log_every_steps = 50
  config.eval_every_epochs = 2.0
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  return config
