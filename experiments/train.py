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

import dataclasses
import os
import sys
import typing

from absl import app
from absl import flags
from absl import logging
import jax

from dccaflax import config as config_lib
from dccaflax import training

_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (resumed if it '
                               'holds a checkpoint).', required=True)
flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() '
                  'first (several hosts, each running this command; the '
                  'coordinator comes from the cluster environment or '
                  'JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / '
                  'JAX_PROCESS_ID).  The workdir must be on a file system '
                  'all hosts share.')

FLAGS = flags.FLAGS

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, bool: flags.DEFINE_bool}


def define_config_flags(cls=config_lib.TrainConfig) -> None:
  """One flag per field of ``cls``: its name, default and help text; an enum
  where the field lists its choices, required where it says so."""
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(cls):
    meta, hint = field.metadata, hints[field.name]
    kind = next(t for t in typing.get_args(hint) or (hint,)
                if t is not type(None))
    default = None if meta.get('required') else field.default
    if meta.get('choices'):
      flags.DEFINE_enum(field.name, default, list(meta['choices']),
                        meta['help'], required=meta.get('required', False))
    else:
      _DEFINE[kind](field.name, default, meta['help'],
                    required=meta.get('required', False))


define_config_flags()


def config_from_flags() -> config_lib.TrainConfig:
  """A ``TrainConfig`` with every field taken from the flag of its name."""
  values = {f.name: FLAGS[f.name].value
            for f in dataclasses.fields(config_lib.TrainConfig)}
  values['data_dir'] = os.path.abspath(values['data_dir'])
  return config_lib.TrainConfig(**values)


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
    training.train_and_evaluate(config, _WORKDIR.value)
  except (training.NonFiniteError, FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
