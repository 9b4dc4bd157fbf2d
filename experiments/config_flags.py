"""Command-line flags made from ``dccaflax.config.TrainConfig``: one source.

Every setting of ``TrainConfig`` becomes a flag of the same name with the
field's default and help text (an enum where the field lists its choices,
required where it says so), so a setting is written once, on the field or,
for an augmentation, in ``dccaflax.augment.REGISTRY`` (flags
``--aug_<name>``).
Entry points that train (``experiments.train``, ``experiments.gpu_run``)
call ``define()`` at import and ``config()`` in ``main``.
"""

from __future__ import annotations

import os
import typing

from absl import flags

from dccaflax import config as config_lib

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, bool: flags.DEFINE_bool}


def define(cls=config_lib.TrainConfig, flag_values=flags.FLAGS) -> None:
  """One flag per setting of ``cls`` (``config.flat_settings``: the
  augmentation's as ``aug_<name>``) in ``flag_values``."""
  for name, field, hint in config_lib.flat_settings(cls):
    meta = field.metadata
    kind = next(t for t in typing.get_args(hint) or (hint,)
                if t is not type(None))
    required = meta.get('required', False)
    default = None if required else field.default
    if meta.get('choices'):
      flags.DEFINE_enum(name, default, list(meta['choices']), meta['help'],
                        required=required, flag_values=flag_values)
    else:
      _DEFINE[kind](name, default, meta['help'], required=required,
                    flag_values=flag_values)


def config(flag_values=flags.FLAGS, **overrides) -> config_lib.TrainConfig:
  """A ``TrainConfig`` with every setting taken from the flag of its name
  (``data_dir`` made absolute), then ``overrides`` (by flag name)."""
  values = {name: flag_values[name].value
            for name, _, _ in config_lib.flat_settings()}
  values['data_dir'] = os.path.abspath(values['data_dir'])
  values.update(overrides)
  return config_lib.TrainConfig.from_flat(**values)
