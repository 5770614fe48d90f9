r"""MobileNetV2 on Imagenette (TFDS 'imagenette/160px-v2': 10 easy ImageNet
classes, about 13,000 images): ImageNet's images at a scale one GPU trains in
hours, for users with network access. Not a paper row.

The paper's network and recipe (RMSProp, 0.045 per 96 images, Inception
crops) at 160x160, one of the release's resolutions, with a cosine decay over
150 epochs. Not measured with this code: no number is claimed.

  tfds build imagenette/160px-v2 --data_dir ~/tensorflow_datasets   # once
  python -m mnv2_jax.main --config configs/imagenette_mnv2.py \
      --config.dataset.data_dir=$HOME/tensorflow_datasets --workdir /tmp/imagenette

The experiment configs run on it as `--config configs/ablation_bottleneck.py:imagenette`.
"""

from mnv2_jax import configuration


def get_config():
  return configuration.imagenette_config()
