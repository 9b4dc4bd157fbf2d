r"""The paper's whole experiment in one command, within a time budget.

  python -m experiments.gpu_run --flagfile=experiments/nottingham.flags \
      --data_dir PACK --out OUT [--seeds 0,1,2,3] [--budget_s 540] \
      [--bench gpu|quick|tiny|none] [--bench_s 150] [--torch_peer PEER.py]

For a machine lent briefly (one command of at most 10 minutes, a few files
back): it reads packed data (``data_prep.pack``; NumPy alone, no TFDS),
benchmarks (``dccaflax.benchmark``, for at most ``--bench_s``; training then
uses the steps per dispatch it found fastest), trains the models of
``--seeds`` side by side (``training.train_side_by_side``, one
vmapped step) until the budget says stop, evaluates each model's best
checkpoint with the paper's protocol (the first 16,000 pairs of train, valid
and test, both directions), runs the PyTorch peer with the time left, and
writes into ``OUT`` (7 files):

  gpu_run.log          the log of the whole run
  eval.md, eval.json   Table 2 layout, mean ± sd over the seeds, next to
                       the paper's; every seed's rows, epochs reached
  bench.md, bench.json the benchmark (and the peer's ratio)
  training_curves.png  validation curves of every seed
  models.tar.gz        each seed's workdir: config, history, best checkpoint

The budget: the first epoch measures the speed, training stops before an
epoch that would not leave ``--reserve_s`` for evaluation and the peer, and
the last epoch reached is always evaluated and saved.  Running the same
command again (same ``--workdir``) resumes the models where they stopped.
Every setting of ``TrainConfig`` is a flag, as for ``experiments.train``.
"""

from __future__ import annotations

import dataclasses
import json
import logging as pylogging
import os
import sys
import tarfile
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax

import dccaflax
from dccaflax import benchmark
from dccaflax import checkpoints
from dccaflax.evaluators import paper
from dccaflax.evaluators import results
from dccaflax import presentation
from dccaflax import training
from experiments import config_flags

_OUT = flags.DEFINE_string('out', None, 'Folder for the results (created).',
                           required=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', os.path.join(tempfile.gettempdir(), 'dccaflax_gpu_run'),
    'Where the models train (seed_<s>/ each); the same folder resumes them.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3'], 'One model per '
                           'seed, trained side by side (4: a K of the '
                           'benchmark, see --pick_dispatch).')
_BUDGET_S = flags.DEFINE_float('budget_s', 540.0, 'Seconds for the whole '
                               'command, from its start.')
_RESERVE_S = flags.DEFINE_float('reserve_s', 90.0, 'Seconds kept after '
                                'training for evaluation and the peer.')
_BENCH = flags.DEFINE_enum('bench', 'gpu', ['none', *benchmark.PRESETS],
                           'Benchmark preset (dccaflax.benchmark.PRESETS).')
_BENCH_S = flags.DEFINE_float('bench_s', 150.0, 'Seconds after which the '
                              'benchmark skips its remaining training rows.')
_TORCH_PEER = flags.DEFINE_string('torch_peer', None, 'A PyTorch peer script '
                                  'to run with the time left (needs torch).')
_PICK_DISPATCH = flags.DEFINE_bool(
    'pick_dispatch', True, 'Train with the steps per dispatch the benchmark '
    'found fastest for this many models at this batch size and dtype (when '
    'it measured them).')
_SPLITS = flags.DEFINE_list('splits', ['train', 'valid', 'test'], 'Splits of '
                            'the paper\'s protocol.')

FLAGS = flags.FLAGS
config_flags.define()


def _log_to(path: str) -> None:
  """Also writes the absl log (and what ``_say`` prints) to ``path``."""
  handler = pylogging.FileHandler(path)
  handler.setFormatter(pylogging.Formatter('%(asctime)s %(message)s'))
  logging.get_absl_logger().addHandler(handler)


