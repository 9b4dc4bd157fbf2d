"""Input pipeline: TFDS -> host arrays -> device windows, epoch order.

Two ways to read the ``nottingham_audio_sheet`` TFDS data (written by
``data_prep.prepare``; reading needs no TensorFlow):

* ``load_pairs``: the ``pairs`` config, the paper's packaging, one example per
  onset, ``(40, 100)`` sheet snippet and ``(136, 100)`` spectrogram excerpt.
  Used for the paper's evaluation protocol ("the first 16,000 pairs").
* ``load_pieces``: the ``pieces`` config, one example per piece, concatenated
  into one long strip and one long spectrogram of 6-bit codes (``PieceSet``).
  Training puts these on the device once and cuts every batch's windows there
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
version, so neither the builder class nor its dependencies are imported.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dccaflax import audio
from dccaflax import snippets

DATASET = 'nottingham_audio_sheet'

# Largest augmentation offsets the piece gaps allow (see ``PieceSet``).
MAX_DX = 10                          # px, horizontal sheet shift
MAX_DY = snippets.STRIP_MARGIN       # px, vertical sheet shift (strip margin)
MAX_DFRAME = 2                       # frames, onset jitter
# One more than strictly needed so that a notehead rounded onto x == W (or an
# onset on frame == T) still gets a window of pure padding beyond the piece.
SHEET_GAP = snippets.SHEET_WIDTH // 2 + MAX_DX + 1      # 61 px of paper
SPEC_GAP = snippets.SPEC_FRAMES // 2 + MAX_DFRAME + 1   # 53 frames of silence

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


_data_source = data_source   # the name tests/test_input_pipeline.py uses


def _read(source, n: int):
  """First ``n`` examples of a data source, in stored order."""
  for start in range(0, n, _READ_CHUNK):
    yield from source.__getitems__(range(start, min(start + _READ_CHUNK, n)))


def text(x) -> str:
  """A string feature of an example (bytes from TFDS) as ``str``."""
  return x.decode('utf-8') if isinstance(x, bytes) else str(x)


def load_pairs(data_dir: str, split: str, limit: Optional[int] = None
               ) -> dict[str, np.ndarray]:
  """The ``pairs`` config of a split as host arrays, in stored order.

  Stored order is (piece name, onset), so ``limit=16000`` gives the paper's
  "first 16,000" pairs.  Memory: 58,400 bytes per pair (about 0.93 GB for
  16,000 pairs), almost all of it the float32 spectrogram excerpt.

  Args:
    data_dir: the ``--data_dir`` of ``data_prep.prepare``.
    split: 'train', 'valid' or 'test'.
    limit: at most this many pairs (the first ones); None for all.

  Returns:
    dict of numpy arrays, N pairs:
      'sheet': (N, 40, 100) uint8, 255 = paper;
      'spec': (N, 136, 100) float32, log(1 + filterbank magnitude);
      'piece': (N,) str (object array), piece name;
      'onset_frame': (N,) int32, frame at 31.25 frames/s in the piece;
      'notehead_x': (N,) float32, px in the piece's strip;
      'bar': (N,) int32, 1-based bar number (pickup bar 0).
  """
  source = data_source(data_dir, 'pairs', split)
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
  for i, ex in enumerate(_read(source, n)):
    for key in ('sheet', 'spec', 'onset_frame', 'notehead_x', 'bar'):
      out[key][i] = ex[key]
    out['piece'][i] = text(ex['piece'])
  return out


# --------------------------------------------------------------------------
# Pieces, concatenated
# --------------------------------------------------------------------------


class Arrays(NamedTuple):
  """The device-side part of a ``PieceSet`` (a pytree of 5 arrays).

  Spectrograms stay 6-bit codes on the device (1 byte per bin instead of 4)
  and are dequantised inside the step, per pair: ``codes * step``, the same
  float32 product as ``audio.dequantize``, so windows are bit-identical to
  the TFDS ``pairs`` config's.

  Attributes:
    strips: (STRIP_HEIGHT=48, W_total) uint8, all strips side by side.
    specs: (136, T_total) uint8, 6-bit codes of every rendering of every
      piece, one after the other.
    x: (P,) int32, each pair's rounded notehead centre in ``strips`` px.
    frame: (R, P) int32, each pair's onset frame in ``specs``, per rendering.
    step: (R, P) float32, each pair's dequantisation step (``scale / 63`` of
      its piece's spectrogram in that rendering).
  """
  strips: np.ndarray | jax.Array
  specs: np.ndarray | jax.Array
  x: np.ndarray | jax.Array
  frame: np.ndarray | jax.Array
  step: np.ndarray | jax.Array


def footprint_bytes(strip_px: int, frames: int, pairs: int,
                    renderings: int = 1) -> int:
  """Bytes of ``Arrays`` for a set of pieces (gaps included in the counts).

  Args:
    strip_px: total strip width W_total, px.
    frames: total spectrogram length T_total over all renderings, frames.
    pairs: P.
    renderings: R.

  Returns:
    ``48 * W + 136 * T + 4 * P + 8 * R * P``.
  """
  return (snippets.STRIP_HEIGHT * strip_px + snippets.SPEC_BINS * frames
          + 4 * pairs + 8 * renderings * pairs)


@dataclasses.dataclass(frozen=True)
class PieceSet:
  """All pieces of a split, concatenated, plus per-pair indices.

  Layout: ``[gap][piece 0][gap][piece 1]...[piece n-1][gap]`` along x
  (``SHEET_GAP`` = 61 px of paper) and, for every (piece, rendering)
  spectrogram in turn, along time (``SPEC_GAP`` = 53 frames of silence), so
  a window of any allowed augmentation offset stays within its piece's
  padding.

  Memory footprint (``footprint_bytes``): 48 bytes per strip px, 136 bytes
  per spectrogram frame (6-bit codes in uint8) and 4 + 8 R bytes per pair on
  the device.  The Nottingham training split (694 pieces, 125,053 pairs)
  measured 0.29 GB with the primary rendering alone (1.77 M strip px, 1.47 M
  frames) and 1.30 GB with six (tempo factors 0.9/1.0/1.1 x FluidR3 and
  TimGM6mb: 8.9 M frames); ``tests/test_input_pipeline.py`` bounds the
  six-rendering footprint from the MIDI files (at most 1.35 GB).

  Attributes:
    arrays: ``Arrays`` (numpy); ``jax.device_put(ps.arrays)`` once, then cut
      windows with ``batch_windows(arrays, idx, ...)``.
    renderings: (R,) tags of the renderings in ``arrays.frame`` rows, e.g.
      ('fluidr3_t1.00', 'timgm6mb_t0.90'); row 0 is the one evaluation uses.
    piece_id: (P,) int32, index into ``names`` of each pair's piece.
    names: (n_pieces,) piece names in stored (sorted) order.
    strip_offset: (n_pieces,) int64, x of each piece's column 0 in ``strips``.
    frame_offset: (n_pieces, R) int64, frame of each piece's frame 0 in
      ``specs``, per rendering.
    notehead_x: (P,) float32, notehead x within the piece (unrounded).
    onset_frame: (P,) int32, onset frame within the piece in rendering 0.
    bar: (P,) int32, 1-based bar number of each pair.
  """
  arrays: Arrays
  renderings: tuple[str, ...]
  piece_id: np.ndarray
  names: tuple[str, ...]
  strip_offset: np.ndarray
  frame_offset: np.ndarray
  notehead_x: np.ndarray
  onset_frame: np.ndarray
  bar: np.ndarray

  def __len__(self) -> int:
    return int(self.piece_id.shape[0])

  @property
  def nbytes(self) -> int:
    """Bytes of the device arrays (``footprint_bytes``)."""
    return sum(int(np.asarray(a).nbytes) for a in self.arrays)


def piece_renderings(piece: dict) -> list[tuple[str, np.ndarray, float,
                                                np.ndarray]]:
  """``[(tag, codes (136, T) uint8, scale, onset frames (p,))]`` of a piece,
  the primary first.  A piece without the 'renderings' features (or with
  'spec' float32 values, which are quantised here) has only the primary,
  tagged 'primary'."""
  if 'spec_codes' in piece:
    codes, scale = piece['spec_codes'], float(piece['spec_scale'])
  else:
    codes, scale = audio.quantize(np.asarray(piece['spec'], np.float32))
  tags = [t for t in text(piece.get('renderings', '')).split(',') if t]
  out = [(tags[0] if tags else 'primary', codes, scale,
          np.asarray(piece['onset_frames']))]
  if len(tags) > 1:
    ends = np.cumsum(piece['extra_frames'])
    for k, tag in enumerate(tags[1:]):
      out.append((tag, piece['extra_codes'][:, ends[k] - piece[
          'extra_frames'][k]:ends[k]], float(piece['extra_scales'][k]),
                  np.asarray(piece['extra_onsets'][k])))
  return out


def _select(name: str, available: list, renderings) -> list:
  """The renderings of one piece that ``renderings`` asks for, in its order."""
  if renderings is None:
    return available[:1]
  if renderings == 'all':
    return available
  by_tag = {r[0]: r for r in available}
  missing = [t for t in renderings if t not in by_tag]
  if missing:
    raise ValueError(f'{name}: rendering(s) {missing} not prepared; this '
                     f'piece has {list(by_tag)} (prepare them with '
                     'data_prep.prepare --soundfonts ... --tempos ...)')
  return [by_tag[t] for t in renderings]


def concat_pieces(pieces: Sequence[dict],
                  renderings: Optional[str | Sequence[str]] = None
                  ) -> PieceSet:
  """Concatenates pieces (dicts like the ``pieces`` config) with gaps.

  Args:
    pieces: each with 'piece' (str/bytes), 'strip' (48, W) uint8,
      'spec_codes' (136, T) uint8 + 'spec_scale' (or 'spec' (136, T)
      float32, quantised here), 'onset_frames' (p,), 'notehead_x' (p,),
      'onset_bars' (p,); optionally the extra renderings ('renderings',
      'extra_codes', 'extra_frames', 'extra_scales', 'extra_onsets').
    renderings: None for the primary rendering only, 'all', or a list of
      rendering tags (every piece must have them); the first one is row 0.

  Returns:
    ``PieceSet`` in the given order.

  Raises:
    ValueError: no pieces, a wrong shape, a missing rendering, pieces with
      different renderings, or a pair outside its piece (rounded notehead
      outside [0, W] or onset outside [0, T]).
  """
  if not pieces:
    raise ValueError('no pieces to concatenate')
  if isinstance(renderings, str) and renderings != 'all':
    raise ValueError(f"renderings must be None, 'all' or a list of tags, "
                     f'got {renderings!r}')
  chosen, tags = [], None
  for p in pieces:
    name = text(p['piece'])
    if p['strip'].ndim != 2 or p['strip'].shape[0] != snippets.STRIP_HEIGHT:
      raise ValueError(f'{name}: strip must be '
                       f'({snippets.STRIP_HEIGHT}, W), got {p["strip"].shape}')
    rs = _select(name, piece_renderings(p), renderings)
    for tag, codes, _, _ in rs:
      if codes.ndim != 2 or codes.shape[0] != snippets.SPEC_BINS:
        raise ValueError(f'{name}: spectrogram {tag} must be '
                         f'({snippets.SPEC_BINS}, T), got {codes.shape}')
    if tags is None:
      tags = tuple(r[0] for r in rs)
    elif tuple(r[0] for r in rs) != tags:
      raise ValueError(f'{name}: renderings {[r[0] for r in rs]} differ from '
                       f'the first piece\'s {list(tags)}')
    chosen.append(rs)
  widths = np.array([p['strip'].shape[1] for p in pieces], np.int64)
  lengths = np.array([[r[1].shape[1] for r in rs] for rs in chosen],
                     np.int64)                                   # (n, R)
  strip_offset = SHEET_GAP + np.concatenate(
      [[0], np.cumsum(widths + SHEET_GAP)[:-1]]).astype(np.int64)
  flat = lengths.reshape(-1)
  frame_offset = (SPEC_GAP + np.concatenate(
      [[0], np.cumsum(flat + SPEC_GAP)[:-1]])).astype(np.int64).reshape(
          lengths.shape)
  strips = np.full((snippets.STRIP_HEIGHT,
                    int(strip_offset[-1] + widths[-1]) + SHEET_GAP),
                   snippets.PAPER, np.uint8)
  specs = np.zeros((snippets.SPEC_BINS,
                    int(frame_offset[-1, -1] + lengths[-1, -1]) + SPEC_GAP),
                   np.uint8)   # code 0 = silence
  xs, frames, steps, ids, hx, hf, bars = [], [], [], [], [], [], []
  for i, (p, rs) in enumerate(zip(pieces, chosen)):
    name = text(p['piece'])
    w = widths[i]
    strips[:, strip_offset[i]:strip_offset[i] + w] = p['strip']
    nx = np.asarray(p['notehead_x'], np.float32)
    rx = snippets.round_half_up(nx)
    if np.any(rx < 0) or np.any(rx > w):
      raise ValueError(f'{name}: noteheads outside the strip (W={w}): x in '
                       f'[{rx.min()}, {rx.max()}]')
    f_rows, s_rows = [], []
    for k, (tag, codes, scale, onsets) in enumerate(rs):
      t = lengths[i, k]
      specs[:, frame_offset[i, k]:frame_offset[i, k] + t] = codes
      of = np.asarray(onsets, np.int64)
      if of.shape != nx.shape or np.any(of < 0) or np.any(of > t):
        raise ValueError(
            f'{name}: onsets of rendering {tag} outside the piece or not one '
            f'per notehead (T={t}, {of.shape[0]} onsets for {nx.shape[0]} '
            f'noteheads, frames in [{of.min(initial=t)}, '
            f'{of.max(initial=0)}])')
      f_rows.append(of + frame_offset[i, k])
      s_rows.append(np.full(nx.shape, scale / audio.QUANT_LEVELS,
                            np.float32))
    xs.append(rx + strip_offset[i])
    frames.append(np.stack(f_rows))
    steps.append(np.stack(s_rows))
    ids.append(np.full(nx.shape, i, np.int32))
    hx.append(nx)
    hf.append(np.asarray(rs[0][3], np.int32))
    bars.append(np.asarray(p['onset_bars'], np.int32))
  arrays = Arrays(strips=strips, specs=specs,
                  x=np.concatenate(xs).astype(np.int32),
                  frame=np.concatenate(frames, axis=1).astype(np.int32),
                  step=np.concatenate(steps, axis=1))
  return PieceSet(arrays=arrays, renderings=tags,
                  piece_id=np.concatenate(ids),
                  names=tuple(text(p['piece']) for p in pieces),
                  strip_offset=strip_offset, frame_offset=frame_offset,
                  notehead_x=np.concatenate(hx), onset_frame=np.concatenate(hf),
                  bar=np.concatenate(bars))


def load_pieces(data_dir: str, split: str,
                max_pieces: Optional[int] = None,
                renderings: Optional[str | Sequence[str]] = None) -> PieceSet:
  """The ``pieces`` config of a split, concatenated (see ``PieceSet``).

  Pairs come in stored order (piece name, onset), the order of the ``pairs``
  config: pair ``i`` of both is the same onset.

  Args:
    data_dir: the ``--data_dir`` of ``data_prep.prepare``.
    split: 'train', 'valid' or 'test'.
    max_pieces: only the first this many pieces (None: all).
    renderings: None (the primary rendering, the ``pairs`` config's audio),
      'all' prepared renderings, or a list of their tags.

  Returns:
    ``PieceSet`` with 6-bit spectrogram codes.
  """
  source = data_source(data_dir, 'pieces', split)
  n = len(source) if max_pieces is None else min(int(max_pieces), len(source))
  try:
    return concat_pieces(list(_read(source, n)), renderings)
  except ValueError as e:
    raise ValueError(f'{config_dir(data_dir, "pieces")} ({split}): {e}'
                     ) from e


# --------------------------------------------------------------------------
# Windows on the device
# --------------------------------------------------------------------------


def cut_windows(strips: jax.Array, specs: jax.Array, x: jax.Array,
                frame: jax.Array, step: jax.Array, dx=0, dy=0, dframe=0
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
    dx: () or (B,) int, horizontal sheet shift in px, ``|dx| <= MAX_DX``
      (window moves right for dx > 0).
    dy: () or (B,) int, vertical sheet shift in px, ``|dy| <= MAX_DY``.
    dframe: () or (B,) int, onset jitter in frames, ``|dframe| <= MAX_DFRAME``.

  Returns:
    ``(sheets, spec_excerpts)``: (B, 40, 100) uint8 and (B, 136, 100) float32
    (log(1 + filterbank magnitude), ``codes * step``).
  """
  x = jnp.asarray(x, jnp.int32)
  b = x.shape[0]
  offset = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.int32), (b,))
  col = x + offset(dx) - snippets.SHEET_WIDTH // 2
  row = snippets.STRIP_MARGIN + offset(dy)
  start = (jnp.asarray(frame, jnp.int32) + offset(dframe)
           - snippets.SPEC_FRAMES // 2)
  sheets = jax.vmap(lambda r, c: jax.lax.dynamic_slice(
      strips, (r, c), (snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH)))(row, col)
  zero = jnp.zeros((), jnp.int32)
  codes = jax.vmap(lambda t: jax.lax.dynamic_slice(
      specs, (zero, t), (snippets.SPEC_BINS, snippets.SPEC_FRAMES)))(start)
  step = jnp.asarray(step, jnp.float32)[:, None, None]
  return sheets, codes.astype(jnp.float32) * step


def batch_windows(arrays: Arrays, idx: jax.Array, rendering=0, dx=0, dy=0,
                  dframe=0) -> tuple[jax.Array, jax.Array]:
  """Windows of the pairs ``idx`` in the given rendering(s) (jit-able).

  Args:
    arrays: ``Arrays`` (on the device).
    idx: (B,) int pair indices.
    rendering: () or (B,) int, row of ``arrays.frame`` (0: the first).
    dx, dy, dframe: augmentation offsets, as ``cut_windows``.

  Returns:
    ``(sheets, spec_excerpts)``: (B, 40, 100) uint8, (B, 136, 100) float32.
  """
  idx = jnp.asarray(idx, jnp.int32)
  r = jnp.broadcast_to(jnp.asarray(rendering, jnp.int32), idx.shape)
  return cut_windows(arrays.strips, arrays.specs, arrays.x[idx],
                     arrays.frame[r, idx], arrays.step[r, idx], dx, dy, dframe)


def random_renderings(rng: jax.Array, batch_size: int,
                      n_renderings: int) -> jax.Array:
  """(B,) int32 uniform rendering rows in ``[0, n_renderings)`` (jit-able)."""
  return jax.random.randint(rng, (batch_size,), 0, n_renderings, jnp.int32)


def random_offsets(rng: jax.Array, batch_size: int, max_dx: int = 0,
                   max_dy: int = 0, max_dframe: int = 0
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Uniform integer augmentation offsets (jit-able; maxima static).

  Args:
    rng: a JAX PRNG key.
    batch_size: B.
    max_dx, max_dy, max_dframe: inclusive ranges ``[-max, max]``; each at most
      ``MAX_DX``, ``MAX_DY``, ``MAX_DFRAME``.

  Returns:
    ``(dx, dy, dframe)``, each (B,) int32 (all zero where the max is 0).
  """
  check_augmentation(max_dx, max_dy, max_dframe)
  keys = jax.random.split(rng, 3)
  draw = lambda k, m: jax.random.randint(k, (batch_size,), -m, m + 1,
                                         jnp.int32)
  return draw(keys[0], max_dx), draw(keys[1], max_dy), draw(keys[2],
                                                            max_dframe)


def check_augmentation(max_dx: int, max_dy: int, max_dframe: int) -> None:
  """ValueError unless ``0 <= max <= MAX_*`` for all three offsets."""
  for name, value, limit in (('max_dx', max_dx, MAX_DX),
                             ('max_dy', max_dy, MAX_DY),
                             ('max_dframe', max_dframe, MAX_DFRAME)):
    if not 0 <= value <= limit:
      raise ValueError(f'{name} must be in [0, {limit}], got {value}')


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


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int
                  ) -> np.ndarray:
  """Pair indices of every batch of an epoch, remainder dropped.

  Returns:
    (n // batch_size, batch_size) int32.

  Raises:
    ValueError: fewer than ``batch_size`` pairs.
  """
  steps = steps_per_epoch(n, batch_size)
  if steps == 0:
    raise ValueError(f'{n} pairs is less than one batch of {batch_size}')
  order = epoch_permutation(seed, epoch, n)[:steps * batch_size]
  return order.reshape(steps, batch_size).astype(np.int32)
