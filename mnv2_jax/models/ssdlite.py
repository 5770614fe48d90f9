"""SSDLite and SSD (paper §6.2, Tables 5-6): the network and its anchors.

SSDLite is SSD with every regular convolution of the prediction layers
replaced by a depthwise 3x3 + 1x1 pair (paper §6.2). Feature maps (paper
§6.2): the backbone's stride-16 and stride-32 maps (for MobileNetV2 the
expansion output of layer 15 and the last layer; for MobileNetV1 conv_11 and
conv_13, models/backbones.py), and four extra layers of 512, 256, 256 and 128
channels, each a 1x1 conv to half width and a stride-2 3x3.

`prediction_layers` chooses between the two heads of Table 5:

- 'separable' (SSDLite): the extra layers' 3x3 is depthwise followed by a 1x1
  projection, and each predictor is a depthwise 3x3 (BN, ReLU6) and a 1x1;
- 'regular' (SSD, Liu et al. 2016): the extra layers' 3x3 is a regular
  convolution and each predictor a regular 3x3 convolution with bias.

The loss and the post-processing are the detection task's
(tasks/detection.py).
"""

from __future__ import annotations

import functools
from typing import Optional
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnv2_jax import choices
from mnv2_jax.models import backbones
from mnv2_jax.models import box_ops
from mnv2_jax.models import initializers
from mnv2_jax.models import layers

Array = jax.Array

EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
MIN_DEPTH = 16  # the reference config's min_depth
PREDICTION_LAYERS = choices.PREDICTION_LAYERS  # SSDLite, SSD


class SSDLite(nn.Module):
  """SSDLite (or SSD) on MobileNetV2 or MobileNetV1.

  Attributes:
    num_classes: foreground classes; the heads predict num_classes + 1 logits
      per anchor (index 0 = background).
    width_multiplier: α of the backbone; also scales the extra layers (never
      below MIN_DEPTH channels).
    backbone_architecture: one of backbones.DETECTION_BACKBONES.
    prediction_layers: 'separable' (SSDLite) or 'regular' (SSD).
    boxes_per_location: anchors per location on each of the six maps.
    batch_norm_momentum, batch_norm_epsilon, padding, dtype, implementation:
      the backbone's and the heads' layer options.
  """

  num_classes: int = 80
  width_multiplier: float = 1.0
  backbone_architecture: str = 'mobilenet_v2'
  prediction_layers: str = 'separable'
  boxes_per_location: Sequence[int] = (3, 6, 6, 6, 6, 6)
  batch_norm_momentum: float = 0.997
  batch_norm_epsilon: float = 1e-3
  padding: str = 'same'
  dtype: str = 'float32'
  implementation: str = 'auto'

  @nn.compact
  def __call__(
    self, images: Array, train: bool = False
  ) -> tuple[Array, Array, dict[str, Array]]:
    """Returns box encodings [N, A, 4], class logits [N, A, C + 1], endpoints."""
    if self.backbone_architecture not in backbones.SSD_FEATURES:
      raise ValueError(
        f'SSD runs on {tuple(backbones.SSD_FEATURES)}, got '
        f'{self.backbone_architecture!r}.'
      )
    if self.prediction_layers not in PREDICTION_LAYERS:
      raise ValueError(
        f'prediction_layers must be one of {PREDICTION_LAYERS}, got '
        f'{self.prediction_layers!r}.'
      )
    regular = self.prediction_layers == 'regular'
    _, endpoints = backbones.build(self, self.backbone_architecture)(
      images, train=train
    )
    norm, conv, depthwise = layers.network_factories(self, train=train)

    features = [
      endpoints[name]
      for name in backbones.SSD_FEATURES[self.backbone_architecture]
    ]
    features += extra_layers(
      features[-1], self.width_multiplier, regular, conv, depthwise, norm
    )
    box_encodings, class_logits = [], []
    for i, (feature, boxes) in enumerate(
      zip(features, self.boxes_per_location)
    ):
      endpoints[f'feature_map_{i}'] = feature
      for kind, width, outputs in (
        ('box', 4, box_encodings),
        ('class', self.num_classes + 1, class_logits),
      ):
        y = predictor(
          feature, boxes * width, regular, depthwise, norm, f'head_{i}_{kind}'
        )
        outputs.append(y.reshape(y.shape[0], -1, width))
    return (
      jnp.concatenate(box_encodings, 1),
      jnp.concatenate(class_logits, 1),
      endpoints,
    )


def extra_layers(
  x: Array, width_multiplier: float, regular: bool, conv, depthwise, norm
) -> list[Array]:
  """The four extra feature maps after the backbone's last (paper §6.2): each
  a 1x1 conv to half width, then a stride-2 3x3, depthwise + 1x1 in SSDLite
  and regular in SSD. Called inside SSDLite's compact `__call__`, whose
  submodules these are; `conv`, `depthwise` and `norm` are its factories."""
  features = []
  for i, depth in enumerate(EXTRA_LAYER_DEPTHS):
    depth = max(int(depth * width_multiplier), MIN_DEPTH)
    name = f'extra_{i + 1}'
    x = layers.ConvBN(
      functools.partial(conv, depth // 2), norm, nn.relu6, name=f'{name}_reduce'
    )(x)
    if regular:
      x = layers.ConvBN(
        functools.partial(conv, depth, kernel_size=3, strides=2),
        norm,
        nn.relu6,
        name=f'{name}_conv',
      )(x)
    else:
      x = layers.ConvBN(
        functools.partial(depthwise, strides=2),
        norm,
        nn.relu6,
        name=f'{name}_depthwise',
      )(x)
      x = layers.ConvBN(
        functools.partial(conv, depth), norm, nn.relu6, name=f'{name}_project'
      )(x)
    features.append(x)
  return features


def predictor(
  feature: Array, outputs: int, regular: bool, depthwise, norm, name: str
) -> Array:
  """One map's box or class predictions [N, H, W, outputs]: SSDLite's
  depthwise 3x3 + BN + ReLU6, then a 1x1 with bias; SSD's one 3x3 with bias.
  A submodule of the calling SSDLite, as `extra_layers`."""
  y = feature
  if not regular:
    y = layers.ConvBN(depthwise, norm, nn.relu6, name=f'{name}_depthwise')(y)
  kernel = (3, 3) if regular else (1, 1)
  return nn.Conv(
    outputs,
    kernel,
    dtype=jnp.float32,
    kernel_init=initializers.LECUN_NORMAL,
    bias_init=initializers.ZEROS,
    name=f'{name}_predictor',
  )(y.astype(jnp.float32))


def feature_map_sizes(model: SSDLite, image_size: int) -> list[tuple[int, int]]:
  """Spatial sizes of the six feature maps, from shapes alone."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  endpoints = jax.eval_shape(model.apply, variables, images)[2]
  return [
    tuple(endpoints[f'feature_map_{i}'].shape[1:3])
    for i in range(len(model.boxes_per_location))
  ]


def anchors_for(
  model: SSDLite, image_size: int, config: Optional[box_ops.AnchorConfig] = None
) -> np.ndarray:
  config = box_ops.AnchorConfig() if config is None else config
  if list(model.boxes_per_location) != box_ops.num_boxes_per_location(config):
    raise ValueError(
      f'boxes_per_location {model.boxes_per_location} does not match the '
      f'anchor generator ({box_ops.num_boxes_per_location(config)}).'
    )
  return box_ops.generate_anchors(feature_map_sizes(model, image_size), config)
