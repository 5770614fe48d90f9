r"""Sweeps: the paper's experiments (§4, Figure 5, Figure 6) as one command each.

  python -m mnv2_jax.sweep --config configs/ablation_bottleneck.py --workdir /tmp/fig6a
  python -m mnv2_jax.sweep --config configs/ablation_bottleneck.py:imagenet \
      --workdir gs://bucket/fig6a --print_commands     # one line per point
  python -m mnv2_jax.sweep --config configs/ablation_bottleneck.py \
      --workdir /tmp/fig6a --report                     # tables + plots now
  python -m mnv2_jax.sweep --config configs/ablation_bottleneck.py \
      --workdir /tmp/fig6a_short --config.num_train_steps=100  # every point
  python -m mnv2_jax.sweep --config configs/sweep_mobilenet_v1.py \
      --workdir experiments/runs/peers_mobilenet_v1 --report \
      --compare_with MobileNetV2=experiments/results/sweep_width_resolution:image_size=48
                                        # + families.png: Figure 5 with peers

An experiment config file defines, beside the usual `get_config()`,

  def get_sweep(scale=None) -> list[dict[str, Any]]:
    # `scale`: the text after the colon of `--config file.py:scale`
    # one dict of dotted config overrides per point; seeds are an axis
    return [{'model.bottleneck_activation': a, 'seed': s}
            for a in ('linear', 'relu6') for s in (0, 1, 2)]

Every point runs through the normal entry point (`python -m mnv2_jax.main`,
the same command `--print_commands` prints) in `<workdir>/<point-name>/`, one
after the other or `--jobs` at a time (on one GPU each point gets
`--memory_fraction` of the card, default 0.9 / jobs, and no preallocation);
after each point the runner prints how many are done and to go, with an ETA.
A point whose `point.json` exists is finished and never trained again;
any other point is (re)started, and `main` resumes it from its latest
checkpoint. When every point has finished (or with `--report` at any time,
also while a sweep is running: the points finished so far) the finished points are summarised in `<workdir>/results.md` (one row per
point without its seed: mean ± std over seeds of the final test metrics,
scored once at the end, and of the validation split, where settings are
chosen; parameters, multiply-adds), `<workdir>/results.csv` (one row per run)
and PNG plots: the headline metric against each swept number, the validation
metric against training step (Figure 6's curves) and against multiply-adds
(Figure 5's frontier, with the released ImageNet checkpoints beside ours when
the sweep runs on ImageNet).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Optional


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog='python -m mnv2_jax.sweep',
    description='Runs, resumes and reports a sweep of training runs.',
    epilog='Any config field can be set for every point of the sweep with '
    '--config.<key>=<value> (e.g. --config.num_epochs=24), except a field '
    'the sweep varies.',
  )
  parser.add_argument(
    '--config',
    required=True,
    help='An experiment config file (with get_sweep()), '
    'optionally followed by :<config string>.',
  )
  parser.add_argument('--workdir', required=True)
  parser.add_argument(
    '--print_commands',
    action='store_true',
    help='Print one launch command per unfinished point and exit.',
  )
  parser.add_argument(
    '--results_dir',
    default=None,
    help='Where results.md, results.csv and the plots go '
    '(default: the workdir).',
  )
  parser.add_argument(
    '--report',
    action='store_true',
    help='Only write the tables and plots of the finished points.',
  )
  parser.add_argument(
    '--compare_with',
    action='append',
    default=[],
    metavar='LABEL=RESULTS_DIR[:FIELD=VALUE,...]',
    help='Another reported sweep to draw beside this one in families.png '
    '(Figure 5 with peers: validation and test metric against '
    'multiply-adds, one line per family); FIELD=VALUE keeps its rows with '
    'that value, e.g. MobileNetV2=experiments/results/'
    'sweep_width_resolution:image_size=48. A label given twice joins '
    'both sweeps into one line. Repeatable.',
  )
  parser.add_argument(
    '--jobs',
    type=int,
    default=1,
    help='How many points train at once on this machine '
    '(each its own process); on a 2-core CPU, 2 finish '
    'a sweep of small runs sooner than 1.',
  )
  parser.add_argument(
    '--memory_fraction',
    type=float,
    default=None,
    help='GPU memory each point may take (XLA_PYTHON_CLIENT_MEM_FRACTION); '
    'default 0.9 / --jobs when --jobs > 1. Each point allocates on demand '
    '(no preallocation), so several share one card.',
  )
  return parser


def main(argv: Optional[list[str]] = None) -> int:
  parser = _parser()
  args, config_overrides = parser.parse_known_args(argv)
  from mnv2_jax.experiments import points as sweep_points  # jax: after parsing

  if args.memory_fraction is not None and not (
    0.0 < args.memory_fraction * args.jobs <= 1.0
  ):
    parser.error(
      f'--memory_fraction={args.memory_fraction} x --jobs={args.jobs} must '
      'be in (0, 1]: the points share one card.'
    )
  if args.jobs < 1:
    parser.error(f'--jobs={args.jobs}: give 1 or more points at once.')
  try:
    base, points = sweep_points.load_experiment(args.config, config_overrides)
    compared = [_compared_sweep(c) for c in args.compare_with]
  except (FileNotFoundError, ValueError) as error:
    parser.error(str(error))
  title = sweep_points.experiment_title(args.config)
  if args.print_commands:
    _print_commands(args.config, args.workdir, points)
    return 0
  if not args.report and not _run(args, base, points):
    return 1
  for path in _report(args, base, points, title, compared):
    print(f'wrote {path}')
  return 0


def _print_commands(config: str, workdir: str, points) -> None:
  """One launch command per unfinished point."""
  from mnv2_jax.experiments import points as sweep_points  # jax: after parsing
  from mnv2_jax.experiments import runner as sweep_runner

  for overrides in points:
    if not sweep_runner.is_finished(workdir, overrides):
      command = sweep_points.point_command(config, workdir, overrides)
      print(' '.join(shlex.quote(c) for c in command))


def _run(args, base, points) -> bool:
  """Trains every unfinished point; False when some failed."""
  from mnv2_jax.experiments import report as sweep_report  # jax: after parsing
  from mnv2_jax.experiments import runner as sweep_runner

  def say(line):  # whole lines, whichever thread writes
    sys.stdout.write(line + '\n')
    sys.stdout.flush()

  failures = sweep_runner.run_all(
    args.config,
    args.workdir,
    points,
    sweep_report.headline_metric(base),
    args.jobs,
    say,
    args.memory_fraction,
  )
  if failures:
    print(
      f'{len(failures)} point(s) failed: {", ".join(failures)}. Run '
      'the same command again to retry them.',
      flush=True,
    )
  return not failures


def _report(args, base, points, title, compared) -> list[str]:
  """The tables and plots of the finished points, and families.png with
  the --compare_with sweeps."""
  from mnv2_jax.experiments import plots as sweep_plots  # jax: after parsing
  from mnv2_jax.experiments import report as sweep_report

  written = sweep_report.report(
    base, points, args.workdir, title, args.results_dir
  )
  if compared:
    results_dir = args.results_dir or args.workdir
    families = {title: sweep_report.read_family(results_dir)}
    for label, points_of_label in compared:
      families.setdefault(label, []).extend(points_of_label)
    written.append(
      sweep_plots.plot_families(
        os.path.join(results_dir, 'families.png'), families
      )
    )
  return written


def _compared_sweep(argument: str) -> tuple[str, list[dict]]:
  """'LABEL=RESULTS_DIR[:FIELD=VALUE,...]' -> (label, its points)."""
  from mnv2_jax.experiments import report as sweep_report  # jax: after parsing

  label, separator, rest = argument.partition('=')
  if not separator or not label or not rest:
    raise ValueError(
      f'--compare_with={argument}: give LABEL=RESULTS_DIR, optionally '
      'followed by :FIELD=VALUE,..., e.g. '
      'MobileNetV2=experiments/results/sweep_width_resolution:image_size=48.'
    )
  results_dir, _, selection = rest.partition(':')
  where = {}
  for item in filter(None, selection.split(',')):
    field, separator, value = item.partition('=')
    if not separator:
      raise ValueError(
        f'--compare_with={argument}: {item!r} is not FIELD=VALUE.'
      )
    where[field] = value
  points = sweep_report.read_family(results_dir, where)
  if not points:
    raise ValueError(
      f'--compare_with={argument}: no row of {results_dir}/results.md has '
      f'{where}.'
    )
  return label, points


if __name__ == '__main__':
  sys.exit(main())
