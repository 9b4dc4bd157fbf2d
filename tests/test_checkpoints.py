"""The workdir's config: architecture settings are fixed once written."""

import dataclasses
import json
import os
import shutil

import pytest

from dccaflax import checkpoints
from dccaflax import config as config_lib


def _config(tmp_path, **kw):
  return config_lib.TrainConfig(data_dir=str(tmp_path / 'data'), **kw)


@pytest.mark.parametrize('setting,value', [
    ('width', 0.5), ('out_dim', 16), ('dtype', 'bfloat16'),
    ('level_norm', 'none')])
def test_resuming_with_another_architecture_is_refused(tmp_path, setting,
                                                         value):
  config = _config(tmp_path, width=0.25)
  checkpoints.write_config(str(tmp_path), config)
  before = (tmp_path / checkpoints.CONFIG_FILE).read_text()
  with pytest.raises(checkpoints.ArchitectureChangedError) as e:
    checkpoints.write_config(str(tmp_path),
                             dataclasses.replace(config, **{setting: value}))
  assert setting in str(e.value) and repr(value) in str(e.value)
  assert 'new --workdir' in str(e.value)
  assert (tmp_path / checkpoints.CONFIG_FILE).read_text() == before


def test_other_settings_may_change_on_resume(tmp_path):
  config = _config(tmp_path, width=0.25)
  checkpoints.write_config(str(tmp_path), config)
  checkpoints.write_config(
      str(tmp_path), dataclasses.replace(config, learning_rate=0.05,
                                         epochs=7))
  stored = checkpoints.read_config(str(tmp_path))
  assert (stored.learning_rate, stored.epochs) == (0.05, 7)


def test_architecture_of_a_config_from_before_level_norm(tmp_path):
  """A config.json without level_norm was trained on the paper's input
  ('none'): resuming it with the new default ('peak') is refused."""
  d = _config(tmp_path).to_json()
  del d['level_norm']
  (tmp_path / checkpoints.CONFIG_FILE).write_text(json.dumps(d))
  with pytest.raises(checkpoints.ArchitectureChangedError, match='level_norm'):
    checkpoints.write_config(str(tmp_path), _config(tmp_path))


@pytest.mark.parametrize('name', sorted(checkpoints.shipped_models()))
def test_shipped_models_resume_with_their_own_config(tmp_path, name):
  workdir = tmp_path / name
  os.makedirs(workdir)
  shutil.copy(os.path.join(checkpoints.resolve(name),
                           checkpoints.CONFIG_FILE), workdir)
  config = checkpoints.read_config(str(workdir))
  checkpoints.write_config(str(workdir), config)   # no error
  assert config_lib.architecture(checkpoints.read_config(str(workdir))) == (
      config_lib.architecture(config))
