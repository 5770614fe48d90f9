r"""§4: the expansion ratio t ∈ {2, 3, 4, 5, 6, 8, 10}, for two widths.

The paper's claim (§4): with a constant t in every block but the
first, t between 5 and 10 gives nearly identical results, smaller networks
being slightly better with smaller t; t = 6 everywhere else in the paper.
This sweep trains every t at a small and a large width, 3 seeds each; the
report tabulates accuracy, parameters and multiply-adds and plots accuracy
against t for each width.

  python -m mnv2_jax.sweep --config configs/sweep_expansion.py \
      --workdir experiments/runs/sweep_expansion            # built-in proxy
  python -m mnv2_jax.sweep --config configs/sweep_expansion.py:imagenet \
      --workdir gs://bucket/expansion --print_commands       # ImageNet

Built-in scale: configs/cluttered_digits.py at α = 0.35 and 0.5 with its
calibrated budget, 8 epochs at 48×48 (the resolution chosen on its validation
split), run with `--jobs 2` (experiments/README.md has the measured time; an
earlier run at 3 epochs is kept there as history). ImageNet scale: α = 0.35
and 1.0, the paper's recipe.
"""

from mnv2_jax import configuration

EXPANSION_RATIOS = (2, 3, 4, 5, 6, 8, 10)
WIDTHS = {'builtin': (0.35, 0.5)}  # every other scale: α = 0.35 and 1.0
SEEDS = (0, 1, 2)


def get_config(scale=None):
  return configuration.load_beside(__file__, 'scales.py', scale)


def get_sweep(scale=None):
  return [
    {
      'model.width_multiplier': width,
      'model.expansion_ratio': float(t),
      'seed': seed,
    }
    for width in WIDTHS.get(scale or 'builtin', (0.35, 1.0))
    for t in EXPANSION_RATIOS
    for seed in SEEDS
  ]
