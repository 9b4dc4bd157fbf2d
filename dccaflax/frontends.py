"""Query front ends: an audio span or a sheet image -> what the towers take.

Audio goes through the training front end: ``audio.load_audio`` (any file
librosa reads, any sample rate, mono or stereo -> mono 22,050 Hz) ->
``audio.spectrogram`` -> one ``(136, 100)`` excerpt (3.2 s).

Rules for an audio query (``audio_query``):

* The span ``[start, start + duration)`` (default: the whole file) is read;
  audio outside it is not used.
* The excerpt is the 100 frames centred on the span's middle frame
  (``snippets.spec_excerpt``).  A span longer than 3.2 s contributes only its
  central 3.2 s.  A span (or recording) shorter than 3.2 s is padded with
  silence on both sides, exactly as training pads excerpts at piece edges; a
  note says so (``padding_note``).
* A span whose peak is below ``SILENT_PEAK`` (-80 dBFS) is refused as silent.

Rules for a sheet image (``sheet_from_image``):

* The image is made grey (alpha over white paper), 255 = paper.
* A ``(40, 100)`` image is used as is (a snippet as the data have them).
* Otherwise the staff is located (``staff_lines``): rows whose darkness
  (mean of 255 - pixel) is at least half of the darkest row's are staff-line
  candidates, adjacent candidate rows are merged into lines (centre: the
  mean of a line's rows at least 80 % as dark as its darkest), and five
  lines with about equal spacing must be found.  The image is scaled (aspect
  kept) so the median line spacing becomes ``STAFF_SPACE`` = 4 px (the
  engraving of the data, ``data_prep.engraving``), and the 40 x 100 window is
  cut with the middle staff line on row 20 (as in the data) and centred
  horizontally on the image (or on ``x_frac`` of its width), white paper
  beyond the image.
* Without five detectable lines the whole image is scaled to 40 px height
  and cut as above; a note says so.  Best results: a crop of one staff, a
  few bars wide.

Rules for a page (``page_snippets``; an image with more than one staff,
``is_page``): every staff is found at the page's own spacing, the page is
scaled to 4 px between staff lines, the systems are joined into one strip in
reading order as the data's strips are, and a snippet is cut every
``PAGE_STEP`` = 20 px of it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from dccaflax import audio as audio_lib
from dccaflax import snippets

SILENT_PEAK = 1e-4        # -80 dBFS: a span this quiet is refused
STAFF_SPACE = 4           # px between staff lines in the data's strips
STAFF_MIDDLE_ROW = 20     # row of the middle staff line in a 40-px snippet
SYSTEM_GAP = 8            # px of paper between the systems joined in a strip
PAGE_STEP = 20            # px of strip between a page's snippets
EXCERPT_S = snippets.SPEC_FRAMES / snippets.FPS   # 3.2 s


class QueryError(ValueError):
  """A query that cannot be answered; the message says why."""


# --------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AudioQuery:
  """An audio excerpt ready to embed.

  Attributes:
    excerpt: ``(136, 100)`` float32 log spectrogram excerpt.
    path: the file.
    start_s: span start (s) in the file.
    span_s: span length actually read (s).
    centre_s: time of the excerpt's centre frame in the file (s).
    notes: remarks for the user (padding, cropping).
  """
  excerpt: np.ndarray
  path: str
  start_s: float
  span_s: float
  centre_s: float
  notes: tuple[str, ...] = ()


def read_span(path: str | os.PathLike, start: float = 0.0,
              duration: Optional[float] = None) -> np.ndarray:
  """Mono 22,050 Hz samples of a span of a file, refusing silence.

  Raises:
    audio.AudioError: missing / unreadable file, start past the end.
    QueryError: negative start or duration, or a silent span.
  """
  if start < 0:
    raise QueryError(f'start must be >= 0 s, got {start}')
  if duration is not None and duration <= 0:
    raise QueryError(f'duration must be > 0 s, got {duration}')
  samples = audio_lib.load_audio(path, offset=start, duration=duration)
  peak = float(np.max(np.abs(samples)))
  if not np.isfinite(peak):
    raise QueryError(f'{path}: the recording contains NaN or inf samples')
  if peak < SILENT_PEAK:
    what = 'the recording' if not start and duration is None else (
        f'the span {start:g}-{start + len(samples) / snippets.SAMPLE_RATE:g} s'
        ' of the recording')
    level = 20 * np.log10(max(peak, 1e-12))
    raise QueryError(f'{path}: {what} is silent (peak {level:.0f} dBFS, '
                     f'below {20 * np.log10(SILENT_PEAK):.0f} dBFS)')
  return samples


def padding_note(n_frames: int, span_s: float, what: str = 'recording',
                 unit: str = 'excerpt') -> Optional[str]:
  """The note for audio shorter than one excerpt, or None if it is not.

  Args:
    n_frames: spectrogram frames of the audio.
    span_s: its length in seconds.
    what: what the user gave ('recording', 'span').
    unit: what the excerpt is called where it is used ('excerpt', 'window').
  """
  if n_frames >= snippets.SPEC_FRAMES:
    return None
  pad = (EXCERPT_S - span_s) / 2
  return (f'the {what} is {span_s:.2f} s, shorter than one {unit} '
          f'({EXCERPT_S:.2f} s): padded with about {pad:.2f} s of silence on '
          'each side, as training pads excerpts at piece edges')


def audio_query(path: str | os.PathLike, start: float = 0.0,
                duration: Optional[float] = None) -> AudioQuery:
  """The one excerpt of a recording that queries the sheet snippets.

  Args:
    path: any file librosa reads.
    start: span start in seconds.
    duration: span length in seconds (None: to the end).

  Returns:
    ``AudioQuery`` (see the module doc for the rules).

  Raises:
    audio.AudioError, QueryError: see ``read_span``.
  """
  samples = read_span(path, start, duration)
  spec = audio_lib.spectrogram(samples)
  n = spec.shape[1]
  centre = n // 2
  span = len(samples) / snippets.SAMPLE_RATE
  notes = []
  short = padding_note(n, span, 'span' if start or duration else 'recording')
  if short:
    notes.append(short)
  elif n > snippets.SPEC_FRAMES + 1:
    c = start + centre / snippets.FPS
    notes.append(f'using the central {EXCERPT_S:.2f} s of the {span:.2f} s '
                 f'span ({c - EXCERPT_S / 2:.2f}-{c + EXCERPT_S / 2:.2f} s)')
  return AudioQuery(excerpt=snippets.spec_excerpt(spec, centre),
                    path=os.fspath(path), start_s=float(start),
                    span_s=span, centre_s=start + centre / snippets.FPS,
                    notes=tuple(notes))


# --------------------------------------------------------------------------
# Sheet images
# --------------------------------------------------------------------------


def _grey(path: str | os.PathLike) -> np.ndarray:
  """(H, W) float32 grey, 255 = paper; QueryError if unreadable."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise QueryError(f'{path}: no such image file')
  try:
    with Image.open(path) as im:
      im.load()
      rgba = np.asarray(im.convert('RGBA'), np.float32)
  except Exception as e:  # PIL raises several types
    raise QueryError(f'{path}: cannot read image ({type(e).__name__}: {e})'
                     ) from e
  alpha = rgba[..., 3:] / 255.0
  rgb = rgba[..., :3] * alpha + 255.0 * (1 - alpha)
  return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def staff_lines(grey: np.ndarray) -> Optional[np.ndarray]:
  """Rows (float, top to bottom) of the five lines of one staff, or None.

  Scale-free: the image may have any staff spacing (at least 2 px); of the
  candidate five-line groups with about equal gaps, the widest is taken.

  Args:
    grey: (H, W) float, 255 = paper.
  """
  dark = np.mean(255.0 - grey, axis=1)
  if dark.max() <= 0:
    return None
  rows = np.flatnonzero(dark >= 0.5 * dark.max())
  groups = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
  # A line's centre: the mean of its darkest rows (noteheads and beams
  # touching a line would pull a weighted mean off it).
  centres = np.array([np.mean(g[dark[g] >= 0.8 * dark[g].max()])
                      for g in groups])
  best = None
  for i in range(len(centres) - 4):
    five = centres[i:i + 5]
    gaps = np.diff(five)
    if gaps.min() >= 2 and gaps.max() <= 1.25 * gaps.min():
      if best is None or gaps.mean() > np.diff(best).mean():
        best = five
  return best


