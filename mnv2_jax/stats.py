r"""Parameter and multiply-add counts, checked against the paper and the release.

  python -m mnv2_jax.stats --config configs/imagenet_mnv2.py [--config.model.width_multiplier=0.5] [--json]
  python -m mnv2_jax.stats --grid [--json]    # the 22 released checkpoints
  python -m mnv2_jax.stats --memory           # Table 3 by §5.1's rule
  python -m mnv2_jax.stats --paper            # Tables 3-7: the paper's rows, ours
  python -m mnv2_jax.stats --config configs/ssdlite_mnv2_coco.py      # Table 6
  python -m mnv2_jax.stats --config configs/deeplab_mnv2_voc_os16.py  # Table 7

The counting is models/counting.py's.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING
from typing import Any
from typing import Optional

from absl import logging

from mnv2_jax import configuration

if TYPE_CHECKING:
  from mnv2_jax.models import paper_tables

TABLE_TITLES = {
  '3': "Table 3: memory of inference by §5.1's rule (KB, 16-bit values)",
  '4': 'Table 4: ImageNet classifiers at 224x224, 1000 classes',
  '5': 'Table 5: SSD and SSDLite prediction layers alone, 80 classes, 320x320',
  '6': (
    'Table 6: detectors on COCO, 80 classes, 320x320 (SSD at 300 and 512, '
    'YOLOv2 at 544)'
  ),
  '7': 'Table 7: DeepLabv3 heads on VOC, 21 classes, 513x513',
}


def format_paper_tables(rows: list[paper_tables.Row]) -> str:
  """One Markdown table per paper table: the paper's figure, ours, the
  difference, whether they agree within its rounding, and the note."""
  lines = []
  for table, title in TABLE_TITLES.items():
    lines += [
      f'{title}',
      '| network | quantity | paper | ours | ours - paper | agrees | note |',
      '|---|---|---|---|---|---|---|',
    ]
    for row in (r for r in rows if r.table == table):
      digits = row.digits + 2
      paper = f'{row.paper:.{row.digits}f}{row.unit}'
      if row.ours is None:
        ours = difference = agrees = '-'
      else:
        ours = f'{row.ours:.{digits}f}{row.unit}'
        difference = f'{row.ours - row.paper:+.{digits}f}'
        agrees = 'yes' if row.agrees else 'no'
      lines.append(
        f'| {row.network} | {row.quantity} | {paper} | {ours} | '
        f'{difference} | {agrees} | {row.note} |'
      )
    lines.append('')
  return '\n'.join(lines)


def format_grid(rows: list[dict[str, Any]]) -> str:
  lines = [
    '| α | res | params (M) ours / release | MACs (M) ours / release '
    '| release top-1 / top-5 | match |',
    '|---|---|---|---|---|---|',
  ]
  for r in rows:
    lines.append(
      f'| {r["width_multiplier"]} | {r["resolution"]} | '
      f'{r["parameters_millions"]:.2f} / '
      f'{r["published_parameters_millions"]:.2f} | '
      f'{r["multiply_adds_millions"]} / '
      f'{r["published_multiply_adds_millions"]} | '
      f'{r["published_top1"]} / {r["published_top5"]} | '
      f'{"yes" if r["matches"] else "NO"} |'
    )
  matched = sum(r['matches'] for r in rows)
  lines.append(f'\n{matched}/{len(rows)} released checkpoints match.')
  return '\n'.join(lines)


def format_statistics(stats: dict[str, Any]) -> str:
  largest = stats['largest_activation']
  lines = [
    f'{stats.get("model", "MobileNetV2")} α={stats["width_multiplier"]} at '
    f'{stats["image_size"]}x{stats["image_size"]}, '
    f'{stats["num_classes"]} classes'
    + (
      f', output stride {stats["output_stride"]}, '
      f'{"with" if stats["aspp"] else "without"} ASPP'
      if 'output_stride' in stats
      else ''
    ),
    f'  trainable parameters:          {stats["trainable_parameters"]:,}',
    f'  all parameters (+BN averages): {stats["all_parameters"]:,}',
    f'  parameters without BatchNorm:  '
    f'{stats["parameters_without_batch_norm"]:,}',
    f'  multiply-adds (one image):     {stats["multiply_adds"]:,}',
    f'  largest activation:            {largest["name"]} '
    f'{"x".join(map(str, largest["shape"]))} = {largest["elements"]:,} '
    f'values ({largest["elements"] * 4 / 2**20:.2f} MiB in float32)',
  ]
  if 'heads_parameters' in stats:
    lines.append(
      '  extra layers and heads alone:  '
      f'{stats["heads_parameters"]:,} parameters, '
      f'{stats["heads_multiply_adds"]:,} multiply-adds'
    )
  if 'multi_scale_multiply_adds' in stats:
    lines.append(
      f'  multiply-adds, multi-scale {stats["eval_scales"]}'
      f"{' + flip' if stats['eval_flip'] else ''} (Table 7's MF): "
      f'{stats["multi_scale_multiply_adds"]:,}'
    )
  if stats['multiply_adds_space_to_batch'] != stats['multiply_adds']:
    lines.append(
      '  atrous convs counted as TensorFlow computes them (SpaceToBatchND '
      "pads to a multiple of the rate; reproduces the paper's ASPP rows): "
      f'{stats["multiply_adds_space_to_batch"]:,}'
      + (
        f' single scale, {stats["multi_scale_multiply_adds_space_to_batch"]:,}'
        ' MF'
        if 'multi_scale_multiply_adds' in stats
        else ''
      )
    )
  return '\n'.join(lines)


def format_memory_table(rows: list[dict[str, Any]]) -> str:
  from mnv2_jax.models import counting  # jax: after parsing

  lines = [
    'Paper Table 3, MobileNetV2 (16-bit activations, KB = 1000 bytes; '
    'a block = one operation, §5.1)',
    '| size | ours: max channels / KB | Table 2 reading | paper |',
    '|---|---|---|---|',
  ]
  for row in rows:
    paper = (
      ''
      if row.get('paper_channels') is None
      else f'{row["paper_channels"]}/{row["paper_kilobytes"]}'
    )
    lines.append(
      f'| {row["resolution"]}² | {row["channels"]}/'
      f'{row["kilobytes"]:.0f} | {row["table2_channels"]}/'
      f'{row["table2_kilobytes"]:.0f} | {paper} |'
    )
  peak = max(row['kilobytes'] for row in rows)
  lines.append(
    f'| max | {peak:.0f}K | '
    f'{max(row["table2_kilobytes"] for row in rows):.0f}K | '
    f'{counting.PAPER_TABLE3_MAX_KB}K |'
  )
  return '\n'.join(lines)


def config_statistics(config) -> dict[str, Any]:
  """The counts of the network a config builds (with Table 7's MF figures
  for segmentation)."""
  from mnv2_jax.models import backbones  # jax: after parsing
  from mnv2_jax.models import counting
  from mnv2_jax.models.building import build_model

  configuration.validate(config)
  model = build_model(config)
  stats = counting.model_statistics(model, config.image_size)
  if config.task == 'detection':
    # SSDLite's extra layers and heads alone (Table 5's "heads" comparison).
    backbone = counting.model_statistics(
      backbones.build(model, model.backbone_architecture), config.image_size
    )
    stats['heads_parameters'] = (
      stats['trainable_parameters'] - backbone['trainable_parameters']
    )
    stats['heads_multiply_adds'] = (
      stats['multiply_adds'] - backbone['multiply_adds']
    )
  if config.task == 'segmentation':
    segmentation = config.segmentation
    stats['output_stride'] = config.model.output_stride
    stats['aspp'] = segmentation.aspp
    stats['eval_scales'] = list(segmentation.eval_scales)
    stats['eval_flip'] = segmentation.eval_flip
    multi_scale = counting.multi_scale_multiply_adds(
      model, config.image_size, segmentation.eval_scales, segmentation.eval_flip
    )
    stats['multi_scale_multiply_adds'] = multi_scale['multiply_adds']
    stats['multi_scale_multiply_adds_space_to_batch'] = multi_scale[
      'multiply_adds_space_to_batch'
    ]
  return stats


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog='python -m mnv2_jax.stats',
    description=__doc__.split('\n')[0],
    epilog='With --config, any config field can be set with '
    '--config.<key>=<value>.',
  )
  parser.add_argument(
    '--config',
    default=None,
    help='A config file, optionally followed by :<config string>.',
  )
  parser.add_argument(
    '--grid',
    action='store_true',
    help='The 22 released checkpoints vs the paper.',
  )
  parser.add_argument(
    '--json', action='store_true', help='Print JSON instead of text.'
  )
  parser.add_argument(
    '--memory',
    action='store_true',
    help="Paper Table 3's MobileNetV2 column by §5.1's rule (at --config's "
    'width and resolution; default 1.0, 224).',
  )
  parser.add_argument(
    '--paper',
    action='store_true',
    help="Every row of the paper's Tables 3-7: its figure, ours, the "
    'difference and why they differ.',
  )
  return parser


def main(argv: Optional[list[str]] = None) -> None:
  parser = _parser()
  args, overrides = parser.parse_known_args(
    sys.argv[1:] if argv is None else argv
  )
  config = None
  try:
    if args.config is not None:
      config = configuration.from_command_line(args.config, overrides, 'stats')
      configuration.validate(config)
    elif overrides:
      raise ValueError(
        f'{" ".join(overrides)}: give --config <file> to override its fields.'
      )
  except (FileNotFoundError, ValueError) as error:
    parser.error(str(error))
  from mnv2_jax.models import counting
  from mnv2_jax.models import paper_tables  # jax: after parsing

  logging.set_verbosity(logging.WARNING)
  if args.memory:
    rows = (
      counting.memory_table()
      if config is None
      else counting.memory_table(
        config.model.width_multiplier, config.image_size
      )
    )
    print(
      json.dumps(rows, indent=2) if args.json else format_memory_table(rows)
    )
    return
  if args.paper:
    rows = paper_tables.paper_tables()
    print(
      json.dumps([row.as_dict() for row in rows], indent=2)
      if args.json
      else format_paper_tables(rows)
    )
    return
  if args.grid:
    rows = counting.grid_statistics()
    print(json.dumps(rows, indent=2) if args.json else format_grid(rows))
    return
  if config is None:
    parser.error('give --config <file>, --grid, --memory or --paper.')
  stats = config_statistics(config)
  print(json.dumps(stats, indent=2) if args.json else format_statistics(stats))


if __name__ == '__main__':
  main()
