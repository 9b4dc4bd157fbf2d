"""Input pipeline: TFDS -> host arrays -> device windows, epoch order.

Two ways to read the ``nottingham_audio_sheet`` TFDS data (written by
``data_prep.prepare``; reading needs no TensorFlow):

* ``load_pairs``: the ``pairs`` config, the paper's packaging, one example per
  onset, ``(40, 100)`` sheet snippet and ``(136, 100)`` spectrogram excerpt.
  Used for the paper's evaluation protocol ("the first 16,000 pairs").
* ``load_pieces``: the ``pieces`` config, one example per piece, concatenated
  into one long strip and one long spectrogram of 6-bit codes
  (``pieceset.PieceSet``).  Training puts these on the device once and cuts every batch's windows there
  (``batch_windows``), with optional augmentation at no extra storage:
  shifted sheet windows, onset jitter, and a choice among the prepared
  renderings of the audio (tempo factors x soundfonts, ``data_prep.prepare
  --soundfonts ... --tempos ...``), whose onset frames are stored per pair, so
  pair ``i`` is the same notehead in every rendering.

Both give the same windows: ``batch_windows`` with no offsets (rendering 0 =
the primary) equals ``snippets.sheet_snippet`` / ``snippets.spec_excerpt`` of
the piece, bit for bit: pieces are separated by gaps of paper (255) and
silence (code 0) at least half a window plus the largest augmentation offset
wide, so a window never reaches a neighbouring piece, and the excerpt is
dequantised on the device exactly as ``audio.dequantize`` dequantised the
``pairs`` config's values.

Reading goes through ``tfds.builder_from_directory`` on the newest prepared
version, so neither the builder class nor its dependencies are imported;
where ``data_dir`` holds packed splits (``data_prep.pack``), both read those
with NumPy alone and give the same arrays.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dccaflax import pieceset
from dccaflax import snippets
from dccaflax import sources

DATASET = 'nottingham_audio_sheet'

_READ_CHUNK = 1000  # examples per ``__getitems__`` call


# --------------------------------------------------------------------------
# TFDS reading
# --------------------------------------------------------------------------


def _version_key(name: str):
  try:
    return tuple(int(p) for p in name.split('.'))
  except ValueError:
    return (-1,)


def config_dir(data_dir: str, config: str) -> str:
  """Newest prepared version folder ``data_dir/nottingham_audio_sheet/config/X.Y.Z``.

  Raises:
    FileNotFoundError: nothing prepared there (with the command that does).
  """
  root = os.path.join(os.fspath(data_dir), DATASET, config)
  versions = []
  if os.path.isdir(root):
    versions = [v for v in os.listdir(root)
                if os.path.isfile(os.path.join(root, v, 'dataset_info.json'))]
  if not versions:
    raise FileNotFoundError(
        f'no prepared {DATASET}/{config} data under {data_dir}; run '
        f'python -m data_prep.prepare --data_dir {data_dir} --midi_dir ...')
  return os.path.join(root, max(versions, key=_version_key))


def data_source(data_dir: str, config: str, split: str):
  """Random-access TFDS source of one split (array_record, no TensorFlow).

  Args:
    data_dir: the ``--data_dir`` of ``data_prep.prepare``.
    config: 'pairs' or 'pieces'.
    split: 'train', 'valid' or 'test'.

  Raises:
    FileNotFoundError: nothing prepared there; ValueError: the split is not
    prepared (the message names the data dir and the splits it has).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(config_dir(data_dir, config))
  if split not in builder.info.splits:
    raise ValueError(f'split {split!r} not prepared in {data_dir} ({config}); '
                     f'have {sorted(builder.info.splits)}')
  return builder.as_data_source(split=split)


def read_examples(source, n: int):
  """First ``n`` examples of a data source, in stored order."""
  for start in range(0, n, _READ_CHUNK):
    yield from source.__getitems__(range(start, min(start + _READ_CHUNK, n)))


