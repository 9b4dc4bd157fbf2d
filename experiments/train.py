r"""Trains the DCCA retrieval model; resumes a killed run from its workdir.

  python -m experiments.train --flagfile=experiments/nottingham.flags \
      --workdir DIR [--data_dir DATA]

DATA (default in the flagfile) is the ``--data_dir`` of ``data_prep.prepare``;
the ``pieces`` config of 'train' and 'valid' is read, and its absolute path
is stored in DIR/config.json.  DIR receives checkpoints
(last + best validation R@10), ``config.json``, ``history.jsonl``, TensorBoard
events in ``tb/`` and ``training_curve.png``; see ``dccaflax.train_lib``.
Running the same command again continues from the last checkpoint with the
same data order, ending with the same parameters as an uninterrupted run.
Evaluate with ``python -m experiments.evaluate --workdir DIR``.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from dccaflax import level
from dccaflax import train_lib

_D = train_lib.TrainConfig()   # the flags' defaults (see TrainConfig)

_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (resumed if it '
                               'holds a checkpoint).', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared TFDS data '
                                '(data_prep.prepare --data_dir).',
                                required=True)
flags.DEFINE_float('width', _D.width, 'Tower width multiplier: 1 = the '
                   "paper's 16/32/64/64 feature maps, 0.25 = 4/8/16/16.")
flags.DEFINE_integer('out_dim', _D.out_dim, 'Correlation-space size h.')
flags.DEFINE_enum('dtype', _D.dtype, ['float32', 'bfloat16'],
                  'Convolution compute dtype (BatchNorm and DCCA stay '
                  'float32).')
flags.DEFINE_integer('epochs', _D.epochs, 'Epochs (passes over all training '
                     'pairs, last partial batch dropped).')
flags.DEFINE_integer('batch_size', _D.batch_size, 'Pairs per SGD step.')
flags.DEFINE_float('learning_rate', _D.learning_rate, 'Initial learning '
                   'rate.')
flags.DEFINE_float('momentum', _D.momentum, 'SGD momentum.')
flags.DEFINE_integer('lr_halve_every', _D.lr_halve_every, 'Halve the '
                     'learning rate every this many epochs.')
flags.DEFINE_float('reg', _D.reg, 'Ridge added to the covariance diagonals '
                   '(DCCA loss and CCA fit).')
flags.DEFINE_integer('seed', _D.seed, 'Initialisation, data order and '
                     'augmentation seed.')
flags.DEFINE_integer('max_train_pieces', _D.max_train_pieces, 'Use only the '
                     'first N training pieces (default: all).')
flags.DEFINE_integer('max_val_pieces', _D.max_val_pieces, 'Use only the '
                     'first N validation pieces (default: all).')
flags.DEFINE_integer('val_subset', _D.val_subset, 'Evenly spaced validation '
                     'pairs for the per-epoch R@k and correlation.')
flags.DEFINE_integer('fit_pairs', _D.fit_pairs, 'Training pairs for the CCA '
                     'fit (all if fewer).')
flags.DEFINE_integer('eval_every', _D.eval_every, 'Epochs between '
                     'evaluations and checkpoints (and after the last).')
flags.DEFINE_integer('eval_batch_size', _D.eval_batch_size, 'Pairs per '
                     'embedding call in evaluation.')
flags.DEFINE_integer('aug_dx', _D.aug_dx, 'Max random horizontal sheet shift '
                     '(px, 0 = off).')
flags.DEFINE_integer('aug_dy', _D.aug_dy, 'Max random vertical sheet shift '
                     '(px, 0 = off).')
flags.DEFINE_integer('aug_dframe', _D.aug_dframe, 'Max random onset jitter '
                     '(frames, 0 = off).')
flags.DEFINE_float('aug_gain_db', _D.aug_gain_db, 'Max random global gain '
                   'of an audio excerpt (+-dB, 0 = off).')
flags.DEFINE_float('aug_gain_curve_db', _D.aug_gain_curve_db, 'Max slow '
                   'random gain curve within an audio excerpt (dB, 0 = off).')
flags.DEFINE_enum('level_norm', _D.level_norm, list(level.METHODS), 'Bring '
                  'every audio excerpt to a reference level before the audio '
                  'tower, so a recording\'s loudness does not matter: peak '
                  '(its loudest frame), mean (its mean magnitude) or none '
                  '(the paper\'s input); see dccaflax.level.')
flags.DEFINE_string('renderings', _D.renderings, 'Audio renderings to train '
                    'on, one drawn at random per pair and step: primary (the '
                    'paper\'s data), all (every one prepared with '
                    'data_prep.prepare --soundfonts/--tempos), or tags such '
                    'as fluidr3_t0.90,timgm6mb_t1.00.  Validation uses the '
                    'primary.')
flags.DEFINE_integer('log_every', _D.log_every, 'Steps between progress '
                     'lines.')
flags.DEFINE_integer('steps_per_dispatch', _D.steps_per_dispatch, 'SGD '
                     'steps fused into one jitted call (a loop on the '
                     'device over the epoch\'s batch order); 1 = one call '
                     'per step.  Same parameters either way (up to float '
                     'rounding); larger values save dispatch overhead on '
                     'accelerators.')
flags.DEFINE_integer('max_consecutive_skips', _D.max_consecutive_skips,
                     'Stop after this many non-finite steps in a row.')

flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() '
                  'first (several hosts, each running this command; the '
                  'coordinator comes from the cluster environment or '
                  'JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / '
                  'JAX_PROCESS_ID).  The workdir must be on a file system '
                  'all hosts share.')

FLAGS = flags.FLAGS


def config_from_flags() -> train_lib.TrainConfig:
  """A ``TrainConfig`` with every field taken from the flag of its name."""
  values = {f.name: FLAGS[f.name].value
            for f in dataclasses.fields(train_lib.TrainConfig)}
  values['data_dir'] = os.path.abspath(values['data_dir'])
  return train_lib.TrainConfig(**values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.multihost:
    jax.distributed.initialize()
  config = config_from_flags()
  logging.info('JAX %s on %d %s device(s), %d process(es); config: %s',
               jax.__version__, jax.device_count(), jax.devices()[0].platform,
               jax.process_count(), config)
  if config.width != 1.0:
    logging.warning('NARROW towers (width %g): not the paper\'s full-width '
                    'model; numbers are not comparable to Table 2.',
                    config.width)
  try:
    train_lib.train_and_evaluate(config, _WORKDIR.value)
  except train_lib.NonFiniteError as e:
    sys.exit(f'error: {e}')
  except FileNotFoundError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
