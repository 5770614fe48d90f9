r"""MobileNetV2 on CIFAR-10 (TFDS 'cifar10'): a mid-sized set between the
built-in proxy and ImageNet, for users with network access. Not a paper row.

The network of Table 2 at output stride 8 (the last blocks atrous, as in the
paper's segmentation backbone, §6.3, so a 32x32 image keeps 4x4 maps instead
of 1x1; the parameters are those of the stride-32 network), pad-and-crop and
flip augmentation, the paper's RMSProp at 0.045 per 96 images with a cosine
decay over 200 epochs. Not measured with this code: no number is claimed.

  tfds build cifar10 --data_dir ~/tensorflow_datasets        # once, downloads
  python -m mnv2_jax.main --config configs/cifar10_mnv2.py \
      --config.dataset.data_dir=$HOME/tensorflow_datasets --workdir /tmp/cifar10

The experiment configs run on it as `--config configs/ablation_bottleneck.py:cifar10`.
"""

from mnv2_jax import configuration


def get_config():
  config = configuration.base_config()
  config.dataset.name = 'cifar10'
  config.dataset.eval_split = 'test'
  config.num_classes = 10
  config.image_size = 32
  # A 32x32 input leaves a 1x1 map after Table 2's five stride-2 stages; at
  # output stride 8 the last 10 blocks run atrous (same parameters, paper
  # §6.3) on 4x4 maps instead.
  config.model.output_stride = 8
  config.preprocessing = 'cifar'  # pad 4, random 32x32 crop, flip
  config.model.batch_norm_momentum = 0.99
  config.num_epochs = 200.0
  config.batch_size = 128
  config.eval_batch_size = 500
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 2.0
  config.eval_every_epochs = 10.0
  config.checkpoint_every_steps = 2000
  return config
