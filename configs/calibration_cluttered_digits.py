r"""The built-in proxy's calibration, chosen on its validation split.

configs/cluttered_digits.py trains the paper's network and recipe at 48x48.
That resolution was chosen by a grid on a lent GPU that read the test split
(experiments/README.md). This sweep repeats the choice where it belongs: the
committed 48x48 against the 32x32 it replaced, two seeds each, read on the
validation split (2,000 images of their own); the test split is scored once,
at the end of each run, and only reported.

  python -m mnv2_jax.sweep --config configs/calibration_cluttered_digits.py \
      --workdir experiments/runs/calibration_cluttered_digits \
      --results_dir experiments/results/calibration_cluttered_digits

Built-in only: ImageNet has no such choice to make.
"""

from mnv2_jax import configuration

IMAGE_SIZES = (32, 48)
SEEDS = (0, 1)


def get_config(scale=None):
  if scale not in (None, 'builtin'):
    raise ValueError(
      'calibration_cluttered_digits is built-in only (no :imagenet scale).'
    )
  return configuration.load_beside(__file__, 'cluttered_digits.py')


def get_sweep(scale=None):
  del scale
  return [
    {'image_size': size, 'seed': seed} for size in IMAGE_SIZES for seed in SEEDS
  ]
