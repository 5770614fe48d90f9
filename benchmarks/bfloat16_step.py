"""How far one bfloat16 training step lands from the float32 one.

`config.model.dtype = 'bfloat16'` computes activations and convolutions in
bfloat16; parameters, BatchNorm statistics, the classifier, the loss and the
optimizer stay float32. From the same initial state and batch, this runs one
`trainer.train_step` in each dtype and reports relative errors of the loss, of
the parameter update (new params - old params, all leaves concatenated) and of
the updated BatchNorm running statistics, with the command, the machine, the
date and the package versions (`mnv2_jax.training.provenance.record`).

  python benchmarks/bfloat16_step.py                  # MobileNetV2 1.0-224, batch 32
  python benchmarks/bfloat16_step.py --resolution 96 --batch 8
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import shlex
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _flat(tree):
  import jax
  import jax.numpy as jnp

  return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def compare_one_step(
  width_multiplier=1.0, resolution=224, batch=32, num_classes=1000, seed=0
) -> dict:
  """Relative errors of one bfloat16 training step against float32."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mnv2_jax import configuration
  from mnv2_jax.models import initializers
  from mnv2_jax.models.building import build_model
  from mnv2_jax.tasks import classification
  from mnv2_jax.training import optimization
  from mnv2_jax.training import state as training_state
  from mnv2_jax.training import trainer

  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (batch, resolution, resolution, 3))
  data = {
    'image': jnp.asarray(images, jnp.float32),
    'label': jnp.asarray(rng.integers(0, num_classes, (batch,)), jnp.int32),
  }
  results = {}
  for dtype in ('float32', 'bfloat16'):
    config = configuration.base_config()
    config.num_classes = num_classes
    config.image_size = resolution
    config.model.width_multiplier = width_multiplier
    config.model.dtype = dtype
    config.model.dropout_rate = 0.0  # the same network in both runs
    model = build_model(config, num_classes)
    _, learning_rate, optimizer = optimization.build(
      config, num_train_examples=1_281_167
    )
    variables = initializers.host_variables(
      model, training_state.model_input_shape(config), seed, train=False
    )
    state = jax.jit(
      functools.partial(
        training_state.create_train_state, config, optimizer=optimizer
      )
    )(variables)
    step = jax.jit(
      functools.partial(
        trainer.train_step,
        model=model,
        task=classification.Classification(config),
        optimizer=optimizer,
        config=config,
        learning_rate=learning_rate,
      )
    )
    new_state, metrics = step(state, data, jax.random.key(seed + 1))
    results[dtype] = {
      'loss': float(metrics['loss']),
      'update': _flat(
        jax.tree.map(jnp.subtract, new_state.params, state.params)
      ),
      'batch_stats': _flat(new_state.batch_stats),
    }

  def relative(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

  f32, bf16 = results['float32'], results['bfloat16']
  return {
    'model': f'MobileNetV2 {width_multiplier}-{resolution}, batch {batch}',
    'loss_float32': f32['loss'],
    'loss_bfloat16': bf16['loss'],
    'loss_relative_error': abs(bf16['loss'] - f32['loss']) / abs(f32['loss']),
    'update_relative_error': relative(bf16['update'], f32['update']),
    'batch_stats_relative_error': relative(
      bf16['batch_stats'], f32['batch_stats']
    ),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--width_multiplier', type=float, default=1.0)
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument(
    '--json_out',
    default=str(REPO_ROOT / 'benchmarks' / 'results' / 'bfloat16_step.json'),
  )
  argv_used = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv_used)
  result = compare_one_step(args.width_multiplier, args.resolution, args.batch)
  for key, value in result.items():
    print(f'{key}: {value}')
  from mnv2_jax.training import provenance

  # The command, the machine, the date and the versions beside the figures,
  # so that the file can be traced to its run.
  command = shlex.join(['python', 'benchmarks/bfloat16_step.py'] + argv_used)
  provenance.write(args.json_out, provenance.record(command, **result))
  print(f'wrote {args.json_out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
