r"""Figure 5's ShuffleNet line on the built-in proxy (paper Figure 5 and
Table 4 compare MobileNetV2 with ShuffleNet v1, g = 3, at equal
multiply-adds).

The recipe and budget are configs/sweep_width_resolution.py's (the
cluttered digits, configs/peer_proxy.py), at 48 pixels, the
largest resolution of its MobileNetV2 points; g = 3 at the scales ShuffleNet
defines (0.5×, 1×, 1.5×, 2×), 3 seeds each. Nothing in the recipe is
changed for ShuffleNet.

  python -m mnv2_jax.sweep --config configs/sweep_shufflenet.py \
      --workdir experiments/runs/peers_shufflenet --jobs 2
  python -m mnv2_jax.sweep --config configs/sweep_shufflenet.py \
      --workdir experiments/runs/peers_shufflenet --report \
      --results_dir experiments/results/sweep_shufflenet
"""

from mnv2_jax import configuration

SCALES = (0.5, 1.0, 1.5, 2.0)  # models/shufflenet.py's SCALES
SEEDS = (0, 1, 2)


def get_config(scale=None):
  config = configuration.load_beside(__file__, 'peer_proxy.py', scale)
  config.model.architecture = 'shufflenet'
  config.model.shufflenet_groups = 3
  return config


def get_sweep(scale=None):
  del scale  # the built-in proxy only (get_config)
  return [
    {'model.width_multiplier': width, 'seed': seed}
    for width in SCALES
    for seed in SEEDS
  ]
