"""Pieces concatenated with gaps: the host-side layout training cuts from.

A split's pieces (``pieces`` config examples, or dicts like them) become one
long strip of sheet music and one long spectrogram of 6-bit codes per
rendering, laid out ``[gap][piece 0][gap][piece 1]...[gap]`` (``PieceSet``),
plus per-pair indices into them (``Arrays``: the notehead x, and each
rendering's onset frame and dequantisation step).  The gaps are paper (255)
and silence (code 0) at least half a window plus the largest augmentation
offset wide (``SHEET_GAP``, ``SPEC_GAP``), so a window cut anywhere an
augmentation may move it never reaches a neighbouring piece, and a window
with no offset equals ``snippets.sheet_snippet`` / ``spec_excerpt`` of the
piece bit for bit.

NumPy only: ``input_pipeline`` reads the TFDS data into this layout and cuts
windows from it on the device.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import NamedTuple, Optional, Sequence

import numpy as np

from dccaflax import audio
from dccaflax import augment
from dccaflax import snippets

# One more than strictly needed so that a notehead rounded onto x == W (or an
# onset on frame == T) still gets a window of pure padding beyond the piece.
# The augmentations' reach beyond a window is theirs to declare
# (``augment.layout_gap``).
SHEET_GAP = (snippets.SHEET_WIDTH // 2 + augment.layout_gap(augment.SHEET)
             + 1)                                     # 77 px of paper
SPEC_GAP = (snippets.SPEC_FRAMES // 2 + augment.layout_gap(augment.AUDIO)
            + 1)                                      # 59 frames of silence


def text(x) -> str:
  """A string feature of an example (bytes from TFDS) as ``str``."""
  return x.decode('utf-8') if isinstance(x, bytes) else str(x)


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
  strips: np.ndarray          # or the same on the device (jax.Array)
  specs: np.ndarray
  x: np.ndarray
  frame: np.ndarray
  step: np.ndarray


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
  (``SHEET_GAP`` = 77 px of paper) and, for every (piece, rendering)
  spectrogram in turn, along time (``SPEC_GAP`` = 59 frames of silence), so
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

  def piece_strip(self, k: int) -> np.ndarray:
    """The strip ``(48, W_k)`` of piece ``k``, without its gaps."""
    ends = np.r_[self.strip_offset[1:] - SHEET_GAP,
                 self.arrays.strips.shape[1] - SHEET_GAP]
    return self.arrays.strips[:, int(self.strip_offset[k]):int(ends[k])]

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


def cut(ps: PieceSet, idx) -> tuple[np.ndarray, np.ndarray]:
  """Windows of pairs ``idx`` in rendering 0 with no offsets, on the host.

  The NumPy twin of ``input_pipeline.batch_windows`` (same geometry,
  ``snippets.window_start``; same float32 dequantisation ``codes * step``),
  so the windows equal the TFDS ``pairs`` config's bit for bit.

  Returns:
    ``(sheets, specs)``: (N, 40, 100) uint8 and (N, 136, 100) float32.
  """
  idx = np.asarray(idx, np.int64).reshape(-1)
  a = ps.arrays
  cols = snippets.window_start(a.x[idx], snippets.SHEET_WIDTH)
  starts = snippets.window_start(a.frame[0, idx], snippets.SPEC_FRAMES)
  top = snippets.STRIP_MARGIN
  sheets = np.stack([a.strips[top:top + snippets.SHEET_HEIGHT,
                              c:c + snippets.SHEET_WIDTH] for c in cols]
                    ) if len(idx) else np.zeros(
                        (0, snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH),
                        np.uint8)
  specs = np.stack([a.specs[:, t:t + snippets.SPEC_FRAMES] for t in starts]
                   ) if len(idx) else np.zeros(
                       (0, snippets.SPEC_BINS, snippets.SPEC_FRAMES),
                       np.uint8)
  return sheets, specs.astype(np.float32) * a.step[0, idx][:, None, None]


# --------------------------------------------------------------------------
# Packed pieces: a split in one NumPy file
# --------------------------------------------------------------------------

PACK_DIR = 'packed'      # data_dir/packed/<split>.npz
PACK_VERSION = 1
_PACK_KEYS = ('names', 'widths', 'strips', 'frames', 'codes', 'scales',
              'counts', 'onsets', 'notehead_x', 'bars', 'split_pairs',
              'version')


def pack_path(data_dir: str, split: str) -> str:
  """Where ``save_pack`` puts a split: ``data_dir/packed/<split>.npz``."""
  return os.path.join(os.fspath(data_dir), PACK_DIR, f'{split}.npz')


def save_pack(pieces: Sequence[dict], path: str, split_pairs: int) -> int:
  """Writes pieces (primary rendering) as one LZMA-compressed ``.npz``.

  The strips and 6-bit spectrogram codes are stored side by side without
  gaps (``concat_pieces`` lays them out again on reading), with each piece's
  width, length, scale and pairs: what training, validation and the paper's
  protocol read, with NumPy alone.

  Args:
    pieces: dicts as ``concat_pieces`` takes (e.g. ``pieces`` config
      examples), in stored order.
    path: the ``.npz`` to write (atomically).
    split_pairs: pairs of the whole split, so a pack of only its first
      pieces says so when read.

  Returns:
    bytes written.
  """
  primary = [piece_renderings(p)[0] for p in pieces]
  arrays = {
      'names': np.array([text(p['piece']) for p in pieces]),
      'widths': np.array([p['strip'].shape[1] for p in pieces], np.int64),
      'strips': np.concatenate([p['strip'] for p in pieces], axis=1),
      'frames': np.array([r[1].shape[1] for r in primary], np.int64),
      'codes': np.concatenate([r[1] for r in primary], axis=1),
      'scales': np.array([r[2] for r in primary], np.float64),
      'counts': np.array([len(r[3]) for r in primary], np.int64),
      'onsets': np.concatenate([r[3] for r in primary]).astype(np.int32),
      'notehead_x': np.concatenate(
          [p['notehead_x'] for p in pieces]).astype(np.float32),
      'bars': np.concatenate([p['onset_bars'] for p in pieces]).astype(
          np.int32),
      'split_pairs': np.array(int(split_pairs)),
      'version': np.array(PACK_VERSION)}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path[:-4]}.tmp{os.getpid()}.npz'
  # An .npz whose members are LZMA-compressed (zipfile, which np.load reads
  # them with): 30 % smaller than np.savez_compressed's deflate on the
  # spectrogram codes, which decide whether the training split fits in one
  # transfer.
  with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_LZMA) as zf:
    for key, value in arrays.items():
      with zf.open(f'{key}.npy', 'w', force_zip64=True) as f:
        np.lib.format.write_array(f, np.asanyarray(value),
                                  allow_pickle=False)
  os.replace(tmp, path)
  return os.path.getsize(path)


def load_pack(path: str) -> tuple[list[dict], int]:
  """Reads ``save_pack`` output.

  Returns:
    ``(pieces, split_pairs)``: dicts ``concat_pieces`` takes (in stored
    order), and the number of pairs of the whole split.

  Raises:
    ValueError: not a pack of this version (the message names the file).
  """
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = [k for k in _PACK_KEYS if k not in z]
      if missing:
        raise ValueError(f'missing {", ".join(missing)}')
      if int(z['version']) != PACK_VERSION:
        raise ValueError(f'pack version {int(z["version"])}, this code reads '
                         f'{PACK_VERSION}')
      d = {k: z[k] for k in _PACK_KEYS}
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f'{path}: not a readable pack of pieces ({e})') from e
  bounds = lambda n: np.concatenate([[0], np.cumsum(n)])
  w, t, c = bounds(d['widths']), bounds(d['frames']), bounds(d['counts'])
  pieces = [{
      'piece': str(name), 'strip': d['strips'][:, w[i]:w[i + 1]],
      'spec_codes': d['codes'][:, t[i]:t[i + 1]],
      'spec_scale': float(d['scales'][i]),
      'onset_frames': d['onsets'][c[i]:c[i + 1]],
      'notehead_x': d['notehead_x'][c[i]:c[i + 1]],
      'onset_bars': d['bars'][c[i]:c[i + 1]]}
            for i, name in enumerate(d['names'])]
  return pieces, int(d['split_pairs'])