def load_pairs(data_dir: str, split: str, limit: Optional[int] = None,
               collection: str = sources.NOTTINGHAM) -> dict[str, np.ndarray]:
  """The ``pairs`` config of a split as host arrays, in stored order.

  Stored order is (piece name, onset), so ``limit=16000`` gives the paper's
  "first 16,000" pairs.  Where ``data_dir`` holds a pack of the split
  (``data_prep.pack``), the windows are cut from its pieces instead: the
  same arrays, read with NumPy alone.  Memory: 58,400 bytes per pair (about
  0.93 GB for 16,000 pairs), almost all of it the float32 spectrogram
  excerpt.

  Args:
    data_dir: the ``--data_dir`` of ``data_prep.prepare``.
    split: 'train', 'valid' or 'test'.
    limit: at most this many pairs (the first ones); None for all.
    collection: whose pairs, a collection or '<collection>:<engraving>'
      (``sources.config_name``); packs hold Nottingham's LilyPond pairs.

  Returns:
    dict of numpy arrays, N pairs:
      'sheet': (N, 40, 100) uint8, 255 = paper;
      'spec': (N, 136, 100) float32, log(1 + filterbank magnitude);
      'piece': (N,) str (object array), piece name;
      'onset_frame': (N,) int32, frame at 31.25 frames/s in the piece;
      'notehead_x': (N,) float32, px in the piece's strip;
      'bar': (N,) int32, 1-based bar number (pickup bar 0).
  """
  collection = sources.source_name(*sources.split_source(collection))
  if (collection == sources.NOTTINGHAM
      and os.path.isfile(pieceset.pack_path(data_dir, split))):
    return _packed_pairs(data_dir, split, limit)
  source = data_source(data_dir, sources.config_name('pairs', collection),
                       split)
  n = len(source) if limit is None else min(int(limit), len(source))
  out = {
      'sheet': np.empty((n, snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH),
                        np.uint8),
      'spec': np.empty((n, snippets.SPEC_BINS, snippets.SPEC_FRAMES),
                       np.float32),
      'piece': np.empty((n,), object),
      'onset_frame': np.empty((n,), np.int32),
      'notehead_x': np.empty((n,), np.float32),
      'bar': np.empty((n,), np.int32),
  }
  for i, ex in enumerate(read_examples(source, n)):
    for key in ('sheet', 'spec', 'onset_frame', 'notehead_x', 'bar'):
      out[key][i] = ex[key]
    out['piece'][i] = pieceset.text(ex['piece'])
  return out


def load_pieces(data_dir: str, split: str,
                max_pieces: Optional[int] = None,
                renderings: Optional[str | Sequence[str]] = None,
                collections: Sequence[str] = (sources.NOTTINGHAM,)
                ) -> pieceset.PieceSet:
  """The ``pieces`` config of a split, concatenated (see ``PieceSet``).

  Pairs come in stored order (piece name, onset), the order of the ``pairs``
  config: pair ``i`` of both is the same onset.  Where ``data_dir`` holds a
  pack of the split (``data_prep.pack``), that is read instead (NumPy
  alone; the primary rendering; Nottingham alone).

  Args:
    data_dir: the ``--data_dir`` of ``data_prep.prepare``.
    split: 'train', 'valid' or 'test'.
    max_pieces: only the first this many pieces of each collection (None:
      all).
    renderings: None (the primary rendering, the ``pairs`` config's audio),
      'all' prepared renderings, or a list of their tags (every collection
      must have them).
    collections: whose pieces, concatenated in this order (each its own
      split of its own ``sources.config_name('pieces', c)``).

  Returns:
    ``PieceSet`` with 6-bit spectrogram codes.
  """
  collections = sources.parse_collections(collections)
  if (collections == (sources.NOTTINGHAM,)
      and os.path.isfile(pieceset.pack_path(data_dir, split))):
    return _packed_pieces(data_dir, split, max_pieces, renderings)
  examples, where = [], []
  for collection in collections:
    config = sources.config_name('pieces', collection)
    source = data_source(data_dir, config, split)
    n = len(source) if max_pieces is None else min(int(max_pieces),
                                                  len(source))
    examples += list(read_examples(source, n))
    where.append(config_dir(data_dir, config))
  try:
    return pieceset.concat_pieces(examples, renderings)
  except ValueError as e:
    raise ValueError(f'{", ".join(where)} ({split}): {e}') from e


# --------------------------------------------------------------------------
# Packed data (``data_prep.pack``): the same pieces and pairs, NumPy alone
# --------------------------------------------------------------------------


