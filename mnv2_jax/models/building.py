"""`build_model(config)`: the network of any experiment config, from
`config.model`'s options (checked beforehand by `models/options.py`)."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn

from mnv2_jax.models import deeplab
from mnv2_jax.models import mobilenet_v1
from mnv2_jax.models import mobilenet_v2
from mnv2_jax.models import nasnet
from mnv2_jax.models import resnet
from mnv2_jax.models import shufflenet
from mnv2_jax.models import ssdlite

# config.model.architecture -> the classification network.
ARCHITECTURES = {
  'mobilenet_v2': mobilenet_v2.MobileNetV2,
  'mobilenet_v1': mobilenet_v1.MobileNetV1,
  'shufflenet': shufflenet.ShuffleNet,
  'nasnet_a': nasnet.NASNetA,
  'resnet_50': resnet.ResNet,
  'resnet_101': resnet.ResNet,
}


def _mobilenet_v2(options, num_classes: int, common: dict) -> nn.Module:
  return mobilenet_v2.MobileNetV2(
    num_classes=num_classes,
    expansion_ratio=(
      tuple(options.expansion_ratio_per_block) or options.expansion_ratio
    ),
    bottleneck_activation=options.bottleneck_activation,
    residual=options.residual,
    output_stride=options.output_stride,
    dropout_rate=options.dropout_rate,
    inference_splits=options.inference_splits,
    **common,
  )


def _mobilenet_v1(options, num_classes: int, common: dict) -> nn.Module:
  return mobilenet_v1.MobileNetV1(
    num_classes=num_classes,
    output_stride=options.output_stride,
    dropout_rate=options.dropout_rate,
    **common,
  )


def _resnet(options, num_classes: int, common: dict) -> nn.Module:
  return resnet.ResNet(
    num_classes=num_classes,
    depth=resnet.ARCHITECTURES[options.architecture],
    output_stride=options.output_stride,
    dropout_rate=options.dropout_rate,
    **common,
  )


def _shufflenet(options, num_classes: int, common: dict) -> nn.Module:
  return shufflenet.ShuffleNet(
    num_classes=num_classes,
    groups=options.shufflenet_groups,
    dropout_rate=options.dropout_rate,
    **common,
  )


def _nasnet_a(options, num_classes: int, common: dict) -> nn.Module:
  common = {k: v for k, v in common.items() if k != 'width_multiplier'}
  return nasnet.NASNetA(  # its size is its filters and cells, not a width
    num_classes=num_classes,
    filters=options.nasnet_filters,
    cells_per_stack=options.nasnet_cells_per_stack,
    dropout_rate=options.dropout_rate,
    **common,
  )


# config.model.architecture -> the classifier, from config.model's options.
_CLASSIFIER_BUILDERS = {
  'mobilenet_v2': _mobilenet_v2,
  'mobilenet_v1': _mobilenet_v1,
  'shufflenet': _shufflenet,
  'nasnet_a': _nasnet_a,
  'resnet_50': _resnet,
  'resnet_101': _resnet,
}


def build_model(config, num_classes: Optional[int] = None) -> nn.Module:
  """The network `config.task` trains, with `config.model`'s options.

  Args:
    config: an experiment config (configuration.base_config() and changes).
    num_classes: outputs of the classifier or heads; default
      `config.num_classes` (detection: foreground classes; segmentation:
      with the background).

  Returns:
    The classifier of `config.model.architecture` (ARCHITECTURES), or SSDLite
    (detection) or MobileDeepLabV3 (segmentation) on that backbone.
  """
  num_classes = config.num_classes if num_classes is None else num_classes
  options = config.model
  common = dict(
    width_multiplier=options.width_multiplier,
    batch_norm_momentum=options.batch_norm_momentum,
    batch_norm_epsilon=options.batch_norm_epsilon,
    padding=options.padding,
    dtype=options.dtype,
    implementation=options.implementation,
  )
  if config.task == 'detection':
    return ssdlite.SSDLite(
      num_classes=num_classes,
      backbone_architecture=options.architecture,
      prediction_layers=config.detection.prediction_layers,
      **common,
    )
  if config.task == 'segmentation':
    return deeplab.MobileDeepLabV3(
      num_classes=num_classes,
      backbone_architecture=options.architecture,
      output_stride=options.output_stride,
      aspp=config.segmentation.aspp,
      dropout_rate=options.dropout_rate,
      **common,
    )
  return _CLASSIFIER_BUILDERS[options.architecture](
    options, num_classes, common
  )
