r"""Figure 5's MobileNetV1 line on the built-in proxy (paper Figure 5 and
Table 4 compare MobileNetV2 with MobileNetV1 at equal multiply-adds).

The recipe and budget are configs/sweep_width_resolution.py's (the
cluttered digits, configs/peer_proxy.py), at 48 pixels, the
largest resolution of its MobileNetV2 points; α ∈ {0.25, 0.5, 0.75, 1.0},
3 seeds each. Nothing in the recipe is changed for MobileNetV1.

  python -m mnv2_jax.sweep --config configs/sweep_mobilenet_v1.py \
      --workdir experiments/runs/peers_mobilenet_v1 --jobs 2
  python -m mnv2_jax.sweep --config configs/sweep_mobilenet_v1.py \
      --workdir experiments/runs/peers_mobilenet_v1 --report \
      --results_dir experiments/results/sweep_mobilenet_v1
"""

from mnv2_jax import configuration

WIDTHS = (0.25, 0.5, 0.75, 1.0)
SEEDS = (0, 1, 2)


def get_config(scale=None):
  config = configuration.load_beside(__file__, 'peer_proxy.py', scale)
  config.model.architecture = 'mobilenet_v1'
  return config


def get_sweep(scale=None):
  del scale  # the built-in proxy only (get_config)
  return [
    {'model.width_multiplier': width, 'seed': seed}
    for width in WIDTHS
    for seed in SEEDS
  ]
