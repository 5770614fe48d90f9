r"""Mobile DeepLabv3, MNetV2* at output stride 16 with ASPP (paper Table 7).

Paper: 75.70 mIoU, 4.52M parameters, 5.8B multiply-adds.
The recipe and commands are those of deeplab_mnv2_voc_os16.py; ASPP adds three 3x3
atrous branches (rates 6, 12, 18 at output stride 16, doubled at 8).
"""

from mnv2_jax import configuration


def get_config():
  config = configuration.load_beside(__file__, 'deeplab_mnv2_voc_os16.py')
  config.segmentation.aspp = True
  return config
