r"""Figure 6b: where the shortcut goes (paper §3.3, §6.4).

The paper's claim: the shortcut between the thin bottlenecks (the design)
beats a shortcut between the expanded tensors, which beats no residual at all
(Figure 6b: ImageNet top-1 during training). model.residual = 'bottleneck' |
'expansion' | 'none' (see model.expansion_shortcut_layers for where the
expansion shortcut joins); 3 seeds each.

  python -m mnv2_jax.sweep --config configs/ablation_shortcut.py \
      --workdir experiments/runs/ablation_shortcut          # built-in proxy
  python -m mnv2_jax.sweep --config configs/ablation_shortcut.py:imagenet \
      --workdir gs://bucket/fig6b --print_commands           # ImageNet

Built-in scale: configs/cluttered_digits.py (experiments/README.md has the
result and its seed spread).
"""

from mnv2_jax import configuration

RESIDUALS = ('bottleneck', 'expansion', 'none')
SEEDS = (0, 1, 2)


def get_config(scale=None):
  return configuration.load_beside(__file__, 'scales.py', scale)


def get_sweep(scale=None):
  del scale
  return [
    {'model.residual': residual, 'seed': seed}
    for residual in RESIDUALS
    for seed in SEEDS
  ]
