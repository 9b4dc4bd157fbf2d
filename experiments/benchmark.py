r"""Speed of training, embedding and retrieval on this machine's accelerator.

  python -m experiments.benchmark [--width 1.0] [--out bench.json] [--quick] \
      [--torch_peer PEER.py]

Measures, on synthetic device arrays shaped like the real ones (no data
needed; the numbers do not depend on the content):

* training: pairs/s of the whole SGD step as ``training.train_and_evaluate``
  runs it (batch indices sliced on the device from the epoch order, window
  cutting, both towers forward, DCCA loss, backward, momentum update, the
  non-finite check) for each batch size x dtype x steps per dispatch, and the
  time of one epoch of the training split extrapolated from it
  (``--train_pairs``, full batches only);
* embedding: pairs/s of both towers in eval mode (cut windows -> (B, h) x 2);
* retrieval: latency of ``retrieval.top_k`` (exact, chunked, k = 10) for 1
  and 1,000 audio queries against 16,000 and 1,000,000 random unit-vector
  sheet candidates (the host-side normalisation and chunking included).

Every number is the median of ``--repeats`` timed calls after a warm-up call
(compilation excluded), each ended by ``block_until_ready``.  ``--quick``:
narrow towers, one batch size, few repeats, smaller candidate sets (a smoke
run for a CPU; about a minute or two).

``--torch_peer PATH`` also runs a PyTorch peer script of the paper's model
(one that prints JSON lines of pairs/s; needs torch and a CUDA GPU; not part
of this project) in the same call and prints our
pairs/s over its pairs/s at the same batch size (float32 vs its compiled
float32, bfloat16 vs its compiled bf16 autocast); skipped with a message when
torch is not importable.

Prints a table and writes JSON (``--out``).
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

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from dccaflax import audio
from dccaflax import config as config_lib
from dccaflax import evaluation
from dccaflax import models
from dccaflax import pieceset
from dccaflax import retrieval
from dccaflax import snippets
from dccaflax import steps

TRAIN_PAIRS = 125_053   # full batches of 100 over the training split's pairs
# The audio input training uses (TrainConfig's default, the flagfiles').
_LEVEL_NORM = config_lib.TrainConfig().level_norm

_WIDTH = flags.DEFINE_float('width', 1.0, 'Tower width multiplier (1 = the '
                            "paper's model).")
_OUT = flags.DEFINE_string('out', None, 'Write the results as JSON here.')
_QUICK = flags.DEFINE_bool('quick', False, 'Small CPU smoke run: width '
                           '0.125 (unless --width is given), batch 50, steps '
                           'per dispatch 1 and 4, 2 repeats, 16,000 and '
                           '100,000 candidates.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['100', '1000'],
                                 'Training batch sizes.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'],
                            'Tower compute dtypes.')
_SPD = flags.DEFINE_list('steps_per_dispatch', ['1', '20'],
                         'Fused SGD steps per jitted call.')
_CANDIDATES = flags.DEFINE_list('candidates', ['16000', '1000000'],
                                'Retrieval candidate set sizes.')
_QUERIES = flags.DEFINE_list('queries', ['1', '1000'],
                             'Retrieval query counts.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per number.')
_TRAIN_PAIRS = flags.DEFINE_integer('train_pairs', TRAIN_PAIRS, 'Training '
                                    'pairs of one epoch for the epoch time.')
_RENDERINGS = flags.DEFINE_integer('renderings', 1, 'Audio renderings in '
                                   'the synthetic training arrays (> 1: each '
                                   'step also draws one per pair, as '
                                   '--renderings=all training does).')
_TORCH_PEER = flags.DEFINE_string('torch_peer', None, 'Path of '
                                  'torch_peer.py to run side by side.')


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


def time_call(fn: Callable[[], object], repeats: int) -> float:
  """Median seconds of ``fn()`` (blocked until ready) after one warm-up."""
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
                train_pairs: int = TRAIN_PAIRS) -> dict:
  """Pairs/s of ``steps.train_chunk`` (the training loop's call).

  Returns:
    dict: 'width', 'dtype', 'batch', 'steps_per_dispatch', 'pairs_per_s',
    's_per_step', 'epoch_s' (``train_pairs // batch`` steps).
  """
  if arrays is None:
    arrays = synthetic_arrays(max(2 * batch_size * steps_per_dispatch,
                                  4 * batch_size))
  n = int(arrays.x.shape[0])
  model = models.create_model(width=width, dtype=jnp.dtype(dtype),
                              level_norm=_LEVEL_NORM)
  optimizer = steps.make_optimizer(0.01, 0.9, 25, 1000)
  state = steps.create_train_state(jax.random.key(0), model, optimizer)
  order = jnp.asarray(np.random.default_rng(0).integers(
      0, n, (steps_per_dispatch, batch_size), np.int32))
  run = functools.partial(steps.train_chunk, model=model,
                          optimizer=optimizer, reg=1e-3,
                          max_steps=steps_per_dispatch)
  box = [state]

  def call():
    # The state is carried from call to call, as in training (repeats keep
    # training on the same batches; the speed does not depend on them).
    box[0], metrics = run(box[0], arrays, order, np.int32(0),
                          np.int32(steps_per_dispatch))
    return metrics['loss']

  seconds = time_call(call, repeats)
  per_step = seconds / steps_per_dispatch
  return {'width': width, 'dtype': dtype, 'batch': batch_size,
          'steps_per_dispatch': steps_per_dispatch,
          'pairs_per_s': batch_size / per_step, 's_per_step': per_step,
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
  seconds = time_call(lambda: evaluation.outputs_at(
      model, variables, arrays, idx), repeats)
  return {'width': width, 'dtype': dtype, 'batch': batch_size,
          'pairs_per_s': batch_size / seconds}


def bench_retrieval(n_queries: int, n_candidates: int, repeats: int,
                    dim: int = models.PAPER_OUT_DIM, k: int = 10) -> dict:
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


# --------------------------------------------------------------------------
# The PyTorch peer
# --------------------------------------------------------------------------


def run_torch_peer(path: str, timeout_s: int = 3600) -> Optional[list]:
  """Runs ``torch_peer.py``; its JSON lines, or None (torch missing/error)."""
  if importlib.util.find_spec('torch') is None:
    print('torch peer skipped: torch is not installed here')
    return None
  if not os.path.exists(path):
    print(f'torch peer skipped: {path} not found')
    return None
  out = subprocess.run([sys.executable, path], capture_output=True,
                       text=True, timeout=timeout_s)
  rows = []
  for line in out.stdout.splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      pass
  if out.returncode != 0 and not rows:
    print(f'torch peer failed (exit {out.returncode}): {out.stderr[-2000:]}')
    return None
  return rows


def peer_ratios(train_rows: Sequence[dict], peer_rows: Sequence[dict]
                ) -> list[dict]:
  """Ours / peer pairs/s at equal batch: fp32 vs the peer's compiled fp32,
  bf16 vs its compiled bf16 autocast (contiguous); our best steps per
  dispatch."""
  out = []
  for dtype, bf16 in (('float32', False), ('bfloat16', True)):
    for batch in sorted({r['batch'] for r in train_rows}):
      ours = [r['pairs_per_s'] for r in train_rows
              if r['dtype'] == dtype and r['batch'] == batch]
      peer = [r['pairs_per_s'] for r in peer_rows
              if r.get('batch') == batch and r.get('compile')
              and r.get('bf16_autocast') == bf16
              and not r.get('channels_last') and 'pairs_per_s' in r]
      if ours and peer:
        out.append({'dtype': dtype, 'batch': batch, 'ours': max(ours),
                    'torch': peer[0], 'ratio': max(ours) / peer[0]})
  return out


# --------------------------------------------------------------------------
# All of it
# --------------------------------------------------------------------------


def run_all(width: float, batch_sizes: Sequence[int], dtypes: Sequence[str],
            steps_per_dispatch: Sequence[int], queries: Sequence[int],
            candidates: Sequence[int], repeats: int,
            train_pairs: int = TRAIN_PAIRS, embed_batch: int = 1000,
            renderings: int = 1,
            log: Callable[[str], None] = print) -> dict:
  """Every measurement; the JSON the command writes.

  Returns:
    dict: 'device', 'jax', 'width', 'train' (list of ``bench_train``),
    'embed' (list of ``bench_embed``), 'retrieval' (list of
    ``bench_retrieval``).
  """
  need = max(2 * b * k for b in batch_sizes for k in steps_per_dispatch)
  arrays = synthetic_arrays(max(need, 2 * embed_batch, 1000),
                            renderings=renderings)
  result = {'renderings': renderings, 'device': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
            'platform': jax.devices()[0].platform, 'jax': jax.__version__,
            'width': width, 'train': [], 'embed': [], 'retrieval': []}
  for dtype in dtypes:
    for batch in batch_sizes:
      for k in steps_per_dispatch:
        r = bench_train(width, dtype, batch, k, repeats, arrays, train_pairs)
        log(f'train {dtype} batch {batch} x{k}: {r["pairs_per_s"]:.0f} '
            'pairs/s')
        result['train'].append(r)
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
           '| training step | batch | steps/dispatch | pairs/s | ms/step | '
           'epoch (s) |', '|---|---|---|---|---|---|']
  for r in result['train']:
    lines.append(f'| {r["dtype"]} | {r["batch"]} | {r["steps_per_dispatch"]}'
                 f' | {r["pairs_per_s"]:.0f} | {r["s_per_step"] * 1e3:.1f} | '
                 f'{r["epoch_s"]:.0f} |')
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
    lines += ['', '| vs PyTorch peer | batch | ours pairs/s | torch pairs/s |'
              ' ratio |', '|---|---|---|---|---|']
    for r in result['torch_ratio']:
      lines.append(f'| {r["dtype"]} | {r["batch"]} | {r["ours"]:.0f} | '
                   f'{r["torch"]:.0f} | {r["ratio"]:.2f} |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _QUICK.value:
    settings = dict(width=0.125, batch_sizes=[50], steps_per_dispatch=[1, 4],
                    queries=[1, 1000], candidates=[16000, 100_000],
                    repeats=2, embed_batch=500)
  else:
    settings = dict(width=_WIDTH.value,
                    batch_sizes=[int(b) for b in _BATCH_SIZES.value],
                    steps_per_dispatch=[int(k) for k in _SPD.value],
                    queries=[int(q) for q in _QUERIES.value],
                    candidates=[int(c) for c in _CANDIDATES.value],
                    repeats=_REPEATS.value)
  if _QUICK.value and _WIDTH.present:
    settings['width'] = _WIDTH.value
  result = run_all(dtypes=_DTYPES.value, train_pairs=_TRAIN_PAIRS.value,
                   renderings=_RENDERINGS.value, **settings)
  if _TORCH_PEER.value:
    peer = run_torch_peer(_TORCH_PEER.value)
    if peer is not None:
      result['torch_peer'] = peer
      result['torch_ratio'] = peer_ratios(result['train'], peer)
  print(format_table(result))
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
