"""Queries: a recording or a sheet image against an index, and Figure 3.

Audio queries go through the training front end: ``audio.load_audio`` (any
file librosa reads, any sample rate, mono or stereo -> mono 22,050 Hz) ->
``audio.spectrogram`` -> one ``(136, 100)`` excerpt (3.2 s).

Rules for an audio query (``audio_query``):

* The span ``[start, start + duration)`` (default: the whole file) is read;
  audio outside it is not used.
* The excerpt is the 100 frames centred on the span's middle frame
  (``snippets.spec_excerpt``).  A span longer than 3.2 s contributes only its
  central 3.2 s.  A span (or recording) shorter than 3.2 s is padded with
  silence on both sides, exactly as training pads excerpts at piece edges; a
  note says so.
* A span whose peak is below ``SILENT_PEAK`` (-80 dBFS) is refused as silent.

Rules for a sheet image (``sheet_from_image``):

* The image is made grey (alpha over white paper), 255 = paper.
* A ``(40, 100)`` image is used as is (a snippet as the data have them).
* Otherwise the staff is located: rows whose darkness (mean of 255 - pixel)
  is at least half of the darkest row's are staff-line candidates, adjacent
  candidate rows are merged into lines (centre: the mean of a line's rows
  at least 80 % as dark as its darkest), and five lines with about equal
  spacing must be found.  The image is scaled (aspect kept) so the median line
  spacing becomes ``STAFF_SPACE`` = 4 px (the engraving of the data), and
  the 40 x 100 window is cut with the middle staff line on row 20 (as in
  the data) and centred horizontally on the image (or on ``x_frac`` of its
  width), white paper beyond the image.
* Without five detectable lines the whole image is scaled to 40 px height
  and cut as above; a note says so.  Best results: a crop of one staff, a
  few bars wide.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from dccaflax import audio as audio_lib
from dccaflax import snippets

SILENT_PEAK = 1e-4        # -80 dBFS: a span this quiet is refused
STAFF_SPACE = 4.0         # px between staff lines in the data's strips
STAFF_MIDDLE_ROW = 20     # row of the middle staff line in a 40-px snippet


class QueryError(ValueError):
  """A query that cannot be answered; the message says why."""


# --------------------------------------------------------------------------
# Audio queries
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
  excerpt_s = snippets.SPEC_FRAMES / snippets.FPS
  notes = []
  if n < snippets.SPEC_FRAMES:
    pad = (excerpt_s - span) / 2
    notes.append(f'the {"span" if start or duration else "recording"} is '
                 f'{span:.2f} s, shorter than one excerpt ({excerpt_s:.2f} s):'
                 f' padded with about {pad:.2f} s of silence on each side, as '
                 'training pads excerpts at piece edges')
  elif n > snippets.SPEC_FRAMES + 1:
    c = start + centre / snippets.FPS
    notes.append(f'using the central {excerpt_s:.2f} s of the {span:.2f} s '
                 f'span ({c - excerpt_s / 2:.2f}-{c + excerpt_s / 2:.2f} s)')
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
  """Rows (float, top to bottom) of the five staff lines, or None.

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


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Result:
  """One ranked candidate of the index."""
  rank: int          # 1-based
  row: int           # index row
  score: float       # cosine similarity
  piece: str
  bar: int
  onset: int         # 0-based onset (note) number within the piece
  time_s: float      # onset time at the indexed tempo


@dataclasses.dataclass(frozen=True)
class Ranking:
  """Top-k results of a query and, when known, where the truth landed."""
  direction: str                 # 'audio->sheet' or 'sheet->audio'
  results: tuple[Result, ...]
  n_candidates: int
  true_row: Optional[int] = None
  true_rank: Optional[int] = None


def onset_number(index, row: int) -> int:
  """0-based number of an index row's onset within its piece."""
  rows = index.rows_of(str(index.piece[row]))
  return int(np.searchsorted(rows, row))


