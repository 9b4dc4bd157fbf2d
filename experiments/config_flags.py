"""Command-line flags made from ``dccaflax.config.TrainConfig``: one source.

Every field of ``TrainConfig`` becomes a flag of the same name with the
field's default and help text (an enum where the field lists its choices,
required where it says so), so a setting is written once, on the field.
Entry points that train (``experiments.train``, ``experiments.gpu_run``)
call ``define()`` at import and ``config()`` in ``main``.
"""

from __future__ import annotations

import dataclasses
import os
import typing

from absl import flags

from dccaflax import config as config_lib

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, bool: flags.DEFINE_bool}


def define(cls=config_lib.TrainConfig, flag_values=flags.FLAGS) -> None:
  """One flag per field of ``cls`` in ``flag_values``."""
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(cls):
    meta, hint = field.metadata, hints[field.name]
    kind = next(t for t in typing.get_args(hint) or (hint,)
                if t is not type(None))
    required = meta.get('required', False)
    default = None if required else field.default
    if meta.get('choices'):
      flags.DEFINE_enum(field.name, default, list(meta['choices']),
                        meta['help'], required=required,
                        flag_values=flag_values)
    else:
      _DEFINE[kind](field.name, default, meta['help'], required=required,
                    flag_values=flag_values)


def config(flag_values=flags.FLAGS, **overrides) -> config_lib.TrainConfig:
  """A ``TrainConfig`` with every field taken from the flag of its name
  (``data_dir`` made absolute), then ``overrides``."""
  values = {f.name: flag_values[f.name].value
            for f in dataclasses.fields(config_lib.TrainConfig)}
  values['data_dir'] = os.path.abspath(values['data_dir'])
  values.update(overrides)
  return config_lib.TrainConfig(**values)
