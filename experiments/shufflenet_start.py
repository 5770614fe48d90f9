r"""Why ShuffleNet starts slowly under Figure 5's shared recipe: the scale of
each family's classifier input and loss at initialisation, and the mean
training loss of its sweeps' first logged interval.

  python experiments/shufflenet_start.py \
      --output experiments/results/shufflenet_probes/start.json

At initialisation, on 256 validation images of the proxy (48 px), one
training-mode forward pass (BatchNorm on the batch's statistics) per
network: the root mean square of the globally pooled features (the
classifier's input), the logits' standard deviation and the cross-entropy
(ln 10 = 2.30 for uniform logits). ShuffleNet's units add or concatenate
their input without normalising the sum (ShuffleNet's Figure 2), so its
pooled features grow through the 16 units, where MobileNetV1's and V2's end
in BatchNorm. With RMSProp's epsilon of 1 (TF's, the shared recipe's) small
gradients step like momentum SGD, so the classifier's logits move in
proportion to the square of its input's scale.

The first logged training loss (the mean over steps 1-50) is read from the
sweeps' workdirs under experiments/runs when they are present (they are not
committed; the output file keeps what was read).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mnv2_jax import configuration
from mnv2_jax.data import cluttered_digits
from mnv2_jax.models.building import build_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NETWORKS = (
  ('shufflenet', 1.0),
  ('shufflenet', 2.0),
  ('mobilenet_v1', 1.0),
  ('mobilenet_v2', 1.0),
  ('nasnet', None),
)
SWEEP_WORKDIRS = {
  'mobilenet_v1': 'experiments/runs/peers_mobilenet_v1',
  'mobilenet_v2': 'experiments/runs/mobilenet_v2_48px',
  'nasnet': 'experiments/runs/peers_nasnet',
  'shufflenet': 'experiments/runs/peers_shufflenet',
  'shufflenet, learning rate 0.01': 'experiments/runs/peers_shufflenet_low_lr',
}


def at_initialisation(architecture: str, width, images, labels) -> dict:
  config = configuration.load_file(
    os.path.join(REPO_ROOT, 'configs', 'peer_proxy.py')
  )
  config.model.architecture = architecture
  if width is not None:
    config.model.width_multiplier = width
  model = build_model(config)
  variables = model.init(jax.random.key(0), images[:2])
  (logits, endpoints), _ = model.apply(
    variables, images, train=True, mutable=['batch_stats']
  )
  loss = -jax.nn.log_softmax(logits)[np.arange(len(labels)), labels].mean()
  pooled = endpoints['global_pool']
  return {
    'architecture': architecture,
    # NASNet-A's size is its filter count; the others' their width.
    'size': (
      f'{config.model.nasnet_filters} filters'
      if architecture == 'nasnet'
      else f'width {config.model.width_multiplier}'
    ),
    'pooled_features_rms': round(float(jnp.sqrt((pooled**2).mean())), 3),
    'logits_std': round(float(logits.std()), 3),
    'loss': round(float(loss), 3),
  }


def first_logged_losses() -> dict:
  """{sweep: {run: mean training loss of the first logged interval}}."""
  found = {}
  for name, workdir in SWEEP_WORKDIRS.items():
    runs = {}
    for metrics in sorted(
      glob.glob(os.path.join(REPO_ROOT, workdir, '*', 'metrics.jsonl'))
    ):
      with open(metrics) as f:
        for line in f:
          row = json.loads(line)
          if row.get('split') == 'train':
            runs[os.path.basename(os.path.dirname(metrics))] = {
              'step': row['step'],
              'loss': round(row['loss'], 2),
            }
            break
    if runs:
      found[name] = runs
  return found


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', required=True)
  args = parser.parse_args(argv)
  images, labels = cluttered_digits.load_split('validation', 48)
  images, labels = jnp.asarray(images[:256]), labels[:256]
  record = {
    'command': 'python experiments/shufflenet_start.py --output ' + args.output,
    'at_initialisation': [
      at_initialisation(a, w, images, labels) for a, w in NETWORKS
    ],
    'first_logged_training_loss': first_logged_losses(),
  }
  for row in record['at_initialisation']:
    print(row)
  with open(args.output, 'w') as f:
    json.dump(record, f, indent=2)
    f.write('\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
