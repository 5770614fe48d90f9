"""mnv2_jax: MobileNetV2 (Sandler et al., CVPR 2018) in JAX/Flax."""

import setuptools

setuptools.setup(
  name='mnv2_jax',
  version='0.2.0',
  description=(
    'MobileNetV2: inverted residuals and linear bottlenecks, '
    'in JAX/Flax: models, training, statistics.'
  ),
  long_description=open('README.md').read(),
  long_description_content_type='text/markdown',
  packages=setuptools.find_packages(include=['mnv2_jax', 'mnv2_jax.*']),
  python_requires='>=3.11,<3.14',
  # Bounded to the versions this release was tested with (see README).
  install_requires=[
    'absl-py>=2.1,<3',
    # jax 0.10.2 on Python 3.11; 0.11 and 0.12 need Python >= 3.12.
    'jax>=0.10.2,<0.13',
    'jaxlib>=0.10.2,<0.13',
    'flax>=0.12.8,<0.13',
    'optax>=0.2.8,<0.3',
    'orbax-checkpoint>=0.12.8,<0.13',
    'ml-collections>=1.1,<1.2',
    'numpy>=2.0,<2.5',
    # tf.data / TFDS / TensorBoard only; TF never sees an accelerator.
    'tensorflow-cpu>=2.21,<2.22; sys_platform == "linux"',
    'tensorflow>=2.21,<2.22; sys_platform != "linux"',
    'tensorflow-datasets>=4.9.10,<4.10',
    'tensorboard>=2.21,<2.22',
    'scikit-learn>=1.9,<1.10',
    'scikit-image>=0.26,<0.27',
    'pycocotools>=2.0.11,<2.1',  # the official COCO evaluator (SSDLite)
    # TFDS needs it to locate the code of our own builder (voc.py).
    'importlib_resources>=7.1,<8',
    'scipy>=1.13,<2',  # SBD's .mat masks (VOC train_aug)
    'matplotlib>=3.11,<3.12',  # the sweeps' plots (mnv2_jax/sweep.py)
  ],
  extras_require={
    'test': [
      'pytest>=9.0,<10',
      'pytest-xdist>=3.8,<4',
      'hypothesis>=6.155,<7',  # tests/test_config_fuzz.py
      'ruff>=0.17.6,<0.18',  # format and lint (.ci/run)
      'import-linter>=2.17,<3',  # the layer contracts in pyproject.toml
    ],
    # The PyTorch parity tests (tests/test_convert.py) and the PyTorch rows
    # of benchmarks/speed.py. pip takes the CPU build (2.13.0+cpu) where an
    # index or --find-links offers it, else PyPI's, which also runs on the
    # CPU. torchvision is not listed: no CPU build of it for torch 2.13.0 is
    # on the registries CI reaches (the 0.28.0 wheels there link
    # libc10_cuda.so), so the tests use torchvision's model where it imports
    # and tests/torch_reference.py otherwise, and say which.
    'parity': ['torch==2.13.0'],
    # Accelerators: JAX's plugins (jax's own extras pin the plugin to the
    # installed jax version).
    'cuda12': ['jax[cuda12]>=0.10.2,<0.13'],
    'cuda13': ['jax[cuda13]>=0.10.2,<0.13'],
    'tpu': ['jax[tpu]>=0.10.2,<0.13'],
  },
)
