r"""Figure 5's proxy for the peer networks: the built-in recipe and budget of
configs/sweep_width_resolution.py (configs/cluttered_digits.py), unchanged,
at 48 pixels, the largest resolution of its MobileNetV2 points. The peers'
sweeps (configs/sweep_mobilenet_v1.py, sweep_shufflenet*.py, sweep_nasnet.py,
sweep_mobilenet_v2_48px.py) load it and set `model.architecture`; they are
defined on the built-in proxy only.

  python -m mnv2_jax.main --config configs/peer_proxy.py --workdir /tmp/proxy \
      --config.model.architecture=mobilenet_v1
"""

from mnv2_jax import configuration

RESOLUTION = 48


def get_config(scale=None):
  if scale not in (None, 'builtin'):
    raise ValueError(
      f'the peer sweeps are defined on the built-in proxy only, not {scale!r}'
    )
  config = configuration.load_beside(__file__, 'cluttered_digits.py')
  config.image_size = RESOLUTION
  return config
