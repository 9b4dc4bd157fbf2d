r"""Trains the DCCA retrieval model; resumes a killed run from its workdir.

  python -m experiments.train --flagfile=experiments/nottingham.flags \
      --workdir DIR [--data_dir DATA]

DATA (default in the flagfile) is the ``--data_dir`` of ``data_prep.prepare``;
the ``pieces`` config of 'train' and 'valid' is read, and its absolute path
is stored in DIR/config.json.  DIR receives checkpoints
(last + best validation R@10), ``config.json``, ``history.jsonl``, TensorBoard
events in ``tb/`` and ``training_curve.png``; see ``dccaflax.checkpoints``.
Running the same command again continues from the last checkpoint with the
same data order, ending with the same parameters as an uninterrupted run.
Evaluate with ``python -m experiments.eval --workdir DIR``.

A campaign in sessions of limited time (``--budget_s``): training stops
before an epoch that would not end (evaluated and checkpointed) within the
budget, and the same command later -- on this machine or another with the
data prepared -- continues from there::

  python -m experiments.train --flagfile=experiments/nottingham_cpu.flags \
      --workdir models/nottingham_paper --budget_s 5400

Every field of ``dccaflax.config.TrainConfig`` is a flag of the same name,
with the field's default and help text (``--helpfull`` lists them).
"""

from __future__ import annotations

import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax

from dccaflax import training
from experiments import config_flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (resumed if it '
                               'holds a checkpoint).', required=True)
flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() '
                  'first (several hosts, each running this command; the '
                  'coordinator comes from the cluster environment or '
                  'JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / '
                  'JAX_PROCESS_ID).  The workdir must be on a file system '
                  'all hosts share.')

_BUDGET_S = flags.DEFINE_float(
    'budget_s', None, 'Seconds this run may take from its start (data '
    'loading included): no epoch is begun that would not end, evaluated '
    'and checkpointed, in time (the first epoch measures the speed). '
    'Default: run all --epochs.')

FLAGS = flags.FLAGS
config_flags.define()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  deadline = None
  if _BUDGET_S.value is not None:
    if _BUDGET_S.value <= 0:
      raise app.UsageError(f'--budget_s must be > 0, got {_BUDGET_S.value}')
    deadline = time.time() + _BUDGET_S.value
  if FLAGS.multihost:
    jax.distributed.initialize()
  config = config_flags.config()
  logging.info('JAX %s on %d %s device(s), %d process(es); config: %s',
               jax.__version__, jax.device_count(), jax.devices()[0].platform,
               jax.process_count(), config)
  if config.width != 1.0:
    logging.warning('NARROW towers (width %g): not the paper\'s full-width '
                    'model; numbers are not comparable to Table 2.',
                    config.width)
  try:
    training.train_and_evaluate(config, _WORKDIR.value, deadline=deadline)
  except (training.NonFiniteError, FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
