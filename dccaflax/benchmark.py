"""Speed of training, embedding and retrieval on this machine's accelerator.

The measurements behind ``experiments.benchmark`` (and the GPU run), on
synthetic device arrays shaped like the real ones (the numbers do not
depend on the content):

* training: pairs/s of an epoch of ``training.Stepper`` -- the training
  loop's own code path: the host's epoch order, one jitted step per call
  (``steps_per_dispatch=1``, the default) or the device loop over the epoch
  order (``train_chunk``), metrics read one dispatch late -- for each batch
  size x dtype x steps per dispatch, and for K models side by side
  (aggregate pairs/s of K vmapped models); plus the time of one epoch of
  the training split extrapolated from it (full batches only);
* embedding: pairs/s of both towers in eval mode (cut windows -> (B, h) x 2);
* retrieval: latency of ``retrieval.top_k`` (exact, chunked, k = 10) for
  audio queries against random unit-vector sheet candidates (the host-side
  normalisation and chunking included);
* a PyTorch peer script of the paper's model, run in the same process
  tree, and the ratio of our pairs/s to its.

Every number is the median of ``repeats`` timed calls after a warm-up call
(compilation excluded), each ended by ``block_until_ready``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dccaflax import audio
from dccaflax import cca
from dccaflax import config as config_lib
from dccaflax import validation
from dccaflax import input_pipeline
from dccaflax import layers
from dccaflax import models
from dccaflax import objectives
from dccaflax import pieceset
from dccaflax import retrieval
from dccaflax import sharding
from dccaflax import snippets
from dccaflax import steps
from dccaflax import training

TRAIN_PAIRS = 125_053   # full batches of 100 over the training split's pairs
# Settings of ``run_all``: 'gpu' for an accelerator (the paper's width),
# 'cpu' the paper's width on a CPU (what training runs), 'quick' a CPU
# smoke run of a minute or two, 'tiny' the test suite's.
PRESETS = {
    'gpu': dict(width=1.0, batch_sizes=[100, 1000],
                dtypes=['float32', 'bfloat16'], steps_per_dispatch=[1, 20],
                models_side_by_side=[1, 2, 4, 8], queries=[1, 1000],
                candidates=[16000, 1_000_000], repeats=3, embed_batch=1000),
    'quick': dict(width=0.125, batch_sizes=[50],
                  dtypes=['float32', 'bfloat16'], steps_per_dispatch=[1, 4],
                  models_side_by_side=[1, 2], queries=[1, 1000],
                  candidates=[16000, 100_000], repeats=2, embed_batch=500),
    'cpu': dict(width=1.0, batch_sizes=[100], dtypes=['float32', 'bfloat16'],
                steps_per_dispatch=[1], models_side_by_side=[1],
                queries=[1, 1000], candidates=[16000], repeats=2,
                embed_batch=1000),
    'tiny': dict(width=0.125, batch_sizes=[16], dtypes=['float32'],
                 steps_per_dispatch=[1], models_side_by_side=[1, 2],
                 queries=[1], candidates=[1000], repeats=1, embed_batch=32),
}
# The audio input training uses (TrainConfig's default, the flagfiles').
_LEVEL_NORM = config_lib.TrainConfig().level_norm


# --------------------------------------------------------------------------
# Synthetic data and timing
# --------------------------------------------------------------------------


def synthetic_arrays(n_pairs: int, seed: int = 0,
                     renderings: int = 1) -> pieceset.Arrays:
  """Device ``Arrays`` like a ``PieceSet`` of ``n_pairs`` pairs.

  One long "piece" with a pair every 15 px / 12 frames (the Nottingham
  averages), random pixels and spectrogram codes, in ``renderings``
  renderings of equal length, laid out by ``pieceset.concat_pieces``
  as training lays out real pieces.

  Returns:
    ``pieceset.Arrays`` on the default device.
  """
  rng = np.random.default_rng(seed)
  frames = 12 * n_pairs
  onsets = 12 * np.arange(n_pairs)
  codes = lambda n: rng.integers(0, audio.QUANT_LEVELS + 1,
                                 (snippets.SPEC_BINS, n), np.uint8)
  piece = {
      'piece': 'synthetic',
      'strip': rng.integers(0, 256, (snippets.STRIP_HEIGHT, 15 * n_pairs),
                            np.uint8),
      'spec_codes': codes(frames), 'spec_scale': 3.0,
      'onset_frames': onsets, 'onset_bars': np.ones(n_pairs, np.int32),
      'notehead_x': 15 * np.arange(n_pairs, dtype=np.float32),
      'renderings': ','.join(f'r{k}' for k in range(renderings)),
      'extra_codes': codes(frames * (renderings - 1)),
      'extra_frames': [frames] * (renderings - 1),
      'extra_scales': [3.0] * (renderings - 1),
      'extra_onsets': [onsets] * (renderings - 1)}
  return jax.device_put(pieceset.concat_pieces([piece], 'all').arrays)


def time_call(fn: Callable[[], object], repeats: int,
              warm_up: bool = True) -> float:
  """Median seconds of ``fn()`` (blocked until ready), after one warm-up
  call unless ``warm_up`` is False."""
  if warm_up:
    jax.block_until_ready(fn())
  times = []
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


# --------------------------------------------------------------------------
# The three measurements
# --------------------------------------------------------------------------


def bench_train(width: float, dtype: str, batch_size: int,
                steps_per_dispatch: int, repeats: int,
                arrays: Optional[pieceset.Arrays] = None,
                train_pairs: int = TRAIN_PAIRS, models_side_by_side: int = 1,
                epoch_steps: Optional[int] = None,
                cpu_kernels: Optional[bool] = None) -> dict:
  """Pairs/s of the training loop's epoch (``training.Stepper.epoch``).

  Args:
    width, dtype: the towers.
    batch_size, steps_per_dispatch: as ``TrainConfig``.
    repeats: timed epochs (after a warm-up one).
    arrays: device ``Arrays`` (default: synthetic, just large enough).
    train_pairs: pairs of the real training split, for ``epoch_s``.
    models_side_by_side: K models in one vmapped step (seeds 0 ... K-1).
    epoch_steps: steps of a timed "epoch" (default: 2 dispatches, >= 8).
    cpu_kernels: the towers' layers (``models.Tower.cpu_kernels``): None
      as training runs them (by the platform), False XLA's stock ones.

  Returns:
    dict: 'width', 'dtype', 'batch', 'steps_per_dispatch', 'models',
    'layers' ('cpu' or 'xla'), 'pairs_per_s' (all models together),
    's_per_step', 'epoch_s' (one epoch of ``train_pairs`` for each of the
    K models).
  """
  n_steps = epoch_steps or max(2 * steps_per_dispatch, 8)
  if arrays is None:
    arrays = synthetic_arrays(n_steps * batch_size)
  n_train = min(int(arrays.x.shape[0]), n_steps * batch_size)
  config = config_lib.TrainConfig(
      width=width, dtype=dtype, batch_size=batch_size, learning_rate=0.01,
      steps_per_dispatch=steps_per_dispatch, log_every=10**9,
      level_norm=_LEVEL_NORM)
  model = models.from_config(config).clone(cpu_kernels=cpu_kernels)
  optimizer = steps.make_optimizer(0.01, 0.9, 25, 1000)
  seeds = list(range(models_side_by_side))
  stepper = training.Stepper(config, model, optimizer, config.augment,
                             sharding.Placement(None, None, None), seeds)
  box = [stepper.join([steps.create_train_state(jax.random.key(s), model,
                                                optimizer) for s in seeds])]

  def call():
    # The state is carried from call to call, as in training.
    box[0], _ = stepper.epoch(box[0], arrays, n_train, 0)
    return box[0].step

  per_step = time_call(call, repeats) / (n_train // batch_size)
  pairs_per_s = batch_size * len(seeds) / per_step
  layers_used = 'cpu' if layers.use_cpu_kernels(cpu_kernels) else 'xla'
  return {'width': width, 'dtype': dtype, 'batch': batch_size,
          'steps_per_dispatch': steps_per_dispatch, 'models': len(seeds),
          'layers': layers_used, 'pairs_per_s': pairs_per_s,
          's_per_step': per_step,
          'epoch_s': per_step * (train_pairs // batch_size)}


def bench_embed(width: float, dtype: str, batch_size: int, repeats: int,
                arrays: Optional[pieceset.Arrays] = None) -> dict:
  """Pairs/s of both towers in eval mode on windows cut on the device.

  Returns:
    dict: 'width', 'dtype', 'batch', 'pairs_per_s'.
  """
  if arrays is None:
    arrays = synthetic_arrays(2 * batch_size)
  model = models.create_model(width=width, dtype=jnp.dtype(dtype),
                              level_norm=_LEVEL_NORM)
  variables = models.init_variables(jax.random.key(0), model)
  idx = jnp.arange(batch_size, dtype=jnp.int32) % arrays.x.shape[0]
  seconds = time_call(lambda: validation.outputs_at(
      model, variables, arrays, idx), repeats)
  return {'width': width, 'dtype': dtype, 'batch': batch_size,
          'pairs_per_s': batch_size / seconds}


def bench_retrieval(n_queries: int, n_candidates: int, repeats: int,
                    dim: int = cca.PAPER_DIM, k: int = 10) -> dict:
  """Latency of ``retrieval.top_k`` on random unit vectors (host in, out).

  Returns:
    dict: 'queries', 'candidates', 'k', 'latency_s', 'queries_per_s'.
  """
  rng = np.random.default_rng(0)
  unit = lambda n: (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(
      rng.normal(size=(n, dim)).astype(np.float32))
  queries, candidates = unit(n_queries), unit(n_candidates)
  seconds = time_call(lambda: retrieval.top_k(queries, candidates, k),
                      repeats)
  return {'queries': n_queries, 'candidates': n_candidates, 'k': k,
          'latency_s': seconds, 'queries_per_s': n_queries / seconds}


def bench_objectives(width: float, batch_size: int, rounds: int,
                     arrays: Optional[pieceset.Arrays] = None,
                     with_step: bool = True) -> list[dict]:
  """Cost of each objective (``objectives.REGISTRY``, default settings).

  ``step_s``: one jitted ``steps.loss_and_grads`` (cut windows in; both
  towers forward and backward with that objective; no optimizer update);
  ``loss_s``: the objective alone, value and gradient with respect to the
  (B, h) tower outputs.  The calls are timed in turn within each round
  (after one warm-up call each), so a load that comes and goes falls on all
  objectives alike; the fastest of ``rounds`` (on a shared machine the
  median measures the scheduler: a 0.5 ms call takes 500 ms at nice 19).
  ``with_step=False``: the objectives alone (``loss_s`` does not depend on
  ``width``; the towers' steps take minutes to compile at full width on a
  CPU).

  Returns:
    list of dict, one per objective: 'objective', 'width', 'batch',
    'loss_s', and with the step 'step_s' and 'share' (``loss_s / step_s``).
  """
  arrays = synthetic_arrays(batch_size) if arrays is None else arrays
  model = models.create_model(width=width, level_norm=_LEVEL_NORM)
  variables = models.init_variables(jax.random.key(0), model)
  idx = jnp.arange(batch_size, dtype=jnp.int32) % arrays.x.shape[0]
  sheets, specs = jax.jit(input_pipeline.batch_windows)(arrays, idx)
  fx, gy = validation.outputs_at(model, variables, arrays, idx)
  calls = {}
  for name in objectives.NAMES:
    objective = objectives.Objective(name)
    step = jax.jit(functools.partial(steps.loss_and_grads, model=model,
                                     reg=cca.DEFAULT_REG, objective=objective))
    loss = jax.jit(jax.value_and_grad(functools.partial(
        objective.loss, reg=cca.DEFAULT_REG), argnums=(0, 1)))
    if with_step:
      calls[name, 'step_s'] = lambda step=step: step(
          variables['params'], variables['batch_stats'], sheets, specs)
    calls[name, 'loss_s'] = functools.partial(loss, fx, gy)
  times = {key: [] for key in calls}
  jax.block_until_ready([fn() for fn in calls.values()])   # compilation
  for _ in range(max(1, rounds)):
    for key, fn in calls.items():
      times[key].append(time_call(fn, 1, warm_up=False))
  rows = [{'objective': name, 'width': width, 'batch': batch_size,
           **{k: min(v) for (n, k), v in times.items()
              if n == name}} for name in objectives.NAMES]
  return [{**r, 'share': r['loss_s'] / r['step_s']} if with_step else r
          for r in rows]


# --------------------------------------------------------------------------
# The PyTorch peer
# --------------------------------------------------------------------------


def run_torch_peer(path: str, timeout_s: float = 3600,
                   log: Callable[[str], None] = print) -> Optional[list]:
  """Runs ``torch_peer.py``; its JSON lines, or None (torch missing, no
  such file, an error or the timeout: each said through ``log``).  With a
  timeout, the lines it printed before are kept."""
  if importlib.util.find_spec('torch') is None:
    log('torch peer skipped: torch is not installed here')
    return None
  if not os.path.exists(path):
    log(f'torch peer skipped: {path} not found')
    return None
  try:
    out = subprocess.run([sys.executable, path], capture_output=True,
                         text=True, timeout=timeout_s)
    stdout, stderr, code = out.stdout, out.stderr, out.returncode
  except subprocess.TimeoutExpired as e:
    stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (
        e.stdout or '')
    stderr, code = f'timed out after {timeout_s:.0f} s', None
    log(f'torch peer: {stderr}')
  rows = []
  for line in stdout.splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      pass
  if code != 0 and not rows:
    log(f'torch peer failed (exit {code}): {stderr[-2000:]}')
    return None
  return rows


def peer_ratios(train_rows: Sequence[dict], peer_rows: Sequence[dict]
                ) -> list[dict]:
  """Ours / peer pairs/s at equal batch, one model, per dtype: our best
  steps per dispatch against the peer's best configuration of that dtype
  (float32 against its float32 rows, bfloat16 against its bfloat16
  autocast rows; whichever of eager / compiled and contiguous /
  channels_last was fastest, named in 'torch_config')."""
  out = []
  for dtype, bf16 in (('float32', False), ('bfloat16', True)):
    for batch in sorted({r['batch'] for r in train_rows}):
      ours = [r['pairs_per_s'] for r in train_rows
              if r['dtype'] == dtype and r['batch'] == batch
              and r.get('models', 1) == 1 and r.get('layers') != 'xla']
      peer = [r for r in peer_rows
              if r.get('batch') == batch and 'pairs_per_s' in r
              and bool(r.get('bf16_autocast')) == bf16]
      if ours and peer:
        best = max(peer, key=lambda r: r['pairs_per_s'])
        config = ', '.join(
            [('compiled' if best.get('compile') else 'eager')]
            + (['channels_last'] if best.get('channels_last') else []))
        out.append({'dtype': dtype, 'batch': batch, 'ours': max(ours),
                    'torch': best['pairs_per_s'], 'torch_config': config,
                    'ratio': max(ours) / best['pairs_per_s']})
  return out


# --------------------------------------------------------------------------
# All of it
# --------------------------------------------------------------------------


def run_all(width: float, batch_sizes: Sequence[int], dtypes: Sequence[str],
            steps_per_dispatch: Sequence[int], queries: Sequence[int],
            candidates: Sequence[int], repeats: int,
            train_pairs: int = TRAIN_PAIRS, embed_batch: int = 1000,
            renderings: int = 1, models_side_by_side: Sequence[int] = (),
            deadline: Optional[float] = None, stock_layers: bool = False,
            log: Callable[[str], None] = print) -> dict:
  """Every measurement; the JSON the command writes.

  Training rows, most wanted first: one model at the first batch size (every
  dtype and steps per dispatch), then K models side by side there (each K of
  ``models_side_by_side`` above 1; the first dtype, every steps per
  dispatch), then one model at the other batch sizes; with
  ``stock_layers``, first the same one-model rows with XLA's own
  convolution and pooling gradients (the step before ``dccaflax.layers``),
  for a before/after in one run.  Past ``deadline``
  (``time.time()``) the remaining training rows are skipped and listed.

  Returns:
    dict: 'device', 'jax', 'width', 'train' (list of ``bench_train``),
    'embed' (list of ``bench_embed``), 'retrieval' (list of
    ``bench_retrieval``), 'skipped' (training settings not measured).
  """
  need = max(max(2 * k, 8) * b for b in batch_sizes
             for k in steps_per_dispatch)
  arrays = synthetic_arrays(max(need, 2 * embed_batch, 1000),
                            renderings=renderings)
  device = jax.devices()[0]
  result = {'renderings': renderings,
            'device': f'{jax.device_count()} x {device.device_kind}',
            'platform': device.platform, 'jax': jax.__version__,
            'width': width, 'train': [], 'embed': [], 'retrieval': [],
            'skipped': []}
  first, rest = batch_sizes[0], batch_sizes[1:]
  settings = [(d, first, k, 1, None) for d in dtypes
              for k in steps_per_dispatch]
  if stock_layers:
    settings = [s[:4] + (False,) for s in settings] + settings
  settings += [(dtypes[0], first, k, m, None) for m in models_side_by_side
               if m > 1 for k in steps_per_dispatch]
  settings += [(d, b, k, 1, None) for b in rest for d in dtypes
               for k in steps_per_dispatch]
  for dtype, batch, k, m, cpu_kernels in settings:
    what = (f'train {dtype} batch {batch} x{k}'
            + (f', {m} models' if m > 1 else '')
            + (', stock XLA layers' if cpu_kernels is False else ''))
    if deadline is not None and time.time() > deadline:
      log(f'{what}: skipped (time budget)')
      result['skipped'].append({'dtype': dtype, 'batch': batch,
                                'steps_per_dispatch': k, 'models': m})
      continue
    r = bench_train(width, dtype, batch, k, repeats, arrays, train_pairs, m,
                    cpu_kernels=cpu_kernels)
    log(f'{what}: {r["pairs_per_s"]:.0f} pairs/s')
    result['train'].append(r)
  for dtype in dtypes:
    r = bench_embed(width, dtype, embed_batch, repeats, arrays)
    log(f'embed {dtype}: {r["pairs_per_s"]:.0f} pairs/s')
    result['embed'].append(r)
  for c in candidates:
    for q in queries:
      r = bench_retrieval(q, c, repeats)
      log(f'top-10 of {q} queries in {c}: {r["latency_s"] * 1e3:.1f} ms')
      result['retrieval'].append(r)
  return result


def format_table(result: dict) -> str:
  """The results as Markdown tables."""
  lines = [f'device: {result["device"]} ({result["platform"]}), jax '
           f'{result["jax"]}, tower width {result["width"]:g}, '
           f'{result.get("renderings", 1)} rendering(s) sampled per step', '',
           '| training (the loop\'s path) | layers | batch | steps/dispatch | '
           'models | pairs/s (all models) | ms/step | epoch (s) |',
           '|---|---|---|---|---|---|---|---|']
  for r in result['train']:
    lines.append(f'| {r["dtype"]} | {r.get("layers", "")} | {r["batch"]} | '
                 f'{r["steps_per_dispatch"]}'
                 f' | {r.get("models", 1)} | {r["pairs_per_s"]:.1f} | '
                 f'{r["s_per_step"] * 1e3:.1f} | {r["epoch_s"]:.0f} |')
  lines += ['', '| embedding (eval, both towers) | batch | pairs/s |',
            '|---|---|---|']
  for r in result['embed']:
    lines.append(f'| {r["dtype"]} | {r["batch"]} | {r["pairs_per_s"]:.0f} |')
  lines += ['', '| retrieval top-10 | queries | candidates | latency (ms) | '
            'queries/s |', '|---|---|---|---|---|']
  for r in result['retrieval']:
    lines.append(f'| exact, chunked | {r["queries"]} | {r["candidates"]:,} | '
                 f'{r["latency_s"] * 1e3:.1f} | {r["queries_per_s"]:.0f} |')
  if result.get('torch_ratio'):
    lines += ['', '| vs PyTorch peer (its best of the dtype) | batch | '
              'ours pairs/s | torch pairs/s | torch configuration | ratio |',
              '|---|---|---|---|---|---|']
    for r in result['torch_ratio']:
      lines.append(f'| {r["dtype"]} | {r["batch"]} | {r["ours"]:.1f} | '
                   f'{r["torch"]:.1f} | {r.get("torch_config", "")} | '
                   f'{r["ratio"]:.2f} |')
  if result.get('torch_peer'):
    lines += ['', '| PyTorch peer | batch | compiled | bf16 autocast | '
              'channels_last | pairs/s |', '|---|---|---|---|---|---|']
    for r in result['torch_peer']:
      if 'pairs_per_s' in r:
        lines.append(f'| {r.get("torch", "")} | {r.get("batch")} | '
                     f'{bool(r.get("compile"))} | '
                     f'{bool(r.get("bf16_autocast"))} | '
                     f'{bool(r.get("channels_last"))} | '
                     f'{r["pairs_per_s"]:.1f} |')
  return '\n'.join(lines)
