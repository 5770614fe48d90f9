"""The datasets: built-in ones made of real pixels that ship with a
dependency (scikit-learn's digits, scikit-image's photos) and TFDS ones
(ImageNet, CIFAR-10, Imagenette, COCO, VOC). `datasets.py` is the one entry
point; `common.py` holds what they all share. Nothing here knows about
models or training."""
