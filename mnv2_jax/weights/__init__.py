"""Weights in and out: importing the released Keras, TF-slim and PyTorch
checkpoints (`convert`), and exporting to TensorFlow SavedModel and TFLite
(`export`)."""
