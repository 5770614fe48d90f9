"""Trained weights in and out: importing the released Keras, TF-slim and
PyTorch checkpoints (`convert`), applying a workdir's weights to image files
(`prediction`), and exporting to TensorFlow SavedModel and TFLite
(`export`)."""
