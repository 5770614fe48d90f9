r"""MobileNetV2's Figure 5 line at 48 pixels, widened to span its peers'
multiply-adds (paper Figure 5 and Table 4 compare at equal cost).

configs/sweep_width_resolution.py ran α = 0.35, 0.5 and 1.0 at 48 pixels
(3.2M to 16.6M multiply-adds). MobileNetV1 at α = 1 (28.9M) and the largest
ShuffleNet and NASNet-A points lie above that range, so this adds the
paper's other two widths, α = 0.75 and 1.4, with the same recipe
(configs/peer_proxy.py, which is configs/cluttered_digits.py's) and seeds.
experiments/analyse.py's `peers` study reads both sweeps' results.

  python -m mnv2_jax.sweep --config configs/sweep_mobilenet_v2_48px.py \
      --workdir experiments/runs/mobilenet_v2_48px --jobs 2
  python -m mnv2_jax.sweep --config configs/sweep_mobilenet_v2_48px.py \
      --workdir experiments/runs/mobilenet_v2_48px --report \
      --results_dir experiments/results/sweep_mobilenet_v2_48px
"""

from mnv2_jax import configuration

WIDTHS = (0.75, 1.4)  # 0.35, 0.5 and 1.0: configs/sweep_width_resolution.py
SEEDS = (0, 1, 2)


def get_config(scale=None):
  config = configuration.load_beside(__file__, 'peer_proxy.py', scale)
  config.model.architecture = 'mobilenet_v2'
  return config


def get_sweep(scale=None):
  del scale  # the built-in proxy only (get_config)
  return [
    {'model.width_multiplier': width, 'seed': seed}
    for width in WIDTHS
    for seed in SEEDS
  ]
