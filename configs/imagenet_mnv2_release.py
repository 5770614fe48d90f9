r"""MobileNetV2 on ImageNet with the released 72.0% recipe (TF-slim checkpoint).

Reproduces: the TF-slim release, α = 1.0, 224x224: 71.8 / 91.0 top-1 / top-5
(the TF-slim release; docs/paper.md), evaluated on the exponential moving average of the weights.
The paper recipe (imagenet_mnv2.py) plus label smoothing 0.1 and a moving
average of the weights with decay 0.9999 (with TF's num_updates warm-up),
evaluated alongside the raw weights (metrics ema_top1/ema_top5).

  python -m mnv2_jax.main --config configs/imagenet_mnv2_release.py \
      --config.dataset.data_dir=/path/to/tensorflow_datasets --workdir /tmp/mnv2_release

Expected: ema_top1 about 0.72 (not yet measured with this code). Cost: as
imagenet_mnv2.py (several GPU-days).
"""

from mnv2_jax import configuration


def get_config():
  config = configuration.load_beside(__file__, 'imagenet_mnv2.py')
  # The released recipe adds:
  config.label_smoothing = 0.1
  config.ema_decay = 0.9999
  return config
