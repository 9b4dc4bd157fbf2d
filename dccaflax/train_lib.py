"""Training library: train state, DCCA step, CCA fit, validation, checkpoints.

The recipe (Dorfer, Arzt, Widmer 2016, Sec. 3.1): SGD with momentum 0.9,
batch 100, learning rate 0.1 halved every 25 epochs, loss = minus the total
canonical correlation of the two towers' outputs on the batch
(``cca.dcca_loss``).  After (and during) training a linear CCA is fitted on
the towers' outputs of training pairs; retrieval compares CCA-projected,
L2-normalised embeddings by cosine similarity.

Data stay on the device: a ``input_pipeline.PieceSet`` is put there once and
every step cuts its batch's windows (``input_pipeline.batch_windows``) from
pair indices, with augmentation drawn on the device (sheet shifts, onset
jitter, a uniform choice among the prepared audio renderings loaded with
``TrainConfig.renderings``, and a random gain and gain curve per excerpt,
``dccaflax.level``); the epoch's batch order, ``(steps, B)`` int32,
goes to the device once per epoch and ``train_steps`` runs
``steps_per_dispatch`` SGD steps per jitted call, slicing its batches from
that order on the device.

Several devices (``data_mesh``): the batch is split over a 1-D mesh (axis
'data'); parameters, optimizer state and the pieces' arrays are replicated.
The model is applied to the global batch under ``jit``, so BatchNorm
statistics and the DCCA covariances are over the whole batch (XLA adds the
all-reduces) and the step equals the one-device step up to rounding.
Several hosts: call ``jax.distributed.initialize()`` first; the mesh spans
all processes' devices and every process feeds the same (seeded) order.

Workdir layout (everything needed to rebuild the model lives here)::

  config.json          TrainConfig + model config (width, out_dim, dtype, ...)
  checkpoints/<epoch>/ last checkpoint (resume): items 'state' (TrainState),
                       'model' (params, batch_stats, projection), 'meta' (JSON)
  best/<epoch>/        the same for the best validation R@10 so far
  history.jsonl        one JSON line of metrics per evaluated epoch
  tb/                  TensorBoard events (tensorboardX; no TensorFlow)
  training_curve.png   loss and validation R@10 vs epoch

Resuming: ``train_and_evaluate`` restarts from ``checkpoints/`` and replays
the same data order (``input_pipeline.epoch_batches(seed, epoch)``) and
augmentation (keys folded from ``seed`` and the step), so a run killed and
started again with the same command ends with the parameters of an
uninterrupted one (bit-identical on CPU; on GPU up to non-deterministic
kernels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from typing import Any, NamedTuple, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dccaflax import cca
from dccaflax import input_pipeline
from dccaflax import level
from dccaflax import models
from dccaflax import retrieval
from dccaflax import snippets

CONFIG_FILE = 'config.json'
HISTORY_FILE = 'history.jsonl'
CURVE_FILE = 'training_curve.png'
LAST_DIR = 'checkpoints'
BEST_DIR = 'best'
BEST_METRIC = 'val/R@10'   # mean of audio->sheet and sheet->audio R@10


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every setting of a run; stored as ``config.json`` in the workdir.

  Defaults are the paper's recipe (full width) but for the audio input,
  which is level-normalised (``level_norm='peak'``: measured at no cost in
  retrieval, see the README); ``experiments/*.flags`` set them explicitly.
  """
  data_dir: str = ''
  width: float = 1.0                 # tower width multiplier (1 = Table 1)
  out_dim: int = models.PAPER_OUT_DIM
  dtype: str = 'float32'             # conv compute dtype ('bfloat16' ok)
  epochs: int = 100
  batch_size: int = 100
  learning_rate: float = 0.1
  momentum: float = 0.9
  lr_halve_every: int = 25           # epochs
  reg: float = cca.DEFAULT_REG       # ridge of the DCCA / CCA covariances
  seed: int = 0
  max_train_pieces: Optional[int] = None   # None: the whole split
  max_val_pieces: Optional[int] = None
  val_subset: int = 2000             # validation pairs for R@k / correlation
  fit_pairs: int = 25000             # training pairs for the CCA fit
  eval_every: int = 1                # epochs between evaluations/checkpoints
  eval_batch_size: int = 500
  aug_dx: int = 0                    # max horizontal sheet shift, px
  aug_dy: int = 0                    # max vertical sheet shift, px
  aug_dframe: int = 0                # max onset jitter, frames
  aug_gain_db: float = 0.0           # max global gain per excerpt, +-dB
  aug_gain_curve_db: float = 0.0     # max slow gain curve in an excerpt, dB
  # Audio excerpts to a reference level before the audio tower, so the
  # recording's loudness does not matter: 'peak' or 'mean' (dccaflax.level);
  # 'none': the paper's input.  In an older config.json a bool is read by
  # level.check_method (true was 'mean'), and no field at all means 'none'.
  level_norm: str = level.PEAK
  # Audio renderings to train on, one drawn per pair and step: 'primary'
  # (the paper's data), 'all' prepared ones, or comma-separated tags such as
  # 'fluidr3_t1.00,timgm6mb_t0.90'.  Validation uses the primary rendering.
  renderings: str = 'primary'
  log_every: int = 100               # steps between progress lines
  steps_per_dispatch: int = 1        # fused SGD steps per jitted call (K)
  max_consecutive_skips: int = 10    # non-finite steps in a row before stop

  def __post_init__(self):
    # One spelling of the audio input for everything that reads a config
    # (the model, the index fingerprint, config.json); an unknown one fails
    # here, naming it.
    object.__setattr__(self, 'level_norm',
                       level.check_method(self.level_norm))

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> 'TrainConfig':
    names = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k in names}
    # Runs from before the field existed fed the paper's input.
    d.setdefault('level_norm', level.NONE)
    return cls(**d)


