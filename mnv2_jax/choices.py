"""The allowed values of the config fields that pick a network's parts, by
name only, so that `configuration` (and so every configs/*.py) loads without
importing jax, flax or the networks.

The modules that implement each choice take their tuple from here; the
values they derive from their own tables (the architectures' classes, paper
Table 2's 17 bottlenecks, ShuffleNet's scales and group counts) are held
equal to these by tests/test_config_fuzz.py."""

# config.model.architecture: models/building.py's ARCHITECTURES keys.
ARCHITECTURES = (
  'mobilenet_v2',
  'mobilenet_v1',
  'shufflenet',
  'nasnet_a',
  'resnet_50',
  'resnet_101',
)
# The backbones under the SSD and DeepLab heads (models/backbones.py).
DETECTION_BACKBONES = ('mobilenet_v2', 'mobilenet_v1')
SEGMENTATION_BACKBONES = (
  'mobilenet_v2',
  'mobilenet_v1',
  'resnet_101',
  'resnet_50',
)
# MobileNetV2's options (models/mobilenet_v2.py): the bottleneck's
# activation (paper Figure 6a), where the shortcut goes (Figure 6b), and the
# output strides of §6.3.
BOTTLENECK_ACTIVATIONS = ('linear', 'relu6')
RESIDUAL_PLACEMENTS = ('bottleneck', 'expansion', 'none')
OUTPUT_STRIDES = (8, 16, 32)
# Paper Table 2's bottlenecks: 1 + 2 + 3 + 4 + 3 + 3 + 1.
MOBILENET_V2_BLOCKS = 17
# The layers' options (models/layers.py).
PADDING_MODES = ('same', 'symmetric')
DTYPES = ('float32', 'bfloat16')
IMPLEMENTATIONS = ('auto', 'cpu', 'xla')
# ShuffleNet v1's scales s and group counts g (its Table 1).
SHUFFLENET_SCALES = (0.5, 1.0, 1.5, 2.0)
SHUFFLENET_GROUPS = (1, 2, 3, 4, 8)
# SSD's prediction layers: SSDLite's separable or SSD's regular 3x3.
PREDICTION_LAYERS = ('separable', 'regular')
# Whose ranges the int8 consistency term rounds with (models/quantization.py).
QUANTIZATION_RANGES = ('batch', 'others')
# What `python -m mnv2_jax.export` writes (weights/exporters.py).
EXPORT_FORMATS = ('savedmodel', 'tflite')
