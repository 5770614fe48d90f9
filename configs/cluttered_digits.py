r"""MobileNetV2 on the built-in cluttered digits: the proxy task of the sweeps.

Not a paper row: the paper's network (linear bottlenecks, t = 6, RMSProp, BN)
at α = 0.5 on a set hard enough to separate the ablations of §4 and Figure 6
on a CPU (mnv2_jax/cluttered_digits.py: rotated, faded digits anywhere on crops of
scikit-image's photos, with distractors and noise; 10,000 train and 2,000
test images, no download). The experiment configs (configs/sweep_*.py,
configs/ablation_*.py) run variations of this one at their built-in scale.

  python -m mnv2_jax.main --config configs/cluttered_digits.py --workdir /tmp/cluttered

Not yet calibrated: one seed gave 44.4% after 8 epochs, another generator
setting 68.9% after 6; the set has a learning plateau whose length varies from
run to run (experiments/README.md has the measured runs).
"""

from mnv2_jax import configuration


def get_config():
  return configuration.cluttered_digits_config()