def _resize(grey: np.ndarray, height: int, width: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  im = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
  return np.asarray(im.resize((max(width, 1), max(height, 1)),
                              Image.Resampling.LANCZOS
                              if height >= grey.shape[0] else
                              Image.Resampling.BOX), np.float32)


def page_staves(grey: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
  """Every five-line staff of a page, top to bottom, at any spacing.

  Rows dark over at least half as many columns as the most are line
  candidates (text, titles and beams are not that long); adjacent ones merge
  into lines (centre: the mean of the run); runs of five lines with about
  equal gaps (within 25 %, at least 2 px) are staves, taken greedily from
  the top.  A staff's column extent: where its middle or second line is
  dark.

  Args:
    grey: ``(H, W)`` float, 255 = paper.

  Returns:
    ``(lines (5,) float rows, x0, x1)`` per staff.
  """
  dark = grey < 128
  counts = dark.sum(axis=1)
  if counts.max() == 0:
    return []
  rows = np.flatnonzero(counts >= 0.5 * counts.max())
  runs = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
  lines = np.array([r.mean() for r in runs])
  out, i = [], 0
  while i + 4 < len(lines):
    five = lines[i:i + 5]
    gaps = np.diff(five)
    if gaps.min() >= 2 and gaps.max() <= 1.25 * gaps.min():
      cols = np.flatnonzero(dark[int(round(five[2]))] |
                            dark[int(round(five[1]))])
      out.append((five, int(cols.min()), int(cols.max()) + 1))
      i += 5
    else:
      i += 1
  return out


@dataclasses.dataclass(frozen=True)
class PageSnippets:
  """A page of score cut into snippets along its systems, in reading order.

  Attributes:
    sheets: ``(N, 40, 100)`` uint8 snippets, every ``step`` px of the strip.
    strip: ``(48, W)`` uint8, the page's systems joined left to right as the
      data's strips are (``SYSTEM_GAP`` px of paper between them), scaled to
      ``STAFF_SPACE`` px between staff lines.
    strip_x: ``(N,)`` float32 each snippet's centre in ``strip``.
    system: ``(N,)`` int32 each snippet's system (0 = the top one).
    page_xy: ``(N, 2)`` float32 each snippet's centre on the page (x, and y
      of its system's middle line), px of the image.
    scale: strip px per page px.
    path: the image.
    notes: remarks for the user.
  """
  sheets: np.ndarray
  strip: np.ndarray
  strip_x: np.ndarray
  system: np.ndarray
  page_xy: np.ndarray
  scale: float
  path: str
  notes: tuple[str, ...] = ()

  def __len__(self) -> int:
    return int(self.sheets.shape[0])


def is_page(path: str | os.PathLike) -> bool:
  """Whether an image holds more than one staff (a page, not a snippet).

  Raises:
    QueryError: unreadable.
  """
  return len(page_staves(_grey(path))) > 1


def page_snippets(path: str | os.PathLike, step: int = PAGE_STEP
                  ) -> PageSnippets:
  """A page (several systems, title, text) as snippets along its systems.

  The staves are found at whatever spacing the page has (``page_staves``),
  the page is scaled so that their median line spacing becomes
  ``STAFF_SPACE``, each staff's band of ``STRIP_HEIGHT`` rows around its
  middle line is cut from its column extent, and the bands are joined into
  one strip in reading order (top to bottom; one column of systems), as the
  data's strips are.  Snippets are cut every ``step`` px of that strip
  (``snippets.sheet_snippet``), from ``step / 2``.

  Raises:
    QueryError: unreadable, blank, no five-line staff, or ``step`` < 1.
  """
  if step < 1:
    raise QueryError(f'step must be >= 1 px, got {step}')
  grey = _grey(path)
  if np.min(grey) > 200:
    raise QueryError(f'{path}: the page is blank (no ink)')
  staves = page_staves(grey)
  if not staves:
    raise QueryError(f'{path}: no five-line staff found on the page')
  spacing = float(np.median([np.diff(l).mean() for l, _, _ in staves]))
  scale = STAFF_SPACE / spacing
  half = snippets.STRIP_HEIGHT / 2 / scale      # page rows each side
  bands, offsets, mids, x = [], [], [], 0
  for lines, x0, x1 in staves:
    top, bottom = lines[2] - half, lines[2] + half
    r0, r1 = int(np.floor(top)), int(np.ceil(bottom))
    band = np.full((r1 - r0, x1 - x0), float(snippets.PAPER), np.float32)
    lo, hi = max(r0, 0), min(r1, grey.shape[0])
    band[lo - r0:hi - r0] = grey[lo:hi, x0:x1]
    width = max(1, int(round((x1 - x0) * scale)))
    # resample so that the middle line lands on row STRIP_HEIGHT // 2
    height = int(round((r1 - r0) * scale))
    scaled = _resize(band, height, width)
    shift = int(round((lines[2] - r0) * scale)) - snippets.STRIP_HEIGHT // 2
    out = np.full((snippets.STRIP_HEIGHT, width), float(snippets.PAPER),
                  np.float32)
    s0, s1 = max(shift, 0), min(shift + snippets.STRIP_HEIGHT, height)
    out[s0 - shift:s1 - shift] = scaled[s0:s1]
    bands.append(out)
    offsets.append((x, x0))
    mids.append(lines[2])
    x += width
    bands.append(np.full((snippets.STRIP_HEIGHT, SYSTEM_GAP),
                         float(snippets.PAPER), np.float32))
    x += SYSTEM_GAP
  strip = np.clip(np.rint(np.concatenate(bands[:-1], axis=1)), 0,
                  255).astype(np.uint8)
  centres = np.arange(step / 2, strip.shape[1], step, dtype=np.float32)
  starts = np.array([o for o, _ in offsets], np.float32)
  system = (np.searchsorted(starts, centres, side='right') - 1).astype(
      np.int32)
  page_x = np.array([offsets[k][1] + (c - offsets[k][0]) / scale
                     for c, k in zip(centres, system)], np.float32)
  page_y = np.array([mids[k] for k in system], np.float32)
  sheets = np.stack([snippets.sheet_snippet(strip, c) for c in centres])
  notes = (f'{grey.shape[1]}x{grey.shape[0]} px page: {len(staves)} '
           f'staves, {spacing:.1f} px between staff lines, scaled by '
           f'{scale:.3f}; {len(centres)} snippets every {step} px',)
  return PageSnippets(sheets=sheets, strip=strip, strip_x=centres,
                      system=system, page_xy=np.stack([page_x, page_y], 1),
                      scale=scale, path=os.fspath(path), notes=notes)


def sheet_from_image(path: str | os.PathLike, x_frac: float = 0.5
                     ) -> tuple[np.ndarray, tuple[str, ...]]:
  """A (40, 100) uint8 sheet snippet from an image (rules: module doc).

  Args:
    path: PNG (or anything PIL reads).
    x_frac: horizontal centre of the snippet as a fraction of the width.

  Returns:
    ``(snippet, notes)``.

  Raises:
    QueryError: unreadable, or an empty (all paper) image.
  """
  grey = _grey(path)
  h, w = grey.shape
  if (h, w) == (snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH):
    out = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
  else:
    if np.min(grey) > 200:
      raise QueryError(f'{path}: the image is blank (no ink)')
    notes = []
    lines = staff_lines(grey)
    if lines is not None:
      scale = STAFF_SPACE / float(np.median(np.diff(lines)))
      middle = lines[2] * scale
    else:
      scale = snippets.SHEET_HEIGHT / h
      middle = snippets.SHEET_HEIGHT / 2
      notes.append('no five staff lines found: scaled the whole image to '
                   f'{snippets.SHEET_HEIGHT} px height')
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = _resize(grey, sh, sw)
    top = int(round(middle)) - STAFF_MIDDLE_ROW
    left = int(round(x_frac * sw)) - snippets.SHEET_WIDTH // 2
    out = np.full((snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH), 255.0,
                  np.float32)
    r0, r1 = max(top, 0), min(top + snippets.SHEET_HEIGHT, sh)
    c0, c1 = max(left, 0), min(left + snippets.SHEET_WIDTH, sw)
    if r1 > r0 and c1 > c0:
      out[r0 - top:r1 - top, c0 - left:c1 - left] = scaled[r0:r1, c0:c1]
    notes.insert(0, f'{w}x{h} px image scaled by {scale:.3f} to {sw}x{sh} '
                 'px, cut 100x40 px around its staff')
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), tuple(notes)
  return out, ()
