"""Snippet geometry: window sizes, centring and padding.

One home for how a (sheet snippet, spectrogram excerpt) pair is cut out of an
unrolled score strip and a full spectrogram.  The TFDS ``pairs`` config (NumPy,
here) and the on-device window cutting (JAX, ``input_pipeline``) both follow
these rules, so they give identical windows for the same pair.

Conventions
-----------
* Strip: ``(STRIP_HEIGHT, W)`` uint8, 255 = white paper, staff centred
  vertically, about 4 px between staff lines.  The sheet snippet is the central
  ``SHEET_HEIGHT`` rows; a vertical shift of up to ``STRIP_MARGIN`` px is
  available for augmentation.
* Spectrogram: ``(SPEC_BINS, T)`` float32, log(1 + filterbank magnitude).
* A window of width ``w`` centred on integer position ``c`` covers
  ``[c - w // 2, c - w // 2 + w)``.  A notehead x is rounded to the nearest
  pixel first.  Outside the source: white paper (255) for sheets, silence (0)
  for spectrograms.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 22050          # Hz
FPS = 31.25                  # spectrogram frames per second
SPEC_BINS = 136              # log-frequency bins
SPEC_FRAMES = 100            # frames per excerpt (3.2 s)
SHEET_HEIGHT = 40            # px
SHEET_WIDTH = 100            # px
STRIP_MARGIN = 4             # px above and below the 40-px band
STRIP_HEIGHT = SHEET_HEIGHT + 2 * STRIP_MARGIN  # 48 px
PAPER = 255                  # uint8 value of empty paper
SILENCE = 0.0                # log(1 + 0)


def window_start(centre, width: int):
  """First index of a ``width`` window centred on ``centre`` (int or array)."""
  return np.asarray(centre).astype(np.int64) - width // 2


def _crop_1d(a: np.ndarray, start: int, width: int, fill) -> np.ndarray:
  """Columns ``[start, start + width)`` of a 2-D array, padded with ``fill``."""
  out = np.full((a.shape[0], width), fill, dtype=a.dtype)
  lo, hi = max(start, 0), min(start + width, a.shape[1])
  if hi > lo:
    out[:, lo - start:hi - start] = a[:, lo:hi]
  return out


def sheet_snippet(strip: np.ndarray, notehead_x: float,
                  dy: int = 0, margin: int = 0) -> np.ndarray:
  """Sheet snippet centred on a notehead.

  Args:
    strip: ``(STRIP_HEIGHT, W)`` uint8 unrolled score.
    notehead_x: notehead centre in px (rounded to the nearest pixel).
    dy: vertical shift in px, ``|dy| <= STRIP_MARGIN`` (augmentation).
    margin: px more each side (a window to rescale, ``sheet_augment``).

  Returns:
    ``(SHEET_HEIGHT, SHEET_WIDTH + 2 * margin)`` uint8, white paper beyond
    the strip ends.
  """
  if strip.ndim != 2 or strip.shape[0] != STRIP_HEIGHT:
    raise ValueError(f'strip must be ({STRIP_HEIGHT}, W), got {strip.shape}')
  if abs(dy) > STRIP_MARGIN:
    raise ValueError(f'|dy| must be <= {STRIP_MARGIN}, got {dy}')
  top = STRIP_MARGIN + dy
  band = strip[top:top + SHEET_HEIGHT]
  start = int(window_start(round_half_up(notehead_x), SHEET_WIDTH)) - margin
  return _crop_1d(band, start, SHEET_WIDTH + 2 * margin, np.uint8(PAPER))


def spec_excerpt(spec: np.ndarray, onset_frame: int) -> np.ndarray:
  """Spectrogram excerpt centred on an onset frame.

  Args:
    spec: ``(SPEC_BINS, T)`` float32 log spectrogram.
    onset_frame: frame index of the onset.

  Returns:
    ``(SPEC_BINS, SPEC_FRAMES)`` float32, silence (0) beyond the ends.
  """
  if spec.ndim != 2 or spec.shape[0] != SPEC_BINS:
    raise ValueError(f'spec must be ({SPEC_BINS}, T), got {spec.shape}')
  start = int(window_start(onset_frame, SPEC_FRAMES))
  return _crop_1d(spec.astype(np.float32, copy=False), start, SPEC_FRAMES,
                  np.float32(SILENCE))


def round_half_up(x):
  """Rounds px positions the same way in NumPy and JAX (floor(x + 0.5))."""
  return np.floor(np.asarray(x, np.float64) + 0.5).astype(np.int64)