def true_rank(similarities: np.ndarray, true_row: int) -> int:
  """1-based rank of ``true_row``; ties count against it (as ``retrieval``)."""
  return int(np.sum(similarities >= similarities[true_row]))


def rank(index, query_emb: np.ndarray, direction: str, k: int = 10,
         true_row: Optional[int] = None) -> Ranking:
  """Ranks the index's other modality for one query embedding.

  Args:
    index: ``dccaflax.index.Index``.
    query_emb: ``(d,)`` or ``(1, d)`` unit-norm embedding.
    direction: 'audio->sheet' (an ``embed_audio`` query against the sheet
      embeddings) or 'sheet->audio'.
    k: results.
    true_row: the row of the correct answer, if known.

  Returns:
    ``Ranking``.
  """
  if direction not in ('audio->sheet', 'sheet->audio'):
    raise ValueError(f'unknown direction {direction!r}')
  if k < 1:
    raise QueryError(f'--top must be >= 1, got {k}')
  q = np.asarray(query_emb, np.float32).reshape(1, -1)
  cands = index.sheet_emb if direction == 'audio->sheet' else index.audio_emb
  scores, rows = (index.search_sheets if direction == 'audio->sheet'
                  else index.search_audio)(q, k)
  results = []
  for r, (s, row) in enumerate(zip(scores[0], rows[0]), 1):
    row = int(row)
    results.append(Result(rank=r, row=row, score=float(s),
                          piece=str(index.piece[row]),
                          bar=int(index.bar[row]),
                          onset=onset_number(index, row),
                          time_s=float(index.time_s(row))))
  t_rank = None
  if true_row is not None:
    t_rank = true_rank(cands @ q[0], int(true_row))
  return Ranking(direction=direction, results=tuple(results),
                 n_candidates=len(index), true_row=true_row, true_rank=t_rank)


def indexed_row(index, piece: str, notehead: int) -> int:
  """The row of the ``notehead``-th (0-based) onset of ``piece``.

  Raises:
    QueryError: unknown piece (with close names) or notehead out of range.
  """
  try:
    rows = index.rows_of(piece)
  except KeyError as e:
    raise QueryError(e.args[0]) from e
  if not 0 <= notehead < len(rows):
    raise QueryError(f'piece {piece!r} has {len(rows)} noteheads (onsets); '
                     f'--notehead must be in [0, {len(rows) - 1}], got '
                     f'{notehead}')
  return int(rows[notehead])


def row_at_time(index, piece: str, time_s: float) -> int:
  """The row of the onset of ``piece`` nearest to ``time_s`` (indexed tempo).

  Raises:
    QueryError: unknown piece.
  """
  try:
    rows = index.rows_of(piece)
  except KeyError as e:
    raise QueryError(e.args[0]) from e
  return int(rows[np.argmin(np.abs(index.time_s(rows) - time_s))])


def format_ranking(ranking: Ranking, index) -> str:
  """The ranked list as a text table (one line per result)."""
  what = ('sheet snippets' if ranking.direction == 'audio->sheet'
          else 'audio excerpts')
  lines = [f'{ranking.direction}: top {len(ranking.results)} of '
           f'{ranking.n_candidates:,} {what} ({index.split} split)']
  lines.append(f'{"rank":>4}  {"score":>6}  {"piece":<32} {"bar":>4} '
               f'{"onset":>5} {"time_s":>7}')
  for r in ranking.results:
    mark = '  <- true' if r.row == ranking.true_row else ''
    lines.append(f'{r.rank:>4}  {r.score:6.3f}  {r.piece:<32} {r.bar:>4} '
                 f'{r.onset:>5} {r.time_s:7.2f}{mark}')
  if ranking.true_row is not None:
    t = ranking.true_row
    lines.append(f'true: {index.piece[t]} bar {index.bar[t]} onset '
                 f'{onset_number(index, t)} at {index.time_s(t):.2f} s, '
                 f'rank {ranking.true_rank} of {ranking.n_candidates:,}')
  return '\n'.join(lines)


