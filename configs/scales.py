r"""The base config of every experiment at each of its scales: the config
string of `configs/ablation_*.py:<scale>` and `configs/sweep_*.py:<scale>`.

  builtin     configs/cluttered_digits.py (the default; no download)
  cifar10     configs/cifar10_mnv2.py
  imagenette  configs/imagenette_mnv2.py
  imagenet    configs/imagenet_mnv2.py (the paper's runs)

  python -m mnv2_jax.main --config configs/scales.py:cifar10 --workdir /tmp/c10
"""

from mnv2_jax import configuration

SCALES = {
  'builtin': 'cluttered_digits.py',
  'cifar10': 'cifar10_mnv2.py',
  'imagenette': 'imagenette_mnv2.py',
  'imagenet': 'imagenet_mnv2.py',
}


def get_config(scale=None):
  scale = scale or 'builtin'
  if scale not in SCALES:
    raise ValueError(
      f'unknown experiment scale {scale!r}: use one of {list(SCALES)}, e.g. '
      '--config configs/ablation_bottleneck.py:imagenet'
    )
  return configuration.load_beside(__file__, SCALES[scale])
