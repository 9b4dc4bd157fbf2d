"""Input pipeline: TFDS -> host arrays -> device windows, epoch order.

Two ways to read the ``nottingham_audio_sheet`` TFDS data (written by
``data_prep.prepare``; reading needs no TensorFlow):

* ``load_pairs``: the ``pairs`` config, the paper's packaging, one example per
  onset, ``(40, 100)`` sheet snippet and ``(136, 100)`` spectrogram excerpt.
  Used for the paper's evaluation protocol ("the first 16,000 pairs").
* ``load_pieces``: the ``pieces`` config, one example per piece, concatenated
  into one long strip and one long spectrogram (``PieceSet``).  Training puts
  these on the device once and cuts every batch's windows there
  (``cut_windows``), with optional augmentation (shifted windows, onset
  jitter) at no extra storage.

Both give the same windows: ``cut_windows`` with no offsets equals
``snippets.sheet_snippet`` / ``snippets.spec_excerpt`` of the piece, because
pieces are separated by gaps of paper (255) and silence (0) at least half a
window plus the largest augmentation offset wide, so a window never reaches a
neighbouring piece.  (The ``pairs`` config stores the unquantised spectrogram;
the ``pieces`` config stores 6-bit codes, so their spectrogram windows differ
by at most ``spec_scale / 126`` per bin, about 0.03; sheet windows are
identical.)

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


def _data_source(data_dir: str, config: str, split: str):
  """Random-access TFDS source of one split (array_record, no TensorFlow)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(config_dir(data_dir, config))
  if split not in builder.info.splits:
    raise ValueError(f'split {split!r} not prepared in {data_dir} ({config}); '
                     f'have {sorted(builder.info.splits)}')
  return builder.as_data_source(split=split)


def _read(source, n: int):
  """First ``n`` examples of a data source, in stored order."""
  for start in range(0, n, _READ_CHUNK):
    yield from source.__getitems__(range(start, min(start + _READ_CHUNK, n)))


def _text(x) -> str:
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
  source = _data_source(data_dir, 'pairs', split)
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
    out['piece'][i] = _text(ex['piece'])
  return out


# --------------------------------------------------------------------------
# Pieces, concatenated
# --------------------------------------------------------------------------


class Arrays(NamedTuple):
  """The device-side part of a ``PieceSet`` (a pytree of 4 arrays).

  Attributes:
    strips: (STRIP_HEIGHT=48, W_total) uint8, all strips side by side.
    specs: (136, T_total) float32, all spectrograms one after the other.
    x: (P,) int32, each pair's rounded notehead centre in ``strips`` px.
    frame: (P,) int32, each pair's onset frame in ``specs``.
  """
  strips: np.ndarray | jax.Array
  specs: np.ndarray | jax.Array
  x: np.ndarray | jax.Array
  frame: np.ndarray | jax.Array


@dataclasses.dataclass(frozen=True)
class PieceSet:
  """All pieces of a split, concatenated, plus per-pair indices.

  Layout: ``[gap][piece 0][gap][piece 1]...[piece n-1][gap]`` along x
  (``SHEET_GAP`` = 61 px of paper) and along time (``SPEC_GAP`` = 53 frames of
  silence), so a window of any allowed augmentation offset stays within its
  piece's padding.

  Memory footprint: 48 bytes per strip px (uint8) plus 544 bytes per
  spectrogram frame (136 float32) plus 8 bytes per pair on the device
  (``arrays``); the host additionally keeps 16 bytes per pair of metadata.
  A Nottingham piece averages about 2,000 frames, 2,500 px and 170 pairs
  (measured on the first 8 pieces of each split), i.e. about 1.2 MB; the whole
  training split (694 pieces, 125,195 pairs) takes about 0.85 GB.

  Attributes:
    arrays: ``Arrays`` (numpy); ``jax.device_put(ps.arrays)`` once, then cut
      windows with ``cut_windows(*arrays, ...)``.
    piece_id: (P,) int32, index into ``names`` of each pair's piece.
    names: (n_pieces,) piece names in stored (sorted) order.
    strip_offset: (n_pieces,) int64, x of each piece's column 0 in ``strips``.
    frame_offset: (n_pieces,) int64, frame of each piece's frame 0 in
      ``specs``.
    notehead_x: (P,) float32, notehead x within the piece (unrounded).
    onset_frame: (P,) int32, onset frame within the piece.
    bar: (P,) int32, 1-based bar number of each pair.
  """
  arrays: Arrays
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
    """Bytes of the device arrays."""
    return sum(int(np.asarray(a).nbytes) for a in self.arrays)


