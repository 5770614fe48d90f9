"""mnv2_jax: MobileNetV2 (Sandler et al., CVPR 2018) in JAX/Flax.

The public API:

  from mnv2_jax import MobileNetV2, build_model, configuration
  model = MobileNetV2(num_classes=1000, width_multiplier=1.0)
  model = build_model(configuration.base_config())   # any experiment config

  from mnv2_jax import from_keras_weights, save_workdir
  config, variables = from_keras_weights(path, width_multiplier=1.0)
  save_workdir('/tmp/keras_1.0_224', config, variables)

  from mnv2_jax import train_and_evaluate
  train_and_evaluate(config, workdir)

The layout, one package per layer (docs/architecture.md): `models/` (the
networks), `data/` (the datasets), `tasks/` (losses, metrics and evaluation
per task), `training/` (the loop, state, checkpoints, metrics), `weights/`
(import and export), `experiments/` (sweeps); `configuration.py` holds the
base config and its validation; the command-line tools
(`COMMAND_LINE_TOOLS`, `python -m mnv2_jax.<tool>`) sit at the top.
"""

import importlib
import os

# TensorFlow serves the data pipelines and export only: keep its C++
# start-up logging quiet unless the user asked for it.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

__version__ = '0.2.0'

# The modules run as `python -m mnv2_jax.<tool>` (tests/test_house_rules.py
# holds this to the modules with a __main__ block).
COMMAND_LINE_TOOLS = (
  'main',
  'stats',
  'sweep',
  'predict',
  'export',
  'convert',
  'launch',
  'voc',
  'prepare_imagenet',
)

# Public name -> the module that defines it. Imported on first use, so that
# `python -m mnv2_jax.<tool>` pays only for what the tool needs.
_PUBLIC = {
  'MobileNetV2': 'mnv2_jax.models.mobilenet_v2',
  'SSDLite': 'mnv2_jax.models.ssdlite',
  'MobileDeepLabV3': 'mnv2_jax.models.deeplab',
  'build_model': 'mnv2_jax.models.building',
  'from_keras': 'mnv2_jax.weights.importers',
  'from_keras_weights': 'mnv2_jax.weights.importers',
  'from_slim_checkpoint': 'mnv2_jax.weights.importers',
  'from_torch': 'mnv2_jax.weights.importers',
  'train_and_evaluate': 'mnv2_jax.training.trainer',
}
_RENAMED = {
  'save_workdir': ('mnv2_jax.weights.importers', 'save'),
  'load_workdir': ('mnv2_jax.training.workdir', 'load'),
}

__all__ = sorted(set(_PUBLIC) | set(_RENAMED))


def __getattr__(name: str):
  if name in _RENAMED:
    module, attribute = _RENAMED[name]
  elif name in _PUBLIC:
    module, attribute = _PUBLIC[name], name
  else:
    raise AttributeError(f'module mnv2_jax has no attribute {name!r}')
  return getattr(importlib.import_module(module), attribute)


def __dir__():
  return sorted(set(globals()) | set(__all__))