def renderings_arg(renderings: str):
  """``TrainConfig.renderings`` -> the ``renderings`` of ``load_pieces``."""
  renderings = renderings.strip()
  if renderings in ('', 'primary'):
    return None
  if renderings == 'all':
    return 'all'
  return [t.strip() for t in renderings.split(',') if t.strip()]


def model_from_config(config: TrainConfig) -> models.DCCAModel:
  """The towers a config describes."""
  return models.create_model(width=config.width, out_dim=config.out_dim,
                             dtype=jnp.dtype(config.dtype),
                             level_norm=config.level_norm)


class Augment(NamedTuple):
  """Static augmentation maxima of a step (hashable; a plain tuple of the
  first three works too)."""
  dx: int = 0             # sheet shift, px
  dy: int = 0             # vertical sheet shift, px
  dframe: int = 0         # onset jitter, frames
  gain_db: float = 0.0    # global gain per excerpt, +-dB
  curve_db: float = 0.0   # slow gain curve within an excerpt, dB


def augment_of(config: TrainConfig) -> Augment:
  """The config's augmentation, checked.

  Raises:
    ValueError: an offset beyond the strip margin or the silence pad, or a
      negative gain range.
  """
  aug = Augment(config.aug_dx, config.aug_dy, config.aug_dframe,
                float(config.aug_gain_db), float(config.aug_gain_curve_db))
  input_pipeline.check_augmentation(aug.dx, aug.dy, aug.dframe)
  if not (aug.gain_db >= 0 and aug.curve_db >= 0):
    raise ValueError('aug_gain_db and aug_gain_curve_db must be >= 0, got '
                     f'{aug.gain_db} and {aug.curve_db}')
  return aug