# --------------------------------------------------------------------------
# Figure 3
# --------------------------------------------------------------------------


def figure(ranking: Ranking, query: np.ndarray, candidates: np.ndarray,
           out: str, title: str = '', ncols: int = 5) -> str:
  """Draws a query above its ranked results, like the paper's Figure 3.

  Args:
    ranking: from ``rank``.
    query: ``(136, 100)`` spectrogram excerpt (audio->sheet) or ``(40, 100)``
      sheet snippet (sheet->audio).
    candidates: the results' snippets (audio->sheet: ``(R, 40, 100)``) or
      excerpts (sheet->audio: ``(R, 136, 100)``), in rank order.
    out: PNG path.
    title: figure title.
    ncols: results per row.

  The number above the query is the rank of the correct result (when known);
  the numbers above the results are their ranks (1 = best), the correct one
  framed in green.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  res = ranking.results
  ncols = max(1, min(ncols, len(res)))
  nrows = -(-len(res) // ncols)
  a2s = ranking.direction == 'audio->sheet'
  cell_h = 1.2 if a2s else 2.0
  fig = plt.figure(figsize=(2.4 * ncols, 2.6 + cell_h * nrows))
  gs = fig.add_gridspec(1 + nrows, ncols,
                        height_ratios=[2.2 if a2s else 1.3] + [cell_h] * nrows,
                        hspace=0.55, wspace=0.08)
  ax = fig.add_subplot(gs[0, max(0, ncols // 2 - 1):ncols // 2 + 1 + (
      ncols > 2)])
  if a2s:
    ax.imshow(query, origin='lower', aspect='auto', cmap='magma')
  else:
    ax.imshow(query, cmap='gray', vmin=0, vmax=255)
  head = 'query: ' + ('audio excerpt (3.2 s)' if a2s else 'sheet snippet')
  if ranking.true_rank is not None:
    head = f'{ranking.true_rank}\n' + head + (
        f' - correct result at rank {ranking.true_rank} of '
        f'{ranking.n_candidates:,}')
  ax.set_title(head, fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  for i, r in enumerate(res):
    a = fig.add_subplot(gs[1 + i // ncols, i % ncols])
    if a2s:
      a.imshow(candidates[i], cmap='gray', vmin=0, vmax=255)
    else:
      a.imshow(candidates[i], origin='lower', aspect='auto', cmap='magma')
    true = r.row == ranking.true_row
    a.set_title(f'{r.rank}' + (' (correct)' if true else '')
                + f'\n{r.piece[:30]}\nbar {r.bar}, {r.score:.2f}', fontsize=6.5,
                color='green' if true else 'black')
    a.set_xticks([])
    a.set_yticks([])
    for spine in a.spines.values():
      spine.set_color('green' if true else '0.6')
      spine.set_linewidth(3 if true else 0.8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.savefig(out, dpi=110, bbox_inches='tight')
  plt.close(fig)
  return out


def embed_queries(model, specs: Optional[Sequence[np.ndarray]] = None,
                  sheets: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
  """Embeds excerpts (audio) or snippets (sheet) with the public API."""
  import dccaflax  # pylint: disable=g-import-not-at-top
  if specs is not None:
    return dccaflax.embed_audio(model, np.stack(specs))
  return dccaflax.embed_sheet(model, np.stack(sheets))


def load_model_and_index(workdir: str, index_path: str, which: str = 'best'):
  """``(model, index)``, the index checked against the model.

  Raises:
    QueryError: no model in ``workdir``, a bad index file, or an index built
      by another model (fingerprint mismatch).
  """
  import dccaflax  # pylint: disable=g-import-not-at-top
  from dccaflax import index as index_lib  # pylint: disable=g-import-not-at-top
  try:
    idx = index_lib.load(index_path)
  except index_lib.IndexFileError as e:
    raise QueryError(str(e)) from e
  try:
    model = dccaflax.load(workdir, which)
  except (FileNotFoundError, ValueError) as e:
    raise QueryError(f'cannot load a model from {workdir}: {e}') from e
  try:
    idx.check_model(model)
  except index_lib.ModelMismatchError as e:
    raise QueryError(f'{index_path}: {e}') from e
  return model, idx


def retrieve(workdir: str, index_path: str, *, audio_path: str | None = None,
             start: float = 0.0, duration: float | None = None,
             sheet: str | None = None, sheet_x: float = 0.5,
             piece: str | None = None, notehead: int | None = None,
             modality: str = 'sheet', top: int = 10,
             figure_path: str | None = None, data_dir: str | None = None,
             which: str = 'best', echo=print) -> Ranking:
  """``experiments.retrieve`` as a function (see that module for the flags).

  Exactly one query: ``audio_path``, ``sheet``, or ``piece`` + ``notehead``.

  Returns:
    the ``Ranking``; prints the table (and notes) through ``echo``.

  Raises:
    QueryError, audio.AudioError: with a message for the user.
  """
  from dccaflax import index as index_lib  # pylint: disable=g-import-not-at-top
  modes = [m for m, v in (('--audio', audio_path), ('--sheet', sheet)) if v]
  if len(modes) > 1:
    raise QueryError('give one query: --audio or --sheet, not both')
  if not modes and (piece is None or notehead is None):
    raise QueryError('nothing to query: give --audio FILE, --sheet PNG, or '
                     '--piece NAME --notehead N')
  if sheet and (piece or notehead is not None):
    raise QueryError('--piece/--notehead do not combine with --sheet')
  if notehead is not None and piece is None:
    raise QueryError('--notehead needs --piece')
  if top < 1:
    raise QueryError(f'--top must be >= 1, got {top}')
  if audio_path:   # read (and refuse) the audio before loading anything big
    q = audio_query(audio_path, start, duration)
  elif sheet:
    snippet, sheet_notes = sheet_from_image(sheet, sheet_x)
  model, idx = load_model_and_index(workdir, index_path, which)
  top = min(top, len(idx))
  if audio_path:
    for note in q.notes:
      echo(f'note: {note}')
    true_row = None
    if piece is not None:
      true_row = (indexed_row(idx, piece, notehead) if notehead is not None
                  else row_at_time(idx, piece, q.centre_s))
    emb = embed_queries(model, specs=[q.excerpt])
    ranking = rank(idx, emb, 'audio->sheet', top, true_row)
    query_img = q.excerpt
    title = (f'{q.path} @ {q.centre_s:.2f} s')
  elif sheet:
    for note in sheet_notes:
      echo(f'note: {note}')
    emb = embed_queries(model, sheets=[snippet])
    ranking = rank(idx, emb, 'sheet->audio', top)
    query_img, title = snippet, sheet
  else:
    row = indexed_row(idx, piece, notehead)
    direction = 'sheet->audio' if modality == 'sheet' else 'audio->sheet'
    emb = (idx.sheet_emb if modality == 'sheet' else idx.audio_emb)[row]
    ranking = rank(idx, emb, direction, top, row)
    query_img = None
    title = (f'{piece}, onset {notehead} (bar {idx.bar[row]}), indexed '
             f'{modality}')
  echo(format_ranking(ranking, idx))
  if figure_path:
    rows = [r.row for r in ranking.results]
    try:
      data = index_lib.read_rows(
          idx, rows + ([ranking.true_row] if query_img is None else []),
          data_dir)
    except (FileNotFoundError, ValueError) as e:
      raise QueryError(f'cannot draw the figure: {e} (pass --data_dir where '
                       'the prepared data are now)') from e
    key = 'sheet' if ranking.direction == 'audio->sheet' else 'spec'
    if query_img is None:
      query_img = data['spec' if key == 'sheet' else 'sheet'][-1]
    figure(ranking, query_img, data[key][:len(rows)], figure_path, title)
    echo(f'wrote {figure_path}')
  return ranking
