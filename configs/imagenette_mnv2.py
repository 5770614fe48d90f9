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
  config = configuration.base_config()
  config.dataset.name = 'imagenette/160px-v2'
  config.num_classes = 10
  config.image_size = 160
  config.model.batch_norm_momentum = 0.99
  config.num_epochs = 150.0
  config.batch_size = 128
  config.eval_batch_size = 500
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 2.0
  config.eval_every_epochs = 5.0
  config.checkpoint_every_steps = 1000
  return config
