r"""MobileNetV2 on the built-in cluttered digits: the proxy task of the sweeps.

Not a paper row: the paper's network (linear bottlenecks, t = 6, RMSProp, BN)
at α = 0.5 on a set hard enough to separate the ablations of §4 and Figure 6
on a CPU (mnv2_jax/cluttered_digits.py: rotated, faded digits anywhere on crops of
scikit-image's photos, with distractors and noise; 10,000 train and 2,000
test images at 48x48, no download). The experiment configs
(configs/sweep_*.py, configs/ablation_*.py) run variations of this one at
their built-in scale.

  python -m mnv2_jax.main --config configs/cluttered_digits.py --workdir /tmp/cluttered

Calibrated on 2026-11-26 on a 2-core CPU: 8 epochs, ~3.5 minutes a run; test
top-1 86.9%, 88.3% and 86.5% for seeds 0, 1 and 2 (the linear points of
configs/ablation_bottleneck.py). At 32x32 the same set had a learning
plateau of random length (experiments/README.md).
"""

from mnv2_jax import configuration


def get_config():
  return configuration.cluttered_digits_config()
