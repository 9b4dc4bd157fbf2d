"""The query commands as functions: ``retrieve`` and ``identify_file``
(and ``draw_figure``, the Figure-3 picture of a ranking).

``experiments.retrieve`` and ``experiments.identify`` parse their flags and
call these; tests and notebooks call them directly (this module defines no
flags, so it can be imported next to any entry point).  They load the model
with its index (``load_model_and_index``), print through ``echo`` and raise
``frontends.QueryError`` or ``audio.AudioError`` with a message for the
user: the checks of these functions name the flags, and the library names
the values it refuses as its arguments are named, which the entry points
turn into flag names (``as_flags``) where they report the error.
"""

from __future__ import annotations

import contextlib
import re

from dccaflax import api
from dccaflax import audio
from dccaflax import frontends
from dccaflax import identify
from dccaflax import index as index_lib
from dccaflax import page_index
from dccaflax import presentation
from dccaflax import ranking as ranking_lib
from dccaflax import snippets

QueryError = frontends.QueryError   # what the commands raise, besides
                                    # audio.AudioError


@contextlib.contextmanager
def as_flags(*names: str):
  """Re-raises ``QueryError``s about a value ``x`` as about the flag ``--x``.

  The library names the values it refuses as its arguments are named
  ('notehead must be in [0, 41], got 50'); an entry point reports them as
  the flags that set them ('--notehead must be ...').

  Args:
    *names: the values (and flags) to rename.
  """
  try:
    yield
  except QueryError as e:
    text = str(e)
    for name in names:
      text = re.sub(rf'(?<![-\w]){name} must\b', f'--{name} must', text)
    raise QueryError(text) from e


def load_model_and_index(workdir: str, index_path: str, which: str = 'best'):
  """``(model, index)``, the index checked against the model.

  Raises:
    QueryError: no model in ``workdir``, a bad index file, or an index built
      by another model (fingerprint mismatch).
  """
  try:
    idx = index_lib.load(index_path)
  except index_lib.IndexFileError as e:
    raise QueryError(str(e)) from e
  try:
    model = api.load(workdir, which)
  except (FileNotFoundError, ValueError) as e:
    raise QueryError(f'cannot load a model from {workdir}: {e}') from e
  try:
    idx.check_model(model)
  except index_lib.ModelMismatchError as e:
    raise QueryError(f'{index_path}: {e}') from e
  return model, idx


def _row(idx, piece: str, notehead: int | None,
         time_s: float | None = None) -> int:
  """The index row of ``piece``'s ``notehead``-th onset, else of its onset
  nearest to ``time_s``; QueryError naming an unknown piece or notehead."""
  try:
    if notehead is not None:
      return ranking_lib.indexed_row(idx, piece, notehead)
    return ranking_lib.row_at_time(idx, piece, time_s)
  except ranking_lib.RowError as e:
    raise QueryError(str(e)) from e


def retrieve(workdir: str, index_path: str, *, audio_path: str | None = None,
             start: float = 0.0, duration: float | None = None,
             sheet: str | None = None, sheet_x: float = 0.5,
             piece: str | None = None, notehead: int | None = None,
             modality: str = 'sheet', top: int = 10,
             figure_path: str | None = None, data_dir: str | None = None,
             which: str = 'best', page_step: int = frontends.PAGE_STEP,
             echo=print):
  """``experiments.retrieve`` as a function (see that module for the flags).

  Exactly one query: ``audio_path``, ``sheet``, or ``piece`` + ``notehead``.
  A ``sheet`` image with more than one staff is a page: every snippet along
  its systems (``page_step`` px apart) queries the audio, and the pieces are
  ranked by their votes (``identify.identify_page``).

  Returns:
    the ``ranking.Ranking`` (for a page: the ``identify.PageIdentification``);
    prints the table (and notes) through ``echo``.

  Raises:
    QueryError, audio.AudioError: with a message for the user.
  """
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
    q = frontends.audio_query(audio_path, start, duration)
  elif sheet and frontends.is_page(sheet):
    page = frontends.page_snippets(sheet, page_step)
    if figure_path:
      raise QueryError('--figure is drawn for one snippet, not for a page')
    model, idx = load_model_and_index(workdir, index_path, which)
    _needs_audio(idx, index_path)
    for note in page.notes:
      echo(f'note: {note}')
    ident = identify.identify_page(model, idx, page, max(top, 1))
    echo(f'{sheet}: a page, {len(page)} snippets against '
         f'{len(idx.pieces)} pieces ({len(idx):,} audio excerpts, '
         f'{idx.split} split)')
    echo(presentation.format_page_identification(ident, top))
    return ident
  elif sheet:
    snippet, sheet_notes = frontends.sheet_from_image(sheet, sheet_x)
  model, idx = load_model_and_index(workdir, index_path, which)
  if not audio_path:
    _needs_audio(idx, index_path)
  top = min(top, len(idx))
  if audio_path:
    for note in q.notes:
      echo(f'note: {note}')
    true_row = None
    if piece is not None:
      true_row = _row(idx, piece, notehead, q.centre_s)
    emb = api.embed_audio(model, q.excerpt[None])
    ranking = ranking_lib.rank(idx, emb, 'audio->sheet', top, true_row)
    query_img = q.excerpt
    title = f'{q.path} @ {q.centre_s:.2f} s'
  elif sheet:
    for note in sheet_notes:
      echo(f'note: {note}')
    emb = api.embed_sheet(model, snippet[None])
    ranking = ranking_lib.rank(idx, emb, 'sheet->audio', top)
    query_img, title = snippet, sheet
  else:
    row = _row(idx, piece, notehead)
    direction = 'sheet->audio' if modality == 'sheet' else 'audio->sheet'
    emb = (idx.sheet_emb if modality == 'sheet' else idx.audio_emb)[row]
    ranking = ranking_lib.rank(idx, emb, direction, top, row)
    query_img = None
    title = (f'{piece}, onset {notehead} (bar {idx.bar[row]}), indexed '
             f'{modality}')
  echo(presentation.format_ranking(ranking, idx))
  if figure_path:
    draw_figure(ranking, idx, query_img, figure_path, title, data_dir)
    echo(f'wrote {figure_path}')
  return ranking


