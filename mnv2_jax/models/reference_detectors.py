"""The large detectors of paper Table 6, built to be counted: SSD300 and
SSD512 on VGG-16 (Liu et al. 2016) and YOLOv2 on Darknet-19 (Redmon and
Farhadi 2017).

Table 6 sets MobileNetV2 + SSDLite (4.3M parameters, 0.8B multiply-adds)
against these (36.1M / 35.2B, 36.1M / 99.5B, 50.7M / 17.5B). They are not
trained here (no data pipeline or loss is wired to them); `stats --paper`
traces them like every other network, so their counts come from the same
counter (models/counting.py) as MobileNetV2's. Their layouts follow the
authors' released definitions:

SSD (Caffe `ssd_pascal.py` / `ssd_coco.py`):
  VGG-16 conv1_1 .. conv5_3 (3x3 with bias, ReLU; 2x2 max pools, the third
  in ceil mode so that 300 gives 38x38 at conv4_3), pool5 3x3 stride 1,
  fc6 as a 3x3 convolution of 1024 with dilation 6, fc7 as a 1x1 of 1024;
  conv4_3 L2-normalised with a learned scale per channel; the extra layers
  (1x1 to 256 then 3x3/2 to 512; 1x1 to 128 then 3x3/2 to 256; then, at 300,
  two of 1x1 to 128 and an unpadded 3x3 to 256; at 512, two more stride-2
  pairs and a 4x4 with padding 1). Every source layer gets a 3x3 class
  prediction (boxes x (classes + 1)) and a 3x3 box prediction (boxes x 4),
  with 4, 6, 6, 6, 4, 4 boxes per position at 300 and 4, 6, 6, 6, 6, 4, 4 at
  512.
YOLOv2 (Darknet's `yolov2.cfg`, the COCO model):
  Darknet-19 without its classifier (3x3 and 1x1 convolutions without bias,
  BatchNorm, leaky ReLU 0.1, 2x2 max pools), two 3x3 convolutions of 1024,
  the passthrough (conv5's 26x26x512 output reduced by a 1x1 to 64 channels
  and rearranged space-to-depth to 13x13x256) concatenated with them, a 3x3
  of 1024, and a 1x1 with bias to anchors x (classes + 5) outputs.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import layers

Array = jax.Array

# VGG-16's convolutions up to conv5_3: channels, or 'pool' (2x2/2).
VGG16_LAYERS = (
  *(64, 64, 'pool'),
  *(128, 128, 'pool'),
  *(256, 256, 256, 'pool'),
  *(512, 512, 512, 'pool'),
  *(512, 512, 512),
)
CONV4_3_INDEX = 12  # conv4_3, the 10th convolution (entry 12 of the list)
# SSD's extra layers: (1x1 channels, 3x3 channels, stride, padding).
SSD_EXTRA_LAYERS = {
  300: (
    (256, 512, 2, 'SAME'),
    (128, 256, 2, 'SAME'),
    (128, 256, 1, 'VALID'),
    (128, 256, 1, 'VALID'),
  ),
  512: (
    (256, 512, 2, 'SAME'),
    (128, 256, 2, 'SAME'),
    (128, 256, 2, 'SAME'),
    (128, 256, 2, 'SAME'),
    (128, 256, 1, 'FOUR_BY_FOUR'),
  ),
}
# Default boxes per position on each source layer.
SSD_BOXES = {300: (4, 6, 6, 6, 4, 4), 512: (4, 6, 6, 6, 6, 4, 4)}
SSD_FC6_DILATION = 6

# Darknet-19 (YOLOv2 paper Table 6) without its 1x1 classifier: (channels,
# kernel) or 'pool'; 'passthrough' marks conv5's output (26x26 at 416).
DARKNET19_LAYERS = (
  (32, 3),
  'pool',
  (64, 3),
  'pool',
  *((128, 3), (64, 1), (128, 3)),
  'pool',
  *((256, 3), (128, 1), (256, 3)),
  'pool',
  *((512, 3), (256, 1), (512, 3), (256, 1), (512, 3)),
  'passthrough',
  'pool',
  *((1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)),
)
YOLO_HEAD_CHANNELS = 1024
YOLO_PASSTHROUGH_CHANNELS = 64
YOLO_ANCHORS = 5
YOLO_LEAKY_SLOPE = 0.1


class SSDVGG16(nn.Module):
  """SSD300 or SSD512 (`image_size`) on VGG-16, for counting.

  Returns (class logits [N, boxes, classes + 1], box offsets [N, boxes, 4],
  endpoints), like models/ssdlite.py's SSDLite.
  """

  num_classes: int = 80
  image_size: int = 300
  width_multiplier: float = 1.0  # statistics.model_statistics reads it
  implementation: str = 'xla'  # plain XLA convolutions only

  @nn.compact
  def __call__(self, images: Array, train: bool = False):
    if self.image_size not in SSD_BOXES:
      raise ValueError(
        f'SSD is defined at 300 or 512, got image_size={self.image_size}.'
      )
    conv = functools.partial(nn.Conv, padding='SAME')
    endpoints, sources = {}, []
    x = images
    for index, layer in enumerate(VGG16_LAYERS):
      if layer == 'pool':
        # Caffe rounds pooled sizes up (300: 75 -> 38 at the third pool).
        pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding=pad)
      else:
        x = nn.relu(conv(layer, (3, 3), name=f'vgg_{index}')(x))
      if index == CONV4_3_INDEX:  # the first source: conv4_3, normalised
        endpoints['conv4_3'] = x
        sources.append(L2Norm(name='conv4_3_norm')(x))
    x = nn.max_pool(x, (3, 3), strides=(1, 1), padding='SAME')  # pool5
    x = nn.relu(
      conv(
        1024,
        (3, 3),
        kernel_dilation=SSD_FC6_DILATION,
        name='fc6',
      )(x)
    )
    x = nn.relu(conv(1024, (1, 1), name='fc7')(x))
    sources.append(x)
    for index, (reduced, out, stride, padding) in enumerate(
      SSD_EXTRA_LAYERS[self.image_size]
    ):
      x = nn.relu(conv(reduced, (1, 1), name=f'extra_{index}_1x1')(x))
      kernel = 4 if padding == 'FOUR_BY_FOUR' else 3
      x = nn.relu(
        nn.Conv(
          out,
          (kernel, kernel),
          strides=stride,
          padding=((1, 1), (1, 1)) if kernel == 4 else padding,
          name=f'extra_{index}_{kernel}x{kernel}',
        )(x)
      )
      sources.append(x)
    class_logits, box_offsets = [], []
    for index, (source, boxes) in enumerate(
      zip(sources, SSD_BOXES[self.image_size])
    ):
      endpoints[f'source_{index}'] = source
      logits = conv(
        boxes * (self.num_classes + 1), (3, 3), name=f'class_{index}'
      )
      offsets = conv(boxes * 4, (3, 3), name=f'box_{index}')
      class_logits.append(
        logits(source).reshape(source.shape[0], -1, self.num_classes + 1)
      )
      box_offsets.append(offsets(source).reshape(source.shape[0], -1, 4))
    return (
      jnp.concatenate(class_logits, axis=1),
      jnp.concatenate(box_offsets, axis=1),
      endpoints,
    )


class L2Norm(nn.Module):
  """SSD's conv4_3 normalisation: unit L2 norm per position, times a learned
  scale per channel (initialised to 20, Liu et al. 2016 §3.1)."""

  initial_scale: float = 20.0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param(
      'scale', nn.initializers.constant(self.initial_scale), (x.shape[-1],)
    )
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + 1e-10)
    return x / norm * scale


def space_to_depth(x: Array, block: int) -> Array:
  """YOLOv2's passthrough ("reorg"): each block x block patch of positions
  becomes block² x the channels at one position."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // block, block, w // block, block, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(
    n, h // block, w // block, block * block * c
  )


