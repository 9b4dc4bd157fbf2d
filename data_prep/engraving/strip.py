"""A rendered score page -> the unrolled strip with notehead x, for every
engraver.

Each engraver renders a page and says where its staves and onset noteheads
are (LilyPond: staves found on its PNG by :func:`find_staves`, noteheads
from its PDF links; Verovio: both read from its SVG).  :func:`unroll` cuts
each system out around its middle staff line, joins the systems left to
right (``SYSTEM_GAP_PX`` of paper between them; the clef and key at each
system start are kept) and box-filters the strip to
``frontends.STAFF_SPACE`` = 4 px between staff lines, the middle line
centred on row ``STRIP_HEIGHT // 2``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dccaflax import frontends
from dccaflax.snippets import PAPER, STRIP_HEIGHT

SYSTEM_GAP_PX = frontends.SYSTEM_GAP   # px of paper between joined systems


class EngraveError(RuntimeError):
  """The piece cannot be engraved: the engraver reported an error in the
  piece's own source (the message ends with its log tail), or its output
  has no usable staff or links.  A fact about the piece: the pipeline
  caches it."""


@dataclasses.dataclass(frozen=True)
class Engraving:
  """An unrolled score strip.

  ``noteheads[i]`` holds the x centres (px in ``strip``) of the noteheads
  linked to the onset token of ``melody.notes[i]``; exactly one for a
  correctly engraved note.  ``source`` is what the engraver read (LilyPond
  source, MEI).
  """
  strip: np.ndarray                           # (STRIP_HEIGHT, W) uint8
  noteheads: tuple[tuple[float, ...], ...]    # px, per melody note
  source: str                                 # the engraver's input


def find_staves(page: np.ndarray, spacing: float):
  """Five-line staves on a rendered page.

  Every staff of a clean page at a known line spacing, with its column
  extent (``frontends.staff_lines`` instead finds the one staff of a user's
  image at an unknown spacing).

  Args:
    page: ``(H, W)`` uint8 grey page, 255 = paper.
    spacing: expected staff-line distance in px.

  Returns:
    List of ``(y_middle, x0, x1)`` per staff, top to bottom: the middle
    line's centre row (float px) and the staff's column extent.
  """
  dark = page < 128
  counts = dark.sum(axis=1)
  # staff lines run the full system width; beams and ledger lines do not
  rows = np.flatnonzero(counts > max(0.7 * counts.max(), 0.2 * page.shape[1]))
  # merge adjacent rows into lines (centre rows)
  lines, run = [], []
  for r in rows:
    if run and r != run[-1] + 1:
      lines.append(float(np.mean(run)))
      run = []
    run.append(r)
  if run:
    lines.append(float(np.mean(run)))
  staves, i = [], 0
  while i + 4 < len(lines):
    gaps = np.diff(lines[i:i + 5])
    if np.all(np.abs(gaps - spacing) < 0.25 * spacing):
      mid = lines[i + 2]
      cols = np.flatnonzero(dark[int(round(mid))] | dark[int(round(lines[i + 1]))])
      staves.append((mid, int(cols.min()), int(cols.max()) + 1))
      i += 5
    else:
      i += 1
  return staves


def unroll(page: np.ndarray, staves, heads, n_notes: int,
           px_per_space: float):
  """Cut the systems out of a page and join them into one strip.

  Shared by every engraver: LilyPond finds its staves on the PNG
  (:func:`find_staves`), Verovio reads them from its SVG.

  Args:
    page: ``(H, W)`` uint8 page, ``px_per_space`` px per staff space.
    staves: ``(y_middle, x0, x1)`` per system, in reading order (px).
    heads: ``(note_index, x, y)`` per linked notehead centre (px on
      ``page``); each goes to the staff nearest its y.
    n_notes: number of melody notes.
    px_per_space: the page's staff-line distance; it is box-filtered by
      ``px_per_space / frontends.STAFF_SPACE`` (an integer) to the strip.

  Returns:
    ``(strip, noteheads)`` as in :class:`Engraving`.

  Raises:
    EngraveError: no staff, or a staff spacing the strip cannot take.
  """
  if not staves:
    raise EngraveError('no staff found on the rendered page')
  s = int(round(px_per_space / frontends.STAFF_SPACE))
  if abs(s * frontends.STAFF_SPACE - px_per_space) > 1e-6:
    raise EngraveError(f'{px_per_space} px per staff space is not a multiple '
                       f'of the strip\'s {frontends.STAFF_SPACE}')
  gap = SYSTEM_GAP_PX * s
  pieces, offsets, x = [], [], 0
  for mid, x0, x1 in staves:
    top = int(round(mid - (STRIP_HEIGHT // 2 + 0.5) * s))
    band = np.full((STRIP_HEIGHT * s, x1 - x0), PAPER, np.uint8)
    lo, hi = max(top, 0), min(top + STRIP_HEIGHT * s, page.shape[0])
    band[lo - top:hi - top] = page[lo:hi, x0:x1]
    offsets.append(x - x0)
    pieces.append(band)
    x += band.shape[1]
    pieces.append(np.full((STRIP_HEIGHT * s, gap), PAPER, np.uint8))
    x += gap
  big = np.concatenate(pieces[:-1], axis=1)
  width = -(-big.shape[1] // s)
  big = np.pad(big, ((0, 0), (0, width * s - big.shape[1])), constant_values=PAPER)
  strip = big.reshape(STRIP_HEIGHT, s, width, s).astype(np.float32).mean(axis=(1, 3))
  strip = np.clip(np.rint(strip), 0, 255).astype(np.uint8)
  out: list[list[float]] = [[] for _ in range(n_notes)]
  mids = np.array([m for m, _, _ in staves])
  for i, hx, hy in heads:
    k = int(np.argmin(np.abs(mids - hy)))
    out[i].append((hx + offsets[k]) / s - 0.5)
  return strip, tuple(tuple(sorted(h)) for h in out)
