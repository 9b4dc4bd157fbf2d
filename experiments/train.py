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
Evaluate with ``python -m experiments.evaluate --workdir DIR``.

Every field of ``dccaflax.config.TrainConfig`` is a flag of the same name,
with the field's default and help text (``--helpfull`` lists them).
"""

from __future__ import annotations

import sys

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

FLAGS = flags.FLAGS
config_flags.define()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
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
    training.train_and_evaluate(config, _WORKDIR.value)
  except (training.NonFiniteError, FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