class YOLOv2(nn.Module):
  """YOLOv2 on Darknet-19, for counting. Returns (predictions [N, H, W,
  anchors, classes + 5], None, endpoints)."""

  num_classes: int = 80
  width_multiplier: float = 1.0  # statistics.model_statistics reads it
  batch_norm_momentum: float = 0.99
  batch_norm_epsilon: float = 1e-5
  padding: str = 'same'
  dtype: str = 'float32'
  implementation: str = 'xla'

  @nn.compact
  def __call__(self, images: Array, train: bool = False):
    norm, conv, _ = layers.network_factories(self, train=train)
    leaky = functools.partial(nn.leaky_relu, negative_slope=YOLO_LEAKY_SLOPE)

    def conv_bn(channels: int, kernel: int, name: str):
      return layers.ConvBN(
        functools.partial(conv, channels, kernel_size=kernel),
        norm,
        leaky,
        name=name,
      )

    endpoints = {}
    x = images.astype(layers.DTYPES[self.dtype])
    for index, layer in enumerate(DARKNET19_LAYERS):
      if layer == 'pool':
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      elif layer == 'passthrough':
        passthrough = x
      else:
        channels, kernel = layer
        x = conv_bn(channels, kernel, f'darknet_{index}')(x)
    endpoints['darknet19'] = x
    for index in range(2):
      x = conv_bn(YOLO_HEAD_CHANNELS, 3, f'head_{index}')(x)
    passthrough = conv_bn(YOLO_PASSTHROUGH_CHANNELS, 1, 'passthrough')(
      passthrough
    )
    x = jnp.concatenate([space_to_depth(passthrough, 2), x], axis=-1)
    x = conv_bn(YOLO_HEAD_CHANNELS, 3, 'head_2')(x)
    endpoints['head'] = x
    outputs = YOLO_ANCHORS * (self.num_classes + 5)
    x = nn.Conv(outputs, (1, 1), name='predictions')(x.astype(jnp.float32))
    n, h, w, _ = x.shape
    return x.reshape(n, h, w, YOLO_ANCHORS, -1), None, endpoints
