r"""MobileNetV2 + SSDLite on COCO (paper §6.2, Table 6: 22.1 mAP, 4.3M params,
0.8B MAdds at 320x320).

The TF Object Detection API's reference configuration (docs/paper.md): 6 anchor layers, scales 0.2-0.95,
aspect ratios {1, 2, 1/2, 3, 1/3} + one interpolated scale, the lowest layer
reduced to 3 boxes; box coder 10/10/5/5; IoU-0.5 argmax matching with forced
matches; sigmoid + smooth-L1 losses 1:1, hard negatives 3:1; NMS 0.6, 100
detections; RMSProp lr 0.004, batch 24, 200k steps; SSD random crop + flip;
BN decay 0.9997; weight decay 4e-5.

  tfds build coco/2017 --data_dir /data/tensorflow_datasets   # once, needs network
  python -m mnv2_jax.main --config configs/ssdlite_mnv2_coco.py \
      --config.dataset.data_dir=/data/tensorflow_datasets \
      --config.init_from=/ckpt/mnv2_keras_1.0_224 --workdir /ckpt/ssdlite_coco

`init_from` takes the backbone from a classification workdir (trained, or
converted from the released weights by `python -m mnv2_jax.convert`).
Expected: ~22 mAP on val2017 (not measured here: no COCO, no GPU).
"""

from mnv2_jax import configuration


def get_config():
  config = configuration.base_config()
  config.task = 'detection'
  config.dataset.name = 'coco/2017'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.dataset.shuffle_buffer_size = 2048
  config.num_classes = 80
  config.image_size = 320  # paper Table 6 (the released config uses 300)

  config.model.width_multiplier = 1.0
  config.model.batch_norm_momentum = 0.9997
  config.model.dropout_rate = 0.0
  config.detection.max_boxes = 100

  config.num_train_steps = 200_000
  config.batch_size = 24
  config.eval_batch_size = 24
  config.optimizer = 'rmsprop'
  config.base_learning_rate = 0.004
  config.base_batch_size = 24
  config.lr_schedule = 'exponential'
  config.lr_decay_rate = 0.95  # every 800k steps of 24 images (the reference)
  config.lr_decay_epochs = 800_000 * 24 / 118_287
  config.weight_decay = 4e-5
  config.ema_decay = 0.0

  config.log_every_steps = 100
  config.eval_every_epochs = 5.0
  config.checkpoint_every_steps = 2000
  return config
