r"""Figure 5's NASNet-A line on the built-in proxy (paper Figure 5 and
Table 4 compare MobileNetV2 with NASNet-A at equal multiply-adds).

The recipe and budget are configs/sweep_width_resolution.py's (the
cluttered digits, configs/peer_proxy.py), at 48 pixels, the
largest resolution of its MobileNetV2 points. NASNet-A Mobile's layout (4
cells per stack) at four filter counts, 3 seeds each: 12, 20 and 32
filters give 3.9M, 8.1M and 17.6M multiply-adds at 48 pixels
(`python -m mnv2_jax.stats`), spanning MobileNetV2's points there (3.2M at
α = 0.35 to 16.6M at α = 1); 44 filters is Table 4's NASNet-A Mobile (4 @
1056), 31.0M here, against MobileNetV2 (1.4)'s 32.2M
(configs/sweep_mobilenet_v2_48px.py). Nothing in the recipe is changed for
NASNet-A.

  python -m mnv2_jax.sweep --config configs/sweep_nasnet.py \
      --workdir experiments/runs/peers_nasnet --jobs 2
  python -m mnv2_jax.sweep --config configs/sweep_nasnet.py \
      --workdir experiments/runs/peers_nasnet --report \
      --results_dir experiments/results/sweep_nasnet
"""

from mnv2_jax import configuration

FILTERS = (12, 20, 32, 44)  # 44: Table 4's 4 @ 1056
CELLS_PER_STACK = 4  # NASNet-A Mobile
SEEDS = (0, 1, 2)


def get_config(scale=None):
  config = configuration.load_beside(__file__, 'peer_proxy.py', scale)
  config.model.architecture = 'nasnet_a'
  config.model.width_multiplier = 1.0
  config.model.nasnet_cells_per_stack = CELLS_PER_STACK
  return config


def get_sweep(scale=None):
  del scale  # the built-in proxy only (get_config)
  return [
    {'model.nasnet_filters': filters, 'seed': seed}
    for filters in FILTERS
    for seed in SEEDS
  ]
