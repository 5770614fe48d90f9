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
  return configuration.cifar10_config()
