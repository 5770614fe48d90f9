"""The datasets: built-in ones made of real pixels that ship with a
dependency (scikit-learn's digits, scikit-image's photos) and TFDS ones
(ImageNet, CIFAR-10, Imagenette, COCO, VOC). `datasets.py` is the one entry
point; `batch_format.py` holds what they all share (the batch format,
`DatasetInfo`), `tfds_reading.py` how the TFDS ones are read, and
`image_classification.py` the preprocessing of ImageNet, CIFAR-10 and
Imagenette. Nothing here knows about models or training."""
