r"""MobileNetV2 (1.4) on ImageNet: the wider model of paper Table 4.

Reproduces: Table 4, "MobileNetV2 (1.4)": 74.7% top-1, 6.9M parameters, 585M
multiply-adds at 224x224 (release: 75.0 / 92.5, 6.06M, 582M). Released recipe
(imagenet_mnv2_release.py) at α = 1.4; the last 1x1 conv becomes 1792
channels (round(1280·α)).

  python -m mnv2_jax.main --config configs/imagenet_mnv2_140.py \
      --config.dataset.data_dir=/path/to/tensorflow_datasets --workdir /tmp/mnv2_140

Expected: ema_top1 about 0.747 (not yet measured with this code). Cost: about
2x imagenet_mnv2_release.py (582M vs 300M multiply-adds per image).
"""

from mnv2_jax import configuration


def get_config():
  config = configuration.load_beside(__file__, 'imagenet_mnv2_release.py')
  config.model.width_multiplier = 1.4
  return config
