r"""Figure 5: accuracy against multiply-adds over width multiplier and
resolution (paper §6.1, Figure 5).

ImageNet scale: the release's grid, α ∈ {0.35, 0.5, 0.75, 1.0, 1.4} x
resolution ∈ {96, 128, 160, 192, 224}, one seed each (the frontier plot draws
the 22 released checkpoints beside the runs). Built-in scale: α ∈ {0.35, 0.5,
1.0} x the cluttered digits at 32, 40 and 48 pixels, 3 seeds each (32 is the
smallest input the network takes).

  python -m mnv2_jax.sweep --config configs/sweep_width_resolution.py \
      --workdir experiments/runs/width_resolution           # built-in proxy
  python -m mnv2_jax.sweep --config configs/sweep_width_resolution.py:imagenet \
      --workdir gs://bucket/fig5 --print_commands            # ImageNet
"""

from mnv2_jax import configuration

GRID = {
  'builtin': dict(
    widths=(0.35, 0.5, 1.0), resolutions=(32, 40, 48), seeds=(0, 1, 2)
  ),
  'cifar10': dict(
    widths=(0.35, 0.5, 1.0), resolutions=(32, 40, 48), seeds=(0, 1, 2)
  ),
  'imagenette': dict(
    widths=(0.35, 0.5, 1.0), resolutions=(96, 128, 160), seeds=(0,)
  ),
  'imagenet': dict(
    widths=(0.35, 0.5, 0.75, 1.0, 1.4),
    resolutions=(96, 128, 160, 192, 224),
    seeds=(0,),
  ),
}


def get_config(scale=None):
  return configuration.load_beside(__file__, 'scales.py', scale)


def get_sweep(scale=None):
  grid = GRID[scale or 'builtin']
  return [
    {'model.width_multiplier': width, 'image_size': size, 'seed': seed}
    for width in grid['widths']
    for size in grid['resolutions']
    for seed in grid['seeds']
  ]
