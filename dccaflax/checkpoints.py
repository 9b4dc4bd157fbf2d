"""The training workdir on disk: config, checkpoints, history.

Everything needed to rebuild a model lives in its workdir::

  config.json          ``config.TrainConfig`` (width, out_dim, dtype, ...)
  checkpoints/<epoch>/ last checkpoint (resume): items 'state' (the
                       ``training.TrainState``), 'model' (the inference
                       tree: params, batch_stats, projection), 'meta' (JSON)
  best/<epoch>/        the same for the best validation R@10 so far
  history.jsonl        one JSON line of metrics per evaluated epoch
  tb/                  TensorBoard events (tensorboardX; no TensorFlow)
  training_curve.png   loss and validation R@10 vs epoch

Reading a model for inference (``restore_model``) needs the config and the
'model' item only, not the trainer: the restore target is built from the
config (``inference_target``).  Models shipped with the repository live in
``models/<name>/`` (each with its model card, ``README.md``) and are found
by name (``resolve``).  Checkpoints are written with orbax, one kept
per folder, synchronously.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Optional

from absl import logging
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from dccaflax import cca
from dccaflax import config as config_lib
from dccaflax import models

CONFIG_FILE = 'config.json'
HISTORY_FILE = 'history.jsonl'
CURVE_FILE = 'training_curve.png'
TB_DIR = 'tb'
LAST_DIR = 'checkpoints'
BEST_DIR = 'best'


# Shipped models: <repository>/models/<name>/ (or $DCCAFLAX_MODELS/<name>/).
MODELS_ENV = 'DCCAFLAX_MODELS'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_DIR = os.path.join(REPO_ROOT, 'models')


def portable_path(path: str) -> str:
  """``path`` relative to the repository's root when it lies inside it
  (as a shipped model's files record their data), else unchanged."""
  if not path:
    return path
  full = os.path.abspath(path)
  if full.startswith(REPO_ROOT + os.sep):
    return os.path.relpath(full, REPO_ROOT)
  return path


def shipped_models() -> dict[str, str]:
  """Name -> folder of every shipped model (a folder of ``models/``, or of
  ``$DCCAFLAX_MODELS`` first, that holds a ``config.json``)."""
  found = {}
  for root in (SHIPPED_DIR, os.environ.get(MODELS_ENV)):
    if root and os.path.isdir(root):
      for name in sorted(os.listdir(root)):
        if os.path.isfile(os.path.join(root, name, CONFIG_FILE)):
          found[name] = os.path.join(root, name)
  return found


def resolve(model: str | os.PathLike) -> str:
  """A workdir from a path, or from the name of a shipped model.

  Args:
    model: a training workdir (any path that is a folder, or a folder
      relative to the repository's root), or a bare name such as
      ``'nottingham_paper'`` (``shipped_models()``).

  Returns:
    The absolute path of the workdir.

  Raises:
    FileNotFoundError: neither a folder nor a shipped model's name; the
      message lists the shipped models.
  """
  model = os.fspath(model)
  if os.path.isdir(model):
    return os.path.abspath(model)
  # as a workdir's config records a folder of the repository (portable_path)
  if not os.path.isabs(model) and os.path.isdir(os.path.join(REPO_ROOT,
                                                              model)):
    return os.path.join(REPO_ROOT, model)
  shipped = shipped_models()
  if os.sep not in model and model in shipped:
    return shipped[model]
  raise FileNotFoundError(
      f'no model {model!r}: not a folder, nor the name of a shipped model '
      f'({", ".join(shipped) or "none found in " + SHIPPED_DIR}); give a '
      'training workdir or one of those names')


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


class ArchitectureChangedError(ValueError):
  """Resuming a workdir, or initialising a run from a model
  (``warm_start``), with other architecture settings than it holds."""


def write_config(workdir: str, config: config_lib.TrainConfig) -> None:
  """Writes ``config.json``; warns when resuming with different settings.

  Raises:
    ArchitectureChangedError: the workdir already holds a config whose
      architecture settings (``config_lib.architecture``: width, out_dim,
      dtype, level_norm) differ from ``config``'s.  Its weights were made
      with those; another value would be stored beside them and served.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  new = config.to_json()
  # A data folder inside the repository is stored relative to its root, so
  # a workdir (a shipped model) names no folder of the machine it ran on.
  new['data_dir'] = portable_path(new['data_dir'])
  new['init_from'] = portable_path(new['init_from'])
  if os.path.exists(path):
    with open(path) as f:
      # as the run is read back: a setting added since has its default
      stored = config_lib.TrainConfig.from_json(json.load(f))
    fixed = _architecture_changes(path, stored, config, 'resuming it')
    if fixed:
      raise ArchitectureChangedError(
          fixed + ' would serve its weights under another architecture. '
          'Resume with the stored values (drop those flags), or train into a '
          'new --workdir.')
    old = stored.to_json()
    changed = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if changed:
      logging.warning('resuming %s with changed settings (old, new): %s',
                      workdir, changed)
  with open(path, 'w') as f:
    json.dump(new, f, indent=2, sort_keys=True)


def _architecture_changes(path: str, stored: config_lib.TrainConfig,
                          config: config_lib.TrainConfig, use: str) -> str:
  """'' when ``stored`` (the config at ``path``) and ``config`` agree on every
  architecture setting, else a sentence naming each that differs."""
  arch_old = config_lib.architecture(stored)
  fixed = {k: (arch_old[k], v)
           for k, v in config_lib.architecture(config).items()
           if arch_old[k] != v}
  if not fixed:
    return ''
  return (f'{path} was trained with ' + ', '.join(
      f'{k}={old!r}' for k, (old, _) in fixed.items()) + f'; {use} with ' +
          ', '.join(f'{k}={v!r}' for k, (_, v) in fixed.items()))


def read_config(workdir: str) -> config_lib.TrainConfig:
  """The ``TrainConfig`` of a workdir.

  Raises:
    FileNotFoundError: no ``config.json`` (not a training workdir).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: not a training workdir')
  with open(path) as f:
    d = json.load(f)
  if d.get('data_dir') and not os.path.isabs(d['data_dir']):
    d['data_dir'] = os.path.join(REPO_ROOT, d['data_dir'])   # see above
  return config_lib.TrainConfig.from_json(d)


# --------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------


def read_history(workdir: str, up_to_epoch: Optional[int] = None
                 ) -> list[dict]:
  """History lines of a workdir.

  Args:
    workdir: the training workdir.
    up_to_epoch: when resuming, the checkpoint's epoch: later lines (from a
      killed run) are dropped and the file rewritten.  None: read only.
  """
  path = os.path.join(workdir, HISTORY_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if up_to_epoch is not None:
    rows = [r for r in rows if r['epoch'] <= up_to_epoch]
    with open(path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in rows)
  return rows


def append_history(workdir: str, row: dict) -> None:
  """Appends one epoch's metrics to ``history.jsonl``."""
  with open(os.path.join(workdir, HISTORY_FILE), 'a') as f:
    f.write(json.dumps(row) + '\n')


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
  """Silences orbax's INFO chatter (dozens of lines per save) for a block."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


def _manager(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False))


def inference_tree(variables: dict, projection: cca.Projection) -> dict:
  """What inference restores: the towers' variables and the projection."""
  return {'params': variables['params'],
          'batch_stats': variables['batch_stats'],
          'projection': dict(projection._asdict())}


def inference_target(config: config_lib.TrainConfig) -> dict:
  """An ``inference_tree`` of the structure ``config``'s model has (shapes
  and dtypes only): the restore target of the 'model' item."""
  variables = models.variable_shapes(models.from_config(config))
  k = config.out_dim
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  projection = cca.Projection(mean_x=f32(k), mean_y=f32(k),
                              U=f32(k, k), V=f32(k, k), corr=f32(k))
  return inference_tree(variables, projection)


def save_checkpoint(directory: str, epoch: int, state: Any,
                    projection: cca.Projection, meta: dict) -> None:
  """Saves (state, inference tree, meta JSON) as checkpoint ``epoch``.

  Args:
    directory: ``workdir/checkpoints`` or ``workdir/best``.
    epoch: the checkpoint's number (a re-run of an epoch replaces it).
    state: the ``training.TrainState`` (its ``variables`` go into the
      inference tree).
    projection: the CCA projection fitted at this epoch.
    meta: JSON-able dict (epoch, step, best metric, the epoch's metrics).
  """
  with _quiet():
    mngr = _manager(directory)
    if epoch in mngr.all_steps():   # a re-run of an epoch after a kill
      mngr.delete(epoch)
    mngr.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        model=ocp.args.StandardSave(inference_tree(state.variables,
                                                   projection)),
        meta=ocp.args.JsonSave(meta)), force=True)
    mngr.wait_until_finished()
    mngr.close()
  scrub_machine_paths(os.path.join(directory, str(epoch)))