def concat_pieces(pieces: Sequence[dict]) -> PieceSet:
  """Concatenates pieces (dicts like the ``pieces`` config) with gaps.

  Args:
    pieces: each with 'piece' (str/bytes), 'strip' (48, W) uint8,
      'spec' (136, T) float32 (or 'spec_codes' + 'spec_scale'),
      'onset_frames' (p,), 'notehead_x' (p,), 'onset_bars' (p,).

  Returns:
    ``PieceSet`` in the given order.

  Raises:
    ValueError: no pieces, a wrong shape, or a pair outside its piece
      (rounded notehead outside [0, W] or onset outside [0, T]).
  """
  if not pieces:
    raise ValueError('no pieces to concatenate')
  widths, lengths = [], []
  for p in pieces:
    if p['strip'].ndim != 2 or p['strip'].shape[0] != snippets.STRIP_HEIGHT:
      raise ValueError(f'{_text(p["piece"])}: strip must be '
                       f'({snippets.STRIP_HEIGHT}, W), got {p["strip"].shape}')
    widths.append(p['strip'].shape[1])
    spec = p['spec'] if 'spec' in p else p['spec_codes']
    if spec.ndim != 2 or spec.shape[0] != snippets.SPEC_BINS:
      raise ValueError(f'{_text(p["piece"])}: spectrogram must be '
                       f'({snippets.SPEC_BINS}, T), got {spec.shape}')
    lengths.append(spec.shape[1])
  strip_offset = SHEET_GAP + np.concatenate(
      [[0], np.cumsum(np.asarray(widths) + SHEET_GAP)[:-1]]).astype(np.int64)
  frame_offset = SPEC_GAP + np.concatenate(
      [[0], np.cumsum(np.asarray(lengths) + SPEC_GAP)[:-1]]).astype(np.int64)
  strips = np.full((snippets.STRIP_HEIGHT,
                    int(strip_offset[-1]) + widths[-1] + SHEET_GAP),
                   snippets.PAPER, np.uint8)
  specs = np.full((snippets.SPEC_BINS,
                   int(frame_offset[-1]) + lengths[-1] + SPEC_GAP),
                  snippets.SILENCE, np.float32)
  xs, frames, ids, hx, hf, bars = [], [], [], [], [], []
  for i, p in enumerate(pieces):
    name = _text(p['piece'])
    w, t = widths[i], lengths[i]
    strips[:, strip_offset[i]:strip_offset[i] + w] = p['strip']
    if 'spec' in p:
      spec = np.asarray(p['spec'], np.float32)
    else:
      spec = audio.dequantize(p['spec_codes'], p['spec_scale'])
    specs[:, frame_offset[i]:frame_offset[i] + t] = spec
    nx = np.asarray(p['notehead_x'], np.float32)
    of = np.asarray(p['onset_frames'], np.int64)
    rx = snippets.round_half_up(nx)
    if nx.shape != of.shape or np.any(rx < 0) or np.any(rx > w) or np.any(
        of < 0) or np.any(of > t):
      raise ValueError(f'{name}: pairs outside the piece (W={w}, T={t}): '
                       f'x in [{rx.min(initial=0)}, {rx.max(initial=0)}], '
                       f'frames in [{of.min(initial=0)}, {of.max(initial=0)}]')
    xs.append(rx + strip_offset[i])
    frames.append(of + frame_offset[i])
    ids.append(np.full(nx.shape, i, np.int32))
    hx.append(nx)
    hf.append(of.astype(np.int32))
    bars.append(np.asarray(p['onset_bars'], np.int32))
  arrays = Arrays(strips=strips, specs=specs,
                  x=np.concatenate(xs).astype(np.int32),
                  frame=np.concatenate(frames).astype(np.int32))
  return PieceSet(arrays=arrays, piece_id=np.concatenate(ids),
                  names=tuple(_text(p['piece']) for p in pieces),
                  strip_offset=strip_offset, frame_offset=frame_offset,
                  notehead_x=np.concatenate(hx), onset_frame=np.concatenate(hf),
                  bar=np.concatenate(bars))


def load_pieces(data_dir: str, split: str,
                max_pieces: Optional[int] = None) -> PieceSet:
  """The ``pieces`` config of a split, concatenated (see ``PieceSet``).

  Pairs come in stored order (piece name, onset), the order of the ``pairs``
  config: pair ``i`` of both is the same onset.

  Args:
    data_dir: the ``--data_dir`` of ``data_prep.prepare``.
    split: 'train', 'valid' or 'test'.
    max_pieces: only the first this many pieces (None: all).

  Returns:
    ``PieceSet`` with dequantised float32 spectrograms.
  """
  source = _data_source(data_dir, 'pieces', split)
  n = len(source) if max_pieces is None else min(int(max_pieces), len(source))
  return concat_pieces(list(_read(source, n)))


# --------------------------------------------------------------------------
# Windows on the device
# --------------------------------------------------------------------------


def cut_windows(strips: jax.Array, specs: jax.Array, x: jax.Array,
                frame: jax.Array, dx=0, dy=0, dframe=0
                ) -> tuple[jax.Array, jax.Array]:
  """Cuts a batch of (sheet snippet, spectrogram excerpt) windows (jit-able).

  Same geometry as ``snippets.sheet_snippet`` / ``snippets.spec_excerpt``:
  window ``[c - w // 2, c - w // 2 + w)`` around the (already rounded) centre,
  sheet band rows ``[4 + dy, 44 + dy)`` of the strip.  Uses
  ``lax.dynamic_slice``, which clamps out-of-range starts: the gaps of a
  ``PieceSet`` keep every allowed offset in range.

  Args:
    strips: (48, W_total) uint8 (``PieceSet.arrays.strips``).
    specs: (136, T_total) float32.
    x: (B,) int, rounded notehead centres in ``strips`` px.
    frame: (B,) int, onset frames in ``specs``.
    dx: () or (B,) int, horizontal sheet shift in px, ``|dx| <= MAX_DX``
      (window moves right for dx > 0).
    dy: () or (B,) int, vertical sheet shift in px, ``|dy| <= MAX_DY``.
    dframe: () or (B,) int, onset jitter in frames, ``|dframe| <= MAX_DFRAME``.

  Returns:
    ``(sheets, spec_excerpts)``: (B, 40, 100) uint8 and (B, 136, 100) float32.
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
  excerpts = jax.vmap(lambda t: jax.lax.dynamic_slice(
      specs, (zero, t), (snippets.SPEC_BINS, snippets.SPEC_FRAMES)))(start)
  return sheets, excerpts


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