def _packed_pieces(data_dir: str, split: str, max_pieces: Optional[int],
                   renderings) -> pieceset.PieceSet:
  """``load_pieces`` from ``data_dir/packed/<split>.npz``."""
  path = pieceset.pack_path(data_dir, split)
  pieces, split_pairs = pieceset.load_pack(path)
  if renderings not in (None, 'primary'):
    raise ValueError(f'{path}: a pack holds the primary rendering only, '
                     f'not {renderings!r}')
  if max_pieces is None and sum(len(p['onset_frames']) for p in pieces) < (
      split_pairs):
    raise ValueError(f'{path} holds only the first pieces of the {split} '
                     f'split ({split_pairs} pairs in all): pack the whole '
                     'split, or ask for its first pairs (load_pairs limit)')
  return pieceset.concat_pieces(pieces[:max_pieces])


def _packed_pairs(data_dir: str, split: str, limit: Optional[int]) -> dict:
  """``load_pairs`` from a pack: windows cut on the host from its pieces
  (``pieceset.cut``), equal to the TFDS ``pairs`` config's."""
  path = pieceset.pack_path(data_dir, split)
  pieces, split_pairs = pieceset.load_pack(path)
  n = split_pairs if limit is None else min(int(limit), split_pairs)
  counts = np.cumsum([len(p['onset_frames']) for p in pieces])
  if not counts.size or counts[-1] < n:
    raise ValueError(f'{path} holds {counts[-1] if counts.size else 0} '
                     f'pairs of the {split} split, {n} were asked for: pack '
                     'more of it')
  ps = pieceset.concat_pieces(pieces[:int(np.searchsorted(counts, n)) + 1])
  sheets, specs = pieceset.cut(ps, np.arange(n))
  return {'sheet': sheets, 'spec': specs,
          'piece': np.array(ps.names, object)[ps.piece_id[:n]],
          'onset_frame': ps.onset_frame[:n].astype(np.int32),
          'notehead_x': ps.notehead_x[:n],
          'bar': ps.bar[:n].astype(np.int32)}


# --------------------------------------------------------------------------
# Windows on the device
# --------------------------------------------------------------------------