def draw_figure(ranking, idx, query_img, figure_path: str, title: str,
                data_dir: str | None = None) -> str:
  """The paper's Figure 3 of a ranking (``presentation.figure``), the
  results' pixels re-read from the prepared data or the pages of the index.

  Args:
    ranking: ``ranking.Ranking`` against ``idx``.
    idx: the index.
    query_img: the query's excerpt or snippet; None: the indexed partner of
      ``ranking.true_row`` (an indexed query).
    figure_path: PNG to write.
    title: the figure's title.
    data_dir: where the prepared data are now (default: the index's).

  Raises:
    QueryError: the data or pages cannot be read.
  """
  rows = [r.row for r in ranking.results]
  try:
    read_rows = (page_index.read_rows if idx.is_pages
                 else index_lib.read_rows)
    data = read_rows(
        idx, rows + ([ranking.true_row] if query_img is None else []),
        data_dir)
  except (FileNotFoundError, ValueError) as e:
    raise QueryError(f'cannot draw the figure: {e} (pass --data_dir where '
                     'the prepared data are now)') from e
  key = 'sheet' if ranking.direction == 'audio->sheet' else 'spec'
  if query_img is None:
    query_img = data['spec' if key == 'sheet' else 'sheet'][-1]
  return presentation.figure(ranking, query_img, data[key][:len(rows)],
                             figure_path, title)


def _needs_audio(idx, index_path: str) -> None:
  """QueryError for a sheet query against a page index (no audio in it)."""
  if idx.is_pages:
    raise QueryError(f'{index_path} is a page index (sheet snippets of '
                     'score pages, no audio): query it with --audio')


def identify_file(workdir: str, index_path: str, audio_path: str, *,
                  k: int = identify.TOP_K, hop: int = identify.HOP_FRAMES,
                  top: int = 5, timeline: bool = True, which: str = 'best',
                  echo=print) -> identify.Identification:
  """``experiments.identify`` as a function (see that module for the flags).

  Returns:
    the ``identify.Identification``; prints the ranked pieces (and the
    timeline) through ``echo``.

  Raises:
    QueryError, audio.AudioError: with a message for the user (missing,
    unreadable or silent recording, bad index, another model's index).
  """
  if k < 1 or hop < 1 or top < 1:
    raise QueryError(f'--k, --hop and --top must be >= 1, got {k}, {hop}, '
                     f'{top}')
  samples = frontends.read_span(audio_path)      # refuses silence
  spec = audio.spectrogram(samples)
  model, idx = load_model_and_index(workdir, index_path, which)
  seconds = len(samples) / snippets.SAMPLE_RATE
  note = frontends.padding_note(spec.shape[1], seconds, unit='window')
  if note:
    echo(f'note: {note}')
  ident = identify.identify(model, idx, spec, k, hop)
  echo(f'{audio_path}: {seconds:.1f} s against {len(idx.pieces)} pieces '
       f'({len(idx):,} sheet snippets, {idx.split} split)')
  echo(presentation.format_identification(ident, top, timeline))
  return ident