# --------------------------------------------------------------------------
# Train state and optimizer
# --------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
  """Everything a step changes (a pytree; checkpointed as is).

  Attributes:
    step: () int32, steps taken (batches consumed, skipped ones included).
    params: model parameters.
    batch_stats: BatchNorm running averages.
    opt_state: optax state (its count advances only on applied updates).
    skipped: () int32, steps skipped for a non-finite loss or gradient.
    skip_run: () int32, consecutive skipped steps up to now.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  skipped: jax.Array
  skip_run: jax.Array

  @property
  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}


def lr_schedule(learning_rate: float, halve_every_epochs: int,
                steps_per_epoch: int) -> optax.Schedule:
  """``learning_rate * 0.5 ** floor(step / (halve_every * steps_per_epoch))``."""
  return optax.exponential_decay(
      init_value=learning_rate,
      transition_steps=max(1, halve_every_epochs * steps_per_epoch),
      decay_rate=0.5, staircase=True)


@functools.lru_cache(maxsize=16)
def make_optimizer(lr: float = 0.1, momentum: float = 0.9,
                   halve_every_epochs: int = 25,
                   steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """SGD with heavy-ball momentum and a learning rate halved every N epochs.

  optax's momentum accumulates gradients (``m = g + mu m``, update
  ``-lr m``), which equals Lasagne's ``momentum`` update (the paper's) while
  the learning rate is constant.  Cached: equal arguments return the same
  object, so repeated runs in one process reuse the compiled ``train_step``
  (the optimizer is one of its static arguments).
  """
  return optax.sgd(lr_schedule(lr, halve_every_epochs, steps_per_epoch),
                   momentum=momentum)


@functools.partial(jax.jit, static_argnames=('model',))
def init_variables(rng: jax.Array, model: models.DCCAModel) -> dict:
  """Fresh {'params', 'batch_stats'} of ``model`` (compiled once per model)."""
  sheets = jnp.zeros((2, snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH),
                     jnp.uint8)
  specs = jnp.zeros((2, snippets.SPEC_BINS, snippets.SPEC_FRAMES),
                    jnp.float32)
  return model.init(rng, sheets, specs, train=False)


def create_train_state(rng: jax.Array, model: models.DCCAModel,
                       optimizer: optax.GradientTransformation) -> TrainState:
  """Initial parameters, BatchNorm statistics and optimizer state."""
  variables = init_variables(rng, model)
  params = variables['params']
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params=params,
                    batch_stats=variables['batch_stats'],
                    opt_state=optimizer.init(params), skipped=zero,
                    skip_run=zero)


# --------------------------------------------------------------------------
# The training step
# --------------------------------------------------------------------------


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves))


def loss_and_grads(params, batch_stats, sheets: jax.Array, specs: jax.Array,
                   *, model: models.DCCAModel, reg: float):
  """DCCA loss of one batch, its gradient and the new BatchNorm statistics.

  Under ``jit`` with the batch sharded over a device mesh (see
  ``data_mesh``), BatchNorm means/variances and the DCCA covariances are
  reductions over the batch axis of the *global* arrays, so XLA inserts the
  cross-device all-reduces and the result equals the one-device one.

  Args:
    params, batch_stats: the towers' variables.
    sheets: (B, 40, 100) uint8 windows; specs: (B, 136, 100) float32.
    model: the towers (any compute dtype; outputs are float32).
    reg: DCCA covariance ridge.

  Returns:
    ``((loss, new_batch_stats), grads)``: loss () float32 = -total
    correlation; grads like ``params`` (float32).
  """
  def loss_fn(p):
    (fx, gy), updates = model.apply(
        {'params': p, 'batch_stats': batch_stats}, sheets, specs,
        train=True, mutable=['batch_stats'])
    return cca.dcca_loss(fx, gy, reg), updates['batch_stats']
  return jax.value_and_grad(loss_fn, has_aux=True)(params)


def _constrain(x, sharding):
  return x if sharding is None else jax.lax.with_sharding_constraint(
      x, sharding)


def _step(state: TrainState, arrays: input_pipeline.Arrays, idx: jax.Array,
          model: models.DCCAModel, optimizer: optax.GradientTransformation,
          reg: float, augment: Augment, seed: int,
          batch_sharding) -> tuple[TrainState, dict]:
  """The body of ``train_step`` and of ``train_steps`` (traced, not jitted)."""
  augment = Augment(*augment)
  idx = _constrain(idx, batch_sharding)
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  offsets = (0, 0, 0)
  if any(augment[:3]):
    offsets = input_pipeline.random_offsets(rng, idx.shape[0], *augment[:3])
  rendering = 0
  n_renderings = arrays.frame.shape[0]   # static
  if n_renderings > 1:
    rendering = input_pipeline.random_renderings(
        jax.random.fold_in(rng, 1), idx.shape[0], n_renderings)
  sheets, specs = input_pipeline.batch_windows(arrays, idx, rendering,
                                               *offsets)
  if augment.gain_db or augment.curve_db:
    specs = level.relevel(specs, level.random_gains(
        jax.random.fold_in(rng, 2), idx.shape[0], specs.shape[-1],
        augment.gain_db, augment.curve_db, snippets.FPS))
  sheets = _constrain(sheets, batch_sharding)
  specs = _constrain(specs, batch_sharding)
  (loss, batch_stats), grads = loss_and_grads(
      state.params, state.batch_stats, sheets, specs, model=model, reg=reg)
  finite = jnp.isfinite(loss) & _all_finite(grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(
      lambda a, b: jnp.where(finite, a, b), new, old)
  skip = (~finite).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1,
      params=keep(params, state.params),
      batch_stats=keep(batch_stats, state.batch_stats),
      opt_state=keep(opt_state, state.opt_state),
      skipped=state.skipped + skip,
      skip_run=(state.skip_run + 1) * skip)
  return new_state, {'loss': loss, 'finite': finite,
                     'skip_run': new_state.skip_run}


@functools.partial(jax.jit, static_argnames=(
    'model', 'optimizer', 'reg', 'augment', 'seed', 'max_steps',
    'batch_sharding'))
def train_steps(state: TrainState, arrays: input_pipeline.Arrays,
                order: jax.Array, start: jax.Array, count: jax.Array, *,
                model: models.DCCAModel,
                optimizer: optax.GradientTransformation, reg: float,
                augment: Augment = Augment(), seed: int = 0,
                max_steps: int = 1, batch_sharding=None
                ) -> tuple[TrainState, dict]:
  """``count`` fused SGD steps in one dispatch: batches ``order[start:start +
  count]`` one after the other, exactly as ``count`` calls of ``train_step``.

  A ``lax.fori_loop`` on the device over rows of the epoch's batch order (the
  indices never go back to the host); the trip count is dynamic, so one
  compiled function serves full chunks and an epoch's shorter last chunk.
  The loop body is compiled on its own, so the parameters after N steps are
  bit-identical whatever the chunk sizes; against ``train_step`` (XLA fuses a
  plain step differently) they agree up to float rounding -- which the DCCA
  gradient of a small batch can amplify, e.g. where rounding flips a
  max-pool tie on blank paper.  On CPU (XLA:CPU, jax 0.10) a step inside the
  loop ran ~2.7x slower than ``train_step`` (0.40 vs 1.1 s, width 0.25,
  batch 32): use ``steps_per_dispatch=1`` there.

  Args:
    state, arrays, model, optimizer, reg, augment, seed, batch_sharding: as
      ``train_step``.
    order: (S, B) int32, the epoch's batches (``input_pipeline.epoch_batches``)
      on the device (rows sharded like ``batch_sharding`` on several devices).
    start: () int32, first row of this chunk.
    count: () int32, steps to take, ``1 <= count <= max_steps`` and
      ``start + count <= S``.
    max_steps: static, the size of the metrics buffers (the chunk size K).

  Returns:
    ``(new_state, metrics)``: metrics 'loss' (K,) float32, 'finite' (K,)
    bool, 'skip_run' (K,) int32 per step; entries from ``count`` on are
    NaN / False / -1 (not taken).
  """
  metrics = {'loss': jnp.full((max_steps,), jnp.nan, jnp.float32),
             'finite': jnp.zeros((max_steps,), bool),
             'skip_run': jnp.full((max_steps,), -1, jnp.int32)}

  def body(i, carry):
    state, metrics = carry
    idx = jax.lax.dynamic_index_in_dim(order, start + i, keepdims=False)
    state, m = _step(state, arrays, idx, model, optimizer, reg, augment, seed,
                     batch_sharding)
    metrics = {k: metrics[k].at[i].set(m[k].astype(metrics[k].dtype))
               for k in metrics}
    return state, metrics

  return jax.lax.fori_loop(0, count, body, (state, metrics))


@functools.partial(jax.jit, static_argnames=('model', 'optimizer', 'reg',
                                             'augment', 'seed',
                                             'batch_sharding'))
def train_step(state: TrainState, arrays: input_pipeline.Arrays,
               idx: jax.Array, *, model: models.DCCAModel,
               optimizer: optax.GradientTransformation, reg: float,
               augment: Augment = Augment(), seed: int = 0,
               batch_sharding=None) -> tuple[TrainState, dict]:
  """One SGD step on the pairs ``idx`` of ``arrays``; skips non-finite ones.

  The default loop (``steps_per_dispatch=1``); ``train_steps`` fuses several.

  Args:
    state: current ``TrainState``.
    arrays: device ``input_pipeline.Arrays`` of the training pieces.
    idx: (B,) int32 pair indices.
    model, optimizer, reg: static; ``reg`` is the DCCA covariance ridge.
    augment: static ``Augment`` maxima (or ``(max_dx, max_dy,
      max_dframe)``); offsets, gains (and, when ``arrays`` hold R > 1
      renderings, each pair's rendering, uniform) are drawn from
      ``fold_in(key(seed), state.step)``, so a replay draws the same ones.
    seed: static base seed of the augmentation keys.
    batch_sharding: ``NamedSharding`` of a batch over a device mesh
      (``data_mesh``, ``PartitionSpec('data')``), or None (one device): the
      indices, windows and hence the towers' activations are split along the
      batch axis (static in ``train_steps``).

  Returns:
    ``(new_state, metrics)``: metrics 'loss' () float32 (= -total
    correlation, NaN/inf when skipped), 'finite' () bool, 'skip_run' ()
    int32.  When the loss or any gradient is non-finite, params,
    batch_stats and opt_state are returned unchanged, ``skipped`` and
    ``skip_run`` grow by one; otherwise ``skip_run`` resets to 0.
  """
  return _step(state, arrays, idx, model, optimizer, reg, augment, seed,
               batch_sharding)


# --------------------------------------------------------------------------
# Several devices
# --------------------------------------------------------------------------


def data_mesh(batch_size: int, devices=None):
  """A 1-D ``Mesh`` (axis 'data') for data-parallel steps, or None.

  Uses the largest number of the visible devices (all processes' after
  ``jax.distributed.initialize``) that divides ``batch_size``; None when that
  is one device.

  Returns:
    ``jax.sharding.Mesh`` or None.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
  if n < len(devices):
    logging.warning('batch %d is not divisible by the %d devices: using %d',
                    batch_size, len(devices), n)
  if n == 1:
    return None
  return jax.sharding.Mesh(np.asarray(devices[:n]), ('data',))


def put_global(x, sharding):
  """Host array -> global ``jax.Array`` with ``sharding`` (multi-host safe:
  every process passes the same ``x`` and keeps only its own shards)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def replicate(tree, mesh):
  """Every leaf copied to all devices of ``mesh`` (None: left as is)."""
  if mesh is None:
    return tree
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda a: put_global(jax.device_get(a), sharding), tree)


# --------------------------------------------------------------------------
# Embedding, CCA fit, validation
# --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=('model',))
def _embed_windows(model, variables, arrays, idx):
  sheets, specs = input_pipeline.batch_windows(arrays, idx)   # rendering 0
  return model.apply(variables, sheets, specs, train=False)


@functools.partial(jax.jit, static_argnames=('model',))
def _embed_batch(model, variables, sheets, specs):
  return model.apply(variables, sheets, specs, train=False)


def _pad_to(a: np.ndarray, n: int) -> np.ndarray:
  if a.shape[0] == n:
    return a
  return np.concatenate([a, np.repeat(a[-1:], n - a.shape[0], axis=0)])


def embed_pieces(model: models.DCCAModel, variables: dict,
                 arrays: input_pipeline.Arrays, idx: np.ndarray,
                 batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
  """Tower outputs (eval mode) of pairs cut from device ``arrays``.

  Args:
    model: the towers.
    variables: {'params', 'batch_stats'}.
    arrays: device ``input_pipeline.Arrays``.
    idx: (N,) int pair indices.
    batch_size: pairs per call (the last batch is padded, one compiled shape).

  Returns:
    ``(fx, gy)``: (N, out_dim) float32 numpy arrays.
  """
  idx = np.asarray(idx, np.int32)
  fxs, gys = [], []
  for start in range(0, len(idx), batch_size):
    chunk = idx[start:start + batch_size]
    fx, gy = _embed_windows(model, variables, arrays,
                            _pad_to(chunk, batch_size))
    fxs.append(np.asarray(fx)[:len(chunk)])
    gys.append(np.asarray(gy)[:len(chunk)])
  return np.concatenate(fxs), np.concatenate(gys)


def embed_arrays(model: models.DCCAModel, variables: dict,
                 sheets: np.ndarray, specs: np.ndarray,
                 batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
  """Tower outputs (eval mode) of host windows.

  Args:
    sheets: (N, 40, 100) uint8 (255 = paper).
    specs: (N, 136, 100) float32.

  Returns:
    ``(fx, gy)``: (N, out_dim) float32 numpy arrays.
  """
  fxs, gys = [], []
  for start in range(0, len(sheets), batch_size):
    s, a = sheets[start:start + batch_size], specs[start:start + batch_size]
    fx, gy = _embed_batch(model, variables, _pad_to(s, batch_size),
                          _pad_to(a, batch_size))
    fxs.append(np.asarray(fx)[:len(s)])
    gys.append(np.asarray(gy)[:len(s)])
  return np.concatenate(fxs), np.concatenate(gys)


def fit_indices(n: int, fit_pairs: int, seed: int) -> np.ndarray:
  """The training pairs of the CCA fit: all if ``n <= fit_pairs``, else a
  fixed random subset of ``fit_pairs`` (sorted), a function of ``seed``."""
  if n <= fit_pairs:
    return np.arange(n)
  rng = np.random.default_rng((int(seed), 0xCCA))
  return np.sort(rng.choice(n, fit_pairs, replace=False))


def fit_projection(model: models.DCCAModel, variables: dict,
                   arrays: input_pipeline.Arrays, idx: np.ndarray,
                   reg: float = cca.DEFAULT_REG,
                   batch_size: int = 500) -> cca.Projection:
  """Linear CCA on the towers' outputs of training pairs ``idx``.

  The paper fits on the training set; ``fit_indices`` picks >= 25,000 of
  them (or all).  Statistics are accumulated in batches (``cca.fit``).
  """
  fx, gy = embed_pieces(model, variables, arrays, idx, batch_size)
  return cca.fit(fx, gy, reg, batch_size=10_000)


def heldout_correlation(px: np.ndarray, py: np.ndarray) -> float:
  """Sum over CCA components of the Pearson correlation of held-out pairs.

  Args:
    px, py: (N, k) validation embeddings projected with a projection fitted
      on *training* pairs.

  Returns:
    Sum of the k per-component correlations (at most k; the training-set
    analogue is ``sum(projection.corr)``).
  """
  px = px - px.mean(0)
  py = py - py.mean(0)
  den = np.sqrt((px * px).sum(0) * (py * py).sum(0))
  return float(np.sum((px * py).sum(0) / np.maximum(den, 1e-12)))


def retrieval_metrics(px: np.ndarray, py: np.ndarray,
                      ks=(1, 5, 10)) -> dict:
  """Both directions' R@k, MR, MRR of projected pairs (cosine similarity).

  Args:
    px: (N, k) projected sheet embeddings; py: (N, k) projected audio; row i
      of both is one pair, all N are candidates.

  Returns:
    {'a2s': metrics, 's2a': metrics}, metrics as
    ``retrieval.rank_metrics`` without 'ranks'.
  """
  out = {}
  for name, q, c in (('a2s', py, px), ('s2a', px, py)):
    m = retrieval.rank_metrics(q, c, ks)
    m.pop('ranks')
    out[name] = m
  return out


def validation_subset(n: int, size: int) -> np.ndarray:
  """``size`` evenly spaced pair indices of ``n`` (all if ``n <= size``)."""
  if n <= size:
    return np.arange(n)
  return np.linspace(0, n - 1, size).round().astype(np.int64)


def evaluate(model: models.DCCAModel, variables: dict,
             train_arrays: input_pipeline.Arrays, fit_idx: np.ndarray,
             val_arrays: input_pipeline.Arrays, val_idx: np.ndarray,
             reg: float, batch_size: int
             ) -> tuple[cca.Projection, dict[str, float]]:
  """CCA fit on training pairs, then validation metrics.

  Validation correlation ('val/corr') is ``heldout_correlation`` of the
  validation pairs under the *training* projection (an honest held-out
  number); 'val/corr_refit' is the total correlation of a CCA refitted on the
  validation embeddings themselves (optimistic); 'train/corr' the training
  fit's sum of canonical correlations.  R@k and MR are on ``val_idx`` with all
  of ``val_idx`` as candidates, after projection and L2 normalisation.

  Returns:
    ``(projection, metrics)``, metrics a flat dict of floats.
  """
  projection = fit_projection(model, variables, train_arrays, fit_idx, reg,
                              batch_size)
  fx, gy = embed_pieces(model, variables, val_arrays, val_idx, batch_size)
  px = np.asarray(cca.project_x(projection, fx))
  py = np.asarray(cca.project_y(projection, gy))
  ret = retrieval_metrics(px, py)
  metrics = {
      'train/corr': float(np.sum(projection.corr)),
      'val/corr': heldout_correlation(px, py),
      'val/corr_refit': float(cca.total_correlation(fx, gy, reg)),
      'val/n_pairs': float(len(val_idx)),
  }
  for direction, m in ret.items():
    for key in ('R@1', 'R@5', 'R@10', 'MR', 'MRR'):
      metrics[f'val/{direction}_{key}'] = float(m[key])
  metrics[BEST_METRIC] = 0.5 * (metrics['val/a2s_R@10']
                                + metrics['val/s2a_R@10'])
  return projection, metrics


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
  """Silences orbax's INFO chatter (dozens of lines per save) for a block."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def _manager(directory: str):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False))


def inference_tree(variables: dict, projection: cca.Projection) -> dict:
  """What ``dccaflax.load`` restores: variables and the projection."""
  return {'params': variables['params'],
          'batch_stats': variables['batch_stats'],
          'projection': dict(projection._asdict())}


def save_checkpoint(directory: str, epoch: int, state: TrainState,
                    projection: cca.Projection, meta: dict) -> None:
  """Saves (state, inference tree, meta JSON) as checkpoint ``epoch``."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
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


def latest_epoch(directory: str) -> Optional[int]:
  """Epoch of the newest checkpoint in ``directory``, or None."""
  if not os.path.isdir(directory):
    return None
  with _quiet():
    mngr = _manager(directory)
    step = mngr.latest_step()
    mngr.close()
  return step


def restore_checkpoint(directory: str, target_state: Optional[TrainState],
                       target_model: Optional[dict],
                       epoch: Optional[int] = None) -> dict:
  """Restores the items whose targets are given (and always 'meta').

  Args:
    directory: ``workdir/checkpoints`` or ``workdir/best``.
    target_state: a ``TrainState`` of the right structure (e.g. fresh), or
      None to skip the training state.
    target_model: an ``inference_tree`` of the right structure, or None.
    epoch: which checkpoint (default: the newest).

  Returns:
    dict with 'meta' and, if requested, 'state' and 'model'.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
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


def projection_from_tree(tree: dict) -> cca.Projection:
  return cca.Projection(**{k: jnp.asarray(v) for k, v in tree.items()})


# --------------------------------------------------------------------------
# Logging helpers
# --------------------------------------------------------------------------


def _read_history(workdir: str, up_to_epoch: int) -> list[dict]:
  """History lines of epochs <= ``up_to_epoch`` (later ones, from a killed
  run, are dropped and the file rewritten)."""
  path = os.path.join(workdir, HISTORY_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  rows = [r for r in rows if r['epoch'] <= up_to_epoch]
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  return rows


def _append_history(workdir: str, row: dict) -> None:
  with open(os.path.join(workdir, HISTORY_FILE), 'a') as f:
    f.write(json.dumps(row) + '\n')


def plot_history(history: list[dict], path: str, title: str = '') -> None:
  """Training curve: loss (left) and validation R@10 (right) vs epoch, PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  epochs = [r['epoch'] for r in history]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
  ax1.plot(epochs, [r['train/loss'] for r in history], 'o-', label='train')
  ax1.plot(epochs, [-r['val/corr'] for r in history], 's--',
           label='valid (-held-out corr.)')
  ax1.set_xlabel('epoch')
  ax1.set_ylabel('loss = -total correlation')
  ax1.legend()
  ax1.grid(alpha=0.3)
  ax2.plot(epochs, [r['val/a2s_R@10'] for r in history], 'o-',
           label='audio -> sheet')
  ax2.plot(epochs, [r['val/s2a_R@10'] for r in history], 's-',
           label='sheet -> audio')
  ax2.set_xlabel('epoch')
  n_val = history[-1].get('val/n_pairs')
  ax2.set_ylabel('validation R@10 (%)' + (
      f', {n_val:.0f} candidates' if n_val else ''))
  ax2.set_ylim(0, 100)
  ax2.legend()
  ax2.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _write_config(workdir: str, config: TrainConfig) -> None:
  """Writes ``config.json``; warns when resuming with different settings."""
  path = os.path.join(workdir, CONFIG_FILE)
  new = config.to_json()
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    changed = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if changed:
      logging.warning('resuming %s with changed settings (old, new): %s',
                      workdir, changed)
  with open(path, 'w') as f:
    json.dump(new, f, indent=2, sort_keys=True)


def read_config(workdir: str) -> TrainConfig:
  """The ``TrainConfig`` of a workdir."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: not a training workdir')
  with open(path) as f:
    return TrainConfig.from_json(json.load(f))


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------


class NonFiniteError(FloatingPointError):
  """Too many consecutive steps with a non-finite loss or gradient."""


def train_and_evaluate(config: TrainConfig, workdir: str,
                       train_set: Optional[input_pipeline.PieceSet] = None,
                       val_set: Optional[input_pipeline.PieceSet] = None,
                       ) -> TrainState:
  """Trains, evaluates and checkpoints; resumes from ``workdir`` if possible.

  Args:
    config: the run's settings.
    workdir: output folder (see the module docstring).
    train_set, val_set: already loaded pieces (default: read from
      ``config.data_dir``, splits 'train' and 'valid').

  Returns:
    The final ``TrainState``.

  Raises:
    NonFiniteError: ``max_consecutive_skips`` non-finite steps in a row.
  """
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  # Several hosts: every process trains, process 0 alone writes the JSON,
  # TensorBoard and plot files (orbax coordinates the checkpoints).
  chief = jax.process_index() == 0
  if chief:
    _write_config(workdir, config)
  augment = augment_of(config)

  t0 = time.time()
  if train_set is None:
    train_set = input_pipeline.load_pieces(
        config.data_dir, 'train', config.max_train_pieces,
        renderings_arg(config.renderings))
  if val_set is None:
    val_set = input_pipeline.load_pieces(config.data_dir, 'valid',
                                         config.max_val_pieces)
  logging.info('data: train %d pairs / %d pieces x %d renderings %s '
               '(%.1f MB on the device), valid %d pairs / %d pieces (%.1f MB),'
               ' loaded in %.1f s', len(train_set), len(train_set.names),
               len(train_set.renderings), ','.join(train_set.renderings),
               train_set.nbytes / 1e6, len(val_set), len(val_set.names),
               val_set.nbytes / 1e6, time.time() - t0)
  if config.steps_per_dispatch < 1:
    raise ValueError('steps_per_dispatch must be >= 1, got '
                     f'{config.steps_per_dispatch}')
  n_train = len(train_set)
  steps_per_epoch = input_pipeline.steps_per_epoch(n_train, config.batch_size)
  if steps_per_epoch == 0:
    raise ValueError(f'{n_train} training pairs < batch {config.batch_size}')
  # Several devices: the batch is split over a 1-D mesh, everything else
  # (parameters, optimizer state, the pieces' arrays) is replicated.
  mesh = data_mesh(config.batch_size)
  if mesh is None:
    batch_sharding = order_sharding = None
    train_arrays = jax.device_put(train_set.arrays)
    val_arrays = jax.device_put(val_set.arrays)
  else:
    spec = jax.sharding.PartitionSpec
    batch_sharding = jax.sharding.NamedSharding(mesh, spec('data'))
    order_sharding = jax.sharding.NamedSharding(mesh, spec(None, 'data'))
    train_arrays = replicate(train_set.arrays, mesh)
    val_arrays = replicate(val_set.arrays, mesh)
    logging.info('data parallel over %d devices (%d processes): %d pairs '
                 'per device and step', mesh.size, jax.process_count(),
                 config.batch_size // mesh.size)
  fit_idx = fit_indices(n_train, config.fit_pairs, config.seed)
  val_idx = validation_subset(len(val_set), config.val_subset)

  model = model_from_config(config)
  optimizer = make_optimizer(config.learning_rate, config.momentum,
                             config.lr_halve_every, steps_per_epoch)
  schedule = lr_schedule(config.learning_rate, config.lr_halve_every,
                         steps_per_epoch)
  state = create_train_state(jax.random.key(config.seed), model, optimizer)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('model: width %g (%s feature maps), out_dim %d, %s, %d params',
               config.width, model.widths, config.out_dim, config.dtype,
               n_params)

  last_dir = os.path.join(workdir, LAST_DIR)
  best_dir = os.path.join(workdir, BEST_DIR)
  start_epoch, best = 0, -np.inf
  if latest_epoch(last_dir) is not None:
    restored = restore_checkpoint(last_dir, state, None)
    state, meta = restored['state'], restored['meta']
    start_epoch, best = int(meta['epoch']), float(meta['best'])
    logging.info('resumed from %s: epoch %d, step %d', last_dir, start_epoch,
                 int(state.step))
  state = replicate(state, mesh)
  history = _read_history(workdir, start_epoch) if chief else []

  kw = dict(model=model, optimizer=optimizer, reg=config.reg,
            augment=augment, seed=config.seed, batch_sharding=batch_sharding)
  fused = config.steps_per_dispatch > 1
  chunk_fn = functools.partial(train_steps,
                               max_steps=config.steps_per_dispatch, **kw)
  step_fn = functools.partial(train_step, **kw)
  # purge_step drops events a killed run wrote after its last checkpoint.
  writer = SummaryWriter(os.path.join(workdir, 'tb'),
                         purge_step=start_epoch + 1 if start_epoch else None
                         ) if chief else None
  try:
    for epoch in range(start_epoch, config.epochs):
      batches = input_pipeline.epoch_batches(config.seed, epoch, n_train,
                                             config.batch_size)
      t_epoch = time.time()
      losses, pending = [], None
      if fused:   # the epoch's order goes to the device once
        order = (jnp.asarray(batches) if order_sharding is None
                 else put_global(batches, order_sharding))
      done = 0    # steps dispatched in this epoch
      while done < steps_per_epoch:
        # A chunk never crosses the epoch's end: the last one is shorter.
        count = min(config.steps_per_dispatch, steps_per_epoch - done)
        if fused:
          state, metrics = chunk_fn(state, train_arrays, order,
                                    np.int32(done), np.int32(count))
        else:
          idx = batches[done]
          if batch_sharding is not None:
            idx = put_global(idx, batch_sharding)
          state, metrics = step_fn(state, train_arrays, idx)
        if pending is not None:   # read the previous dispatch: one of lag
          _consume(pending, losses, config)
        pending = metrics
        previous, done = done, done + count
        if done // config.log_every > previous // config.log_every:
          dt = time.time() - t_epoch
          logging.info('epoch %d step %d/%d: loss %.4f, %.2f steps/s '
                       '(%.0f pairs/s)', epoch + 1, done, steps_per_epoch,
                       np.mean(losses[-config.log_every:] or [np.nan]),
                       done / dt, done * config.batch_size / dt)
      _consume(pending, losses, config)
      train_time = time.time() - t_epoch
      epoch_done = epoch + 1
      if epoch_done % config.eval_every and epoch_done != config.epochs:
        continue
      t_eval = time.time()
      projection, metrics = evaluate(model, state.variables, train_arrays,
                                     fit_idx, val_arrays, val_idx,
                                     config.reg, config.eval_batch_size)
      row = {'epoch': epoch_done, 'step': int(state.step),
             'train/loss': float(np.mean(losses)) if losses else float('nan'),
             'train/lr': float(schedule(int(state.step) - 1)),
             'train/skipped': int(state.skipped),
             'train/steps_per_s': steps_per_epoch / train_time,
             'train/pairs_per_s': steps_per_epoch * config.batch_size
                                  / train_time,
             'eval_s': time.time() - t_eval, **metrics}
      improved = row[BEST_METRIC] > best
      best = max(best, row[BEST_METRIC])
      meta = {'epoch': epoch_done, 'step': int(state.step), 'best': best,
              'metrics': row}
      if improved:
        save_checkpoint(best_dir, epoch_done, state, projection, meta)
      save_checkpoint(last_dir, epoch_done, state, projection, meta)
      history.append(row)
      if chief:
        _append_history(workdir, row)
        for key, value in row.items():
          if key != 'epoch':   # TB tags: 'val/a2s_R@10' -> 'val/a2s_R10'
            writer.add_scalar(key.replace('@', ''), value, epoch_done)
        writer.flush()
      logging.info(
          'epoch %d/%d: loss %.4f | valid corr %.2f (refit %.2f, train %.2f) '
          '| A->S R@1 %.1f R@10 %.1f MR %g | S->A R@1 %.1f R@10 %.1f MR %g | '
          '%.2f steps/s, lr %.4g, skipped %d%s', epoch_done, config.epochs,
          row['train/loss'], row['val/corr'], row['val/corr_refit'],
          row['train/corr'], row['val/a2s_R@1'], row['val/a2s_R@10'],
          row['val/a2s_MR'], row['val/s2a_R@1'], row['val/s2a_R@10'],
          row['val/s2a_MR'], row['train/steps_per_s'], row['train/lr'],
          row['train/skipped'], ' (best)' if improved else '')
  finally:
    if writer is not None:
      writer.close()
  if history and chief:
    plot_history(history, os.path.join(workdir, CURVE_FILE),
                 f'width {config.width:g}, {len(train_set.names)} train '
                 f'pieces')
  return state


def _consume(metrics: Optional[dict], losses: list, config: TrainConfig
             ) -> None:
  """Reads one dispatch's metrics (scalars of ``train_step`` or (K,) arrays of
  ``train_steps``, step by step); raises at the first step that makes
  ``max_consecutive_skips`` non-finite steps in a row."""
  if metrics is None:
    return
  metrics = jax.device_get(metrics)
  for loss, finite, skip_run in zip(np.atleast_1d(metrics['loss']),
                                    np.atleast_1d(metrics['finite']),
                                    np.atleast_1d(metrics['skip_run'])):
    if skip_run < 0:   # a step a shorter chunk did not take
      break
    if finite:
      losses.append(float(loss))
    elif int(skip_run) >= config.max_consecutive_skips:
      raise NonFiniteError(
          f'{int(skip_run)} consecutive steps with a non-finite loss or '
          f'gradient (last loss {float(loss)}); parameters were left '
          'unchanged by them. Lower --learning_rate or raise --reg.')