def cut_windows(strips: jax.Array, specs: jax.Array, x: jax.Array,
                frame: jax.Array, step: jax.Array, dx=0, dy=0, dframe=0,
                margin: int = 0, sheet_margin: int = 0
                ) -> tuple[jax.Array, jax.Array]:
  """Cuts a batch of (sheet snippet, spectrogram excerpt) windows (jit-able).

  Same geometry as ``snippets.sheet_snippet`` / ``snippets.spec_excerpt``:
  window ``[c - w // 2, c - w // 2 + w)`` around the (already rounded) centre,
  sheet band rows ``[4 + dy, 44 + dy)`` of the strip.  Uses
  ``lax.dynamic_slice``, which clamps out-of-range starts: the gaps of a
  ``PieceSet`` keep every allowed offset in range.

  Args:
    strips: (48, W_total) uint8 (``PieceSet.arrays.strips``).
    specs: (136, T_total) uint8 6-bit codes.
    x: (B,) int, rounded notehead centres in ``strips`` px.
    frame: (B,) int, onset frames in ``specs``.
    step: (B,) float32, dequantisation step of each pair's spectrogram.
    dx: () or (B,) int, horizontal sheet shift in px, ``|dx| <=
      augment.MAX_DX`` (the window moves right for dx > 0).
    dy: () or (B,) int, vertical sheet shift in px, ``|dy| <=
      snippets.STRIP_MARGIN``.
    dframe: () or (B,) int, onset jitter in frames, ``|dframe| <=
      augment.MAX_DFRAME``.
    margin: static; the excerpts are cut this many frames wider each side
      (``augment.margin``, for a time stretch).
    sheet_margin: static; the snippets are cut this many px wider each side
      (``augment.margin``, for a sheet scale).

  Returns:
    ``(sheets, spec_excerpts)``: (B, 40, 100 + 2 * sheet_margin) uint8 and
    (B, 136, 100 + 2 * margin) float32 (log(1 + filterbank magnitude),
    ``codes * step``).
  """
  x = jnp.asarray(x, jnp.int32)
  b = x.shape[0]
  offset = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.int32), (b,))
  col = x + offset(dx) - snippets.SHEET_WIDTH // 2 - sheet_margin
  row = snippets.STRIP_MARGIN + offset(dy)
  start = (jnp.asarray(frame, jnp.int32) + offset(dframe)
           - snippets.SPEC_FRAMES // 2 - margin)
  sheets = jax.vmap(lambda r, c: jax.lax.dynamic_slice(
      strips, (r, c), (snippets.SHEET_HEIGHT,
                       snippets.SHEET_WIDTH + 2 * sheet_margin)))(row, col)
  zero = jnp.zeros((), jnp.int32)
  codes = jax.vmap(lambda t: jax.lax.dynamic_slice(
      specs, (zero, t), (snippets.SPEC_BINS,
                         snippets.SPEC_FRAMES + 2 * margin)))(start)
  step = jnp.asarray(step, jnp.float32)[:, None, None]
  return sheets, codes.astype(jnp.float32) * step


def batch_windows(arrays: pieceset.Arrays, idx: jax.Array, rendering=0, dx=0,
                  dy=0, dframe=0, margin: int = 0, sheet_margin: int = 0
                  ) -> tuple[jax.Array, jax.Array]:
  """Windows of the pairs ``idx`` in the given rendering(s) (jit-able).

  Args:
    arrays: ``Arrays`` (on the device).
    idx: (B,) int pair indices.
    rendering: () or (B,) int, row of ``arrays.frame`` (0: the first).
    dx, dy, dframe, margin, sheet_margin: augmentation offsets and the
      static extra frames and px each side, as ``cut_windows``.

  Returns:
    ``(sheets, spec_excerpts)``: (B, 40, 100 + 2 * sheet_margin) uint8,
    (B, 136, 100 + 2 * margin) float32.
  """
  idx = jnp.asarray(idx, jnp.int32)
  r = jnp.broadcast_to(jnp.asarray(rendering, jnp.int32), idx.shape)
  return cut_windows(arrays.strips, arrays.specs, arrays.x[idx],
                     arrays.frame[r, idx], arrays.step[r, idx], dx, dy, dframe,
                     margin, sheet_margin)


def random_renderings(rng: jax.Array, batch_size: int,
                      n_renderings: int) -> jax.Array:
  """(B,) int32 uniform rendering rows in ``[0, n_renderings)`` (jit-able)."""
  return jax.random.randint(rng, (batch_size,), 0, n_renderings, jnp.int32)


# --------------------------------------------------------------------------
# Epoch order
# --------------------------------------------------------------------------


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """Order of the ``n`` pairs in ``epoch``: a function of (seed, epoch) only.

  NumPy's PCG64 seeded with ``(seed, epoch)``, so a resumed run replays the
  same order without storing any sampler state.

  Returns:
    (n,) int64 permutation of ``range(n)``.
  """
  return np.random.default_rng((int(seed), int(epoch))).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped)."""
  return n // batch_size


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int,
                  epoch_steps: Optional[int] = None) -> np.ndarray:
  """Pair indices of every batch of an epoch, remainder dropped.

  By default an epoch is one pass over the ``n`` pairs in the order
  ``epoch_permutation(seed, epoch)``.  With ``epoch_steps`` an epoch is
  that many batches of the stream of such passes (pass ``p`` in the order
  ``epoch_permutation(seed, p)``, its remainder dropped): epoch ``e`` takes
  stream batches ``e * epoch_steps ... (e + 1) * epoch_steps - 1``, so
  shorter epochs (checkpoints, evaluations, time-budget stops) see the
  data exactly as full passes would; ``epoch_steps = n // batch_size`` is
  the default.

  Returns:
    (steps, batch_size) int32, steps = ``epoch_steps`` or
    ``n // batch_size``.

  Raises:
    ValueError: fewer than ``batch_size`` pairs, or ``epoch_steps < 1``.
  """
  steps = steps_per_epoch(n, batch_size)
  if steps == 0:
    raise ValueError(f'{n} pairs is less than one batch of {batch_size}')
  pass_batches = lambda p: epoch_permutation(seed, p, n)[
      :steps * batch_size].reshape(steps, batch_size)
  if epoch_steps is None or epoch_steps == steps:
    return pass_batches(epoch).astype(np.int32)
  if epoch_steps < 1:
    raise ValueError(f'epoch_steps must be >= 1, got {epoch_steps}')
  first, last = epoch * epoch_steps, (epoch + 1) * epoch_steps   # stream
  rows = [pass_batches(p) for p in range(first // steps,
                                          (last - 1) // steps + 1)]
  start = first - first // steps * steps
  return np.concatenate(rows)[start:start + epoch_steps].astype(np.int32)
