r"""Mobile DeepLabv3, MNetV2* at output stride 16 without ASPP (paper Table 7).

Paper: 75.32 mIoU on VOC 2012 val (single scale), 2.11M parameters, 2.75B
multiply-adds. The backbone ends at the 320-channel output of the last
bottleneck; the head is a 1x1 branch and an image-pooling branch of 256
channels, a 1x1 projection to 256 and the classifier (paper §6.3).

DeepLab's recipe: the 10,582-image train_aug set (VOC train + SBD), 513x513
crops of images rescaled by 0.5-2.0 and flipped, batch 16, momentum SGD with
lr 0.007 and the 'poly' schedule (power 0.9) for 30k steps, weight decay 4e-5,
BatchNorm decay 0.9997; the backbone initialised from an ImageNet classifier
(--config.init_from=<classification workdir>). The paper's models were also
pretrained on COCO, which this codebase does not do: expect a few points less
than Table 7 without it (not measured here: no VOC on the development
machine).

  python -m mnv2_jax.voc --manual_dir <dir with VOCdevkit> --data_dir <data_dir>
  python -m mnv2_jax.main --config configs/deeplab_mnv2_voc_os16.py \
      --workdir <dir> --config.dataset.data_dir=<data_dir> \
      --config.init_from=<ImageNet classification workdir>
  python -m mnv2_jax.stats --config configs/deeplab_mnv2_voc_os16.py

Variants: deeplab_mnv2_voc_os8.py, ..._os16_aspp.py, ..._os8_aspp.py; Table
7's MF rows are --config.segmentation.multi_scale_eval=True at evaluation.
"""

from mnv2_jax import configuration


def get_config():
  # The other three rows' configs load this one and change output_stride
  # and aspp.
  config = configuration.base_config()
  config.task = 'segmentation'
  config.dataset.name = 'voc2012'
  config.dataset.train_split = 'train_aug'
  config.dataset.eval_split = 'validation'
  config.dataset.shuffle_buffer_size = 2_048
  config.num_classes = 21
  config.image_size = 513  # DeepLab's crop; also pads every val image

  config.model.width_multiplier = 1.0
  config.model.output_stride = 16
  config.model.dropout_rate = 0.1  # DeepLab: keep probability 0.9
  config.model.batch_norm_momentum = 0.9997
  config.segmentation.aspp = False
  config.segmentation.min_scale_factor = 0.5
  config.segmentation.max_scale_factor = 2.0
  config.segmentation.flip = True

  config.num_train_steps = 30_000
  config.batch_size = 16
  config.eval_batch_size = 8
  config.optimizer = 'sgd'
  config.momentum = 0.9
  config.base_learning_rate = 0.007
  config.base_batch_size = 16
  config.lr_schedule = 'poly'
  config.warmup_epochs = 0.0
  config.weight_decay = 4e-5
  config.ema_decay = 0.0

  config.log_every_steps = 100
  config.eval_every_epochs = 10.0
  config.checkpoint_every_steps = 1_000
  return config