def scrub_machine_paths(folder: str) -> None:
  """Rewrites orbax's ``commit_success.txt`` markers (which name the
  absolute folder they were written to) without the path, so a shipped
  checkpoint names no folder of the machine it was trained on; orbax
  reads only whether the marker exists."""
  for root, _, files in os.walk(folder):
    if 'commit_success.txt' in files:
      with open(os.path.join(root, 'commit_success.txt'), 'w') as f:
        f.write('Checkpoint commit was successful.\n')


def latest_epoch(directory: str) -> Optional[int]:
  """Epoch of the newest checkpoint in ``directory``, or None."""
  if not os.path.isdir(directory):
    return None
  with _quiet():
    mngr = _manager(directory)
    step = mngr.latest_step()
    mngr.close()
  return step


def restore_checkpoint(directory: str, target_state: Optional[Any],
                       target_model: Optional[dict],
                       epoch: Optional[int] = None) -> dict:
  """Restores the items whose targets are given (and always 'meta').

  Args:
    directory: ``workdir/checkpoints`` or ``workdir/best``.
    target_state: a ``TrainState`` of the right structure (e.g. fresh), or
      None to skip the training state.
    target_model: an ``inference_tree`` of the right structure
      (``inference_target``), or None.
    epoch: which checkpoint (default: the newest).

  Returns:
    dict with 'meta' and, if requested, 'state' and 'model'.

  Raises:
    FileNotFoundError: no such folder, or no checkpoint in it.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint folder {directory}')
  with _quiet():
    mngr = _manager(directory)
    epoch = mngr.latest_step() if epoch is None else epoch
    if epoch is None:
      raise FileNotFoundError(f'no checkpoint in {directory}')
    items = {'meta': ocp.args.JsonRestore()}
    if target_state is not None:
      items['state'] = ocp.args.StandardRestore(target_state)
    if target_model is not None:
      items['model'] = ocp.args.StandardRestore(target_model)
    restored = mngr.restore(epoch, args=ocp.args.Composite(**items))
    mngr.close()
  # Through the host: orbax returns committed arrays, whose sharding would
  # make every jitted function compile again for them.
  return {k: restored[k] if k == 'meta' else jax.tree.map(
      jnp.asarray, jax.device_get(restored[k])) for k in items}


def warm_start(state: Any, config: config_lib.TrainConfig) -> Any:
  """``state`` with the towers of ``config.init_from`` (unchanged if empty).

  Its best checkpoint's parameters and BatchNorm statistics replace those of
  ``state`` (a fresh ``TrainState``); the step, optimizer state and
  skip counters stay fresh, so the learning-rate schedule starts again.

  Raises:
    FileNotFoundError: ``init_from`` is no workdir or shipped model, or has
      no checkpoint.
    ArchitectureChangedError: its width, out_dim, dtype or level_norm is not
      ``config``'s (named in the message).
  """
  if not config.init_from:
    return state
  workdir = resolve(config.init_from)
  source, variables, _, epoch = restore_model(workdir)
  fixed = _architecture_changes(os.path.join(workdir, CONFIG_FILE), source,
                                config, 'initialising a run')
  if fixed:
    raise ArchitectureChangedError(
        f'--init_from={config.init_from}: {fixed}, whose weights have other '
        'shapes or were trained to see another input. Give this run its '
        'settings (drop those flags) or initialise from another model.')
  logging.info('initialised from %s (epoch %d): parameters and BatchNorm '
               'statistics', workdir, epoch)
  return state.replace(params=variables['params'],
                       batch_stats=variables['batch_stats'])


def restore_model(workdir: str, which: str = 'best'
                  ) -> tuple[config_lib.TrainConfig, dict, cca.Projection,
                             int]:
  """The inference part of a workdir's checkpoint.

  Args:
    workdir: a training workdir.
    which: 'best' (best validation R@10; falls back to the last checkpoint
      when there is no best one) or 'last'.

  Returns:
    ``(config, variables, projection, epoch)``: variables
    {'params', 'batch_stats'} of the towers.

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint.
    ValueError: unknown ``which``.
  """
  if which not in ('best', 'last'):
    raise ValueError(f"which must be 'best' or 'last', got {which!r}")
  config = read_config(workdir)
  directory = os.path.join(workdir, BEST_DIR)
  if which == 'last' or latest_epoch(directory) is None:
    directory = os.path.join(workdir, LAST_DIR)
  restored = restore_checkpoint(directory, None, inference_target(config))
  tree = restored['model']
  variables = {'params': tree['params'], 'batch_stats': tree['batch_stats']}
  projection = cca.Projection(**{k: jnp.asarray(v)
                                 for k, v in tree['projection'].items()})
  return config, variables, projection, int(restored['meta']['epoch'])
