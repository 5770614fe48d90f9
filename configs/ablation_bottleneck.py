r"""Figure 6a: linear vs ReLU6 bottleneck (paper §3.2, §6.4).

The paper's claim: a ReLU6 after the projection (a non-linear bottleneck)
instead of the linear one hurts by several percent (Figure 6a: ImageNet top-1
during training). This sweep trains both, 3 seeds each, and the report draws
the test-accuracy curves and the final table.

  python -m mnv2_jax.sweep --config configs/ablation_bottleneck.py \
      --workdir experiments/runs/ablation_bottleneck        # built-in proxy
  python -m mnv2_jax.sweep --config configs/ablation_bottleneck.py:imagenet \
      --workdir gs://bucket/fig6a --print_commands           # ImageNet

Built-in scale: configs/cluttered_digits.py (experiments/README.md has the
result and its seed spread).
"""

from mnv2_jax import configuration

ACTIVATIONS = ('linear', 'relu6')
SEEDS = (0, 1, 2)


def get_config(scale=None):
  return configuration.load_beside(__file__, 'scales.py', scale)


def get_sweep(scale=None):
  del scale  # the same points at every scale
  return [
    {'model.bottleneck_activation': activation, 'seed': seed}
    for activation in ACTIVATIONS
    for seed in SEEDS
  ]
