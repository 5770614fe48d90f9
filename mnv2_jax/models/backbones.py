"""The backbones under the detection and segmentation heads.

Paper §6.2 and §6.3 put SSDLite and DeepLabv3 on MobileNetV2 and compare
them with the same heads on MobileNetV1 (Tables 6 and 7) and, for DeepLab,
on ResNet-101 (Table 7). A head builds its backbone with `build` (named
'backbone', without a classifier, with the head's layer options) and reads
its feature maps by name:

- SSD (paper §6.2): the stride-16 and stride-32 maps of `SSD_FEATURES`. For
  MobileNetV2 the expansion output of layer 15 and the last layer; for
  MobileNetV1 the setup of Huang et al. 2017 that the paper follows:
  `Conv2d_11_pointwise` (stride 16) and `Conv2d_13_pointwise` (32).
- DeepLab (paper §6.3): the last feature map (`deeplab_features`), at output
  stride 16 or 8. MobileNetV2 without its last 1x1 convolution (MNetV2*,
  320 channels); MobileNetV1's `Conv2d_13_pointwise` (1024); ResNet-101's
  block 4 (2048).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from mnv2_jax import choices
from mnv2_jax.models import mobilenet_v1
from mnv2_jax.models import mobilenet_v2
from mnv2_jax.models import resnet

Array = jax.Array

# config.model.architecture values each head takes.
DETECTION_BACKBONES = choices.DETECTION_BACKBONES
SEGMENTATION_BACKBONES = choices.SEGMENTATION_BACKBONES
SSD_FEATURES = {
  'mobilenet_v2': ('layer_15/expansion_output', 'layer_19'),
  'mobilenet_v1': ('Conv2d_11_pointwise', 'Conv2d_13_pointwise'),
}


def build(head, architecture: str, **options) -> nn.Module:
  """The backbone `architecture` under `head` (an SSDLite or DeepLab module),
  with the head's width and layer options; `options` sets the rest (e.g.
  output_stride). Call inside the head's compact method."""
  common = dict(
    num_classes=0,
    width_multiplier=head.width_multiplier,
    batch_norm_momentum=head.batch_norm_momentum,
    batch_norm_epsilon=head.batch_norm_epsilon,
    padding=head.padding,
    dtype=head.dtype,
    implementation=head.implementation,
    name='backbone',
  )
  if architecture == 'mobilenet_v2':
    return mobilenet_v2.MobileNetV2(**common, **options)
  if architecture == 'mobilenet_v1':
    return mobilenet_v1.MobileNetV1(**common, **options)
  if architecture in resnet.ARCHITECTURES:
    return resnet.ResNet(
      depth=resnet.ARCHITECTURES[architecture], **common, **options
    )
  raise ValueError(
    f'no backbone {architecture!r}; one of {SEGMENTATION_BACKBONES}.'
  )


def deeplab_features(
  architecture: str, outputs: Array, endpoints: dict[str, Array]
) -> Array:
  """The feature map DeepLab's head reads (see the module docstring)."""
  if architecture == 'mobilenet_v2':
    return outputs  # without a classifier, MobileNetV2 returns its last map
  if architecture == 'mobilenet_v1':
    return endpoints['Conv2d_13_pointwise']
  return endpoints['block4']  # ResNet
