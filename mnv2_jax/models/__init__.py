"""The networks: MobileNetV2 (paper Table 2), SSDLite and SSD on it (paper
§6.2) and Mobile DeepLabv3 on it (paper §6.3), the classification peers of
paper Table 4 (MobileNetV1, ShuffleNet, NASNet-A) and ResNet, the heads' other
backbones (MobileNetV1, ResNet-101; Tables 6, 7), their layers, initial
values, anchors and statistics. Nothing here knows about data or training.

`building.build_model(config)` builds the network of any experiment config;
`options.check` checks config.model before that. This file imports nothing,
so that importing the checker (from configuration.py, which every config file
imports) loads no jax or flax.
"""
