r"""Mobile DeepLabv3, MNetV2* at output stride 8 without ASPP (paper Table 7).

Paper: 77.33 mIoU with MF (multi-scale + flip: --config.segmentation.multi_scale_eval=True),
2.11M parameters, 152.6B multiply-adds with MF.
The recipe and commands are those of deeplab_mnv2_voc_os16.py.
Training with this config runs at output stride 8 (3.2x the multiply-adds of
16). DeepLab trains at output stride 16 and evaluates at 8: the weights are the same,
so a workdir trained with the output-stride-16 config evaluates here with
  python -m mnv2_jax.main --config configs/<this file> --workdir <workdir> \
      --config.mode=eval --config.segmentation.multi_scale_eval=True
"""

from mnv2_jax import configuration


def get_config():
  config = configuration.load_beside(__file__, 'deeplab_mnv2_voc_os16.py')
  config.model.output_stride = 8
  return config