def _say(text: str, table: bool = False) -> None:
  """A line of the log (stderr and gpu_run.log); a table also on stdout."""
  if table:
    print(text, flush=True)
  logging.info('%s', text)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  t_start = time.time()
  end = t_start + _BUDGET_S.value
  out = _OUT.value
  os.makedirs(out, exist_ok=True)
  _log_to(os.path.join(out, 'gpu_run.log'))
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    sys.exit(f'error: --seeds must be integers, got {_SEEDS.value}')
  config = config_flags.config()
  _say(f'JAX {jax.__version__} on {jax.device_count()} x '
       f'{jax.devices()[0].device_kind}; seeds {seeds}; budget '
       f'{_BUDGET_S.value:.0f} s; config {config}')

  bench = None
  if _BENCH.value != 'none':
    bench = benchmark.run_all(**benchmark.PRESETS[_BENCH.value],
                              deadline=time.time() + _BENCH_S.value, log=_say)
    _say(f'benchmark done after {time.time() - t_start:.0f} s')
    if _PICK_DISPATCH.value:
      config = _fastest_dispatch(config, bench['train'], len(seeds))

  workdirs = [os.path.join(_WORKDIR.value, f'seed_{s}') for s in seeds]
  try:
    training.train_side_by_side(config, workdirs, seeds,
                                deadline=end - _RESERVE_S.value)
  except (training.NonFiniteError, FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  _say(f'training done after {time.time() - t_start:.0f} s')

  models = [dccaflax.load(workdir) for workdir in workdirs]
  rows = paper.run(models, config.data_dir, _SPLITS.value, full=False,
                   log=_say)
  per_seed, histories, epochs = {}, {}, {}
  for seed, workdir, model, model_rows in zip(seeds, workdirs, models, rows):
    per_seed[seed] = model_rows
    histories[f'seed {seed}'] = checkpoints.read_history(workdir)
    epochs[seed] = {'reached': histories[f'seed {seed}'][-1]['epoch'],
                    'best': model.epoch}
  _say(f'evaluation done after {time.time() - t_start:.0f} s')

  if bench is not None and _TORCH_PEER.value:
    peer = benchmark.run_torch_peer(
        _TORCH_PEER.value, timeout_s=max(end - time.time() - 15, 1), log=_say)
    if peer is not None:
      bench['torch_peer'] = peer
      bench['torch_ratio'] = benchmark.peer_ratios(bench['train'], peer)
  _write(out, config, seeds, workdirs, per_seed, histories, epochs, bench,
         t_start)


def _fastest_dispatch(config, rows, n_models: int):
  """``config`` with the steps per dispatch of the fastest benchmark row
  of its batch size, dtype and number of models (unchanged if none)."""
  rows = [r for r in rows if r['models'] == n_models
          and r['batch'] == config.batch_size and r['dtype'] == config.dtype]
  if not rows:
    _say(f'no benchmark row for {n_models} models at batch '
         f'{config.batch_size} {config.dtype}: steps per dispatch stays '
         f'{config.steps_per_dispatch}')
    return config
  best = max(rows, key=lambda r: r['pairs_per_s'])
  _say(f'training with {best["steps_per_dispatch"]} steps per dispatch '
       f'({best["pairs_per_s"]:.0f} pairs/s in the benchmark)')
  return dataclasses.replace(config,
                             steps_per_dispatch=best['steps_per_dispatch'])


def _write(out, config, seeds, workdirs, per_seed, histories, epochs, bench,
           t_start) -> None:
  """The results files (see the module doc)."""
  rows = results.mean_sd([per_seed[s] for s in seeds])
  reached = sorted({e['reached'] for e in epochs.values()})
  title = (f'{len(seeds)} seeds ({", ".join(map(str, seeds))}), mean ± sd; '
           f'width {config.width:g}, {reached[-1]} of {config.epochs} epochs '
           'reached; best checkpoints (epochs '
           f'{", ".join(str(epochs[s]["best"]) for s in seeds)})')
  table = paper.markdown(rows, title)
  with open(os.path.join(out, 'eval.md'), 'w') as f:
    f.write(table)
  with open(os.path.join(out, 'eval.json'), 'w') as f:
    json.dump({'seeds': seeds, 'epochs': epochs, 'rows': rows,
               'per_seed': per_seed, 'config': config.to_json(),
               'budget_s': _BUDGET_S.value, 'paper': paper.PAPER,
               'seconds': time.time() - t_start}, f, indent=1)
  _say(table, table=True)
  presentation.plot_history(
      histories, os.path.join(out, 'training_curves.png'),
      f'width {config.width:g}, {len(seeds)} seeds side by side')
  if bench is not None:
    with open(os.path.join(out, 'bench.json'), 'w') as f:
      json.dump(bench, f, indent=1)
    with open(os.path.join(out, 'bench.md'), 'w') as f:
      f.write(benchmark.format_table(bench) + '\n')
    _say(benchmark.format_table(bench), table=True)
  with tarfile.open(os.path.join(out, 'models.tar.gz'), 'w:gz') as tar:
    for seed, workdir in zip(seeds, workdirs):
      for name in (checkpoints.CONFIG_FILE, checkpoints.HISTORY_FILE,
                   checkpoints.BEST_DIR):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
          tar.add(path, arcname=os.path.join(f'seed_{seed}', name))
  _say(f'wrote {out} in {time.time() - t_start:.0f} s')


if __name__ == '__main__':
  app.run(main)
