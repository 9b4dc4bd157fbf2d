"""The LilyPond engraver: source -> LilyPond -> PNG + PDF links -> strip.

Per piece (or a batch of pieces in one LilyPond process, :func:`engrave_many`):

1. :func:`~data_prep.engraving.lilypond_source.lilypond_source` writes the
   melody as LilyPond source in a :class:`Style`.
2. LilyPond (binary of the PyPI ``lilypond`` package) renders it on one
   page (``ly:one-page-breaking``: ordinary line breaking, A4 systems) with
   its cairo back end, writing a PNG at ``RESOLUTION_DPI`` (20 px per staff
   space) and a PDF.  With ``-dpoint-and-click=note-event`` every notehead
   carries a link annotation ``textedit://FILE:LINE:COL:COL`` (LINE 1-based,
   COL 0-based) whose box is the notehead; tied continuation noteheads link
   to their own (continuation) tokens.  The SVG back end would give the same
   links but is about 6x slower (2.6 s vs 0.4 s for a 33-bar jig), hence
   PNG + PDF.
3. Staves are found on the PNG (``strip.find_staves``) and the page is cut
   into the strip (``strip.unroll``), box-filtered by 5.

Failures: an error LilyPond reports in the piece's own source is an
``EngraveError`` (a fact about the piece, cached); a run that fails for a
reason outside the source is a :class:`LilyPondRunError` (a fact about the
machine: retried, never cached).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

from data_prep.engraving import lilypond_source as ly
from data_prep.engraving import notation
from data_prep.engraving import strip as strip_lib
from data_prep.engraving.lilypond_source import (LILYPOND_VERSION,
                                                 RESOLUTION_DPI, Style,
                                                 drawn_style, lilypond_source)
from data_prep.engraving.strip import EngraveError, Engraving
from data_prep.melody import Melody

EXECUTABLE_ENV_VAR = 'DCCAFLAX_LILYPOND'
LILYPOND = 'lilypond'              # the paper's engraving: LilyPond's style
LILYPOND_DRAWN = 'lilypond_drawn'  # a style drawn per piece (drawn_style)


class LilyPondRunError(EngraveError):
  """LilyPond did not run through, for a reason outside the piece's source:
  a timeout, a crash or signal, a font or fontconfig error, no output files,
  a non-zero exit with no error in any source.  A fact about the machine,
  not the piece: :func:`engrave_many` retries it once on its own, and the
  pipeline never caches it, so the next run tries again."""


_LINK_RE = re.compile(
    rb'/QuadPoints \[ ([-\d. ]+) \].*?/URI \(textedit://[^)]*?:(\d+):(\d+):\d+\)', re.S)
_MEDIABOX_RE = re.compile(rb'/MediaBox \[ ?([-\d. ]+)\]')


def lilypond_executable() -> str:
  """Path of the LilyPond binary: ``$DCCAFLAX_LILYPOND`` if set (it must be
  LilyPond ``LILYPOND_VERSION``, e.g. a wrapper around it), else the binary
  shipped by the PyPI ``lilypond`` package."""
  override = os.environ.get(EXECUTABLE_ENV_VAR)
  if override:
    return override
  import lilypond  # pylint: disable=import-outside-toplevel
  return str(lilypond.executable())


def pdf_links(pdf: bytes, dpi: float = RESOLUTION_DPI):
  """Point-and-click links of a one-page LilyPond (cairo) PDF.

  Returns:
    List of ``(line, col, x, y)``: source position and the link box centre
    in px at ``dpi`` (origin top left, y down).
  """
  box = _MEDIABOX_RE.search(pdf)
  if box is None:
    raise EngraveError('no /MediaBox in PDF')
  height_pt = float(box.group(1).split()[3])
  k = dpi / 72.0
  out = []
  for m in _LINK_RE.finditer(pdf):
    q = [float(v) for v in m.group(1).split()]
    xs, ys = q[0::2], q[1::2]
    out.append((int(m.group(2)), int(m.group(3)),
                k * (min(xs) + max(xs)) / 2, k * (height_pt - (min(ys) + max(ys)) / 2)))
  return out


def link_heads(links, positions):
  """``(note_index, x, y)`` of the :func:`pdf_links` that point at a note's
  onset token (``positions``, from
  :func:`~data_prep.engraving.lilypond_source.lilypond_source`)."""
  by_pos = {p: i for i, p in enumerate(positions)}
  return [(by_pos[(line, col)], hx, hy) for line, col, hx, hy in links
          if (line, col) in by_pos]


def _run_lilypond(paths, outdir, timeout_s) -> tuple[str, str | None]:
  """Runs LilyPond (cairo back end: PDF + PNG) on ``.ly`` files in ``outdir``.

  Returns:
    ``(log, problem)``: the combined log text, and what went wrong with the
    run as a whole, for :class:`LilyPondRunError` (None if nothing did): a
    signal, a font or fontconfig error, or a non-zero exit that no error in
    any of the sources explains.

  Raises:
    LilyPondRunError: the run timed out, or the executable cannot be started.
  """
  cmd = [lilypond_executable(), '-dbackend=cairo', '--pdf', '--png',
         f'-dresolution={RESOLUTION_DPI}', '-dpoint-and-click=note-event',
         '-s'] + [os.path.basename(p) for p in paths]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          cwd=outdir)
  except subprocess.TimeoutExpired as e:
    raise LilyPondRunError(f'LilyPond timed out after {timeout_s:.0f} s') from e
  except OSError as e:
    raise LilyPondRunError(f'cannot run LilyPond {cmd[0]}: {e}') from e
  log = proc.stderr + proc.stdout
  problem = None
  if proc.returncode < 0:
    problem = f'LilyPond was killed by signal {-proc.returncode}'
  elif font := _FONT_ERROR_RE.search(log):
    problem = 'a font error: ' + font.group(0).strip()
  elif proc.returncode and not any(_source_error(log, _stem(p)) for p in paths):
    problem = (f'LilyPond exited with status {proc.returncode} without an '
               'error in any source')
  return log, problem


_FONT_ERROR_RE = re.compile(r'(?im)^.*(?:fontconfig|font).*error.*$|'
                            r'^.*error.*\bfonts?\b.*$')


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _source_error(log: str, stem: str) -> bool:
  """Whether LilyPond reported an error at a line of ``stem``.ly."""
  return re.search(rf'(?m)^(?:.*/)?{re.escape(stem)}\.ly:\d+:\d+: '
                   r'(?:fatal )?error:', log) is not None


def _log_tail(log: str, stem: str, n: int = 15) -> str:
  """The last ``n`` lines of ``log`` that belong to the file ``stem``.ly."""
  lines = log.splitlines()
  start = next((i for i, l in enumerate(lines)
                if l.startswith('Processing `') and f'{stem}.ly' in l), 0)
  own = []
  for l in lines[start:]:
    if l.startswith('Processing `') and f'{stem}.ly' not in l and own:
      break
    own.append(l)
  return '\n'.join(own[-n:])


def _collect(melody, source, positions, workdir, stem, log,
             problem, style: Style = Style()) -> Engraving:
  """Read one piece's PDF + PNG and build its :class:`Engraving`.

  Raises:
    EngraveError: an error in the piece's own source, or unusable output.
    LilyPondRunError: the run had a ``problem``, or left no output files.
  """
  pdf_path = os.path.join(workdir, stem + '.pdf')
  png_path = os.path.join(workdir, stem + '.png')
  tail = _log_tail(log, stem)
  if _source_error(log, stem):
    raise EngraveError(f'{melody.name}: LilyPond failed:\n{tail}')
  if problem is None and not (os.path.exists(pdf_path) and
                              os.path.exists(png_path)):
    problem = 'LilyPond wrote no output files and no error in the source'
  if problem is not None:
    raise LilyPondRunError(f'{melody.name}: {problem} (a problem of the '
                           'machine, not of the piece: not cached, the next '
                           f'run tries again); log:\n{tail}')
  with open(pdf_path, 'rb') as f:
    links = pdf_links(f.read())
  with Image.open(png_path) as im:
    page = np.asarray(im.convert('L'))
  try:
    strip, heads = strip_lib.unroll(
        page, strip_lib.find_staves(page, style.px_per_space),
        link_heads(links, positions), len(melody.notes), style.px_per_space)
  except EngraveError as e:
    raise EngraveError(f'{melody.name}: {e}') from e
  return Engraving(strip=strip, noteheads=heads, source=source)


def engrave_many(melodies, *, timeout_s: float = 120.0, workdir=None,
                 retry: bool = True, styles=None) -> list:
  """Engrave several melodies with one LilyPond process.

  A piece whose run failed for a reason outside its source
  (:class:`LilyPondRunError`: a timeout, a crash, a font error, no output)
  is engraved once more on its own; if that fails too, its result is that
  error.

  Args:
    melodies: sequence of :class:`Melody`.
    timeout_s: LilyPond time limit per piece (the batch gets the sum).
    workdir: folder for the ``.ly``/PDF/PNG files (a temporary one if None).
    retry: retry such pieces one by one (the retries themselves do not).
    styles: a :class:`Style` per melody (default: LilyPond's own).

  Returns:
    One :class:`Engraving` or exception (``EngraveError``,
    ``LilyPondRunError``, ``ValueError``) per melody, in order.
  """
  melodies = list(melodies)
  styles = list(styles) if styles is not None else [Style()] * len(melodies)
  if workdir is None:
    with tempfile.TemporaryDirectory(prefix='engrave_') as tmp:
      return engrave_many(melodies, timeout_s=timeout_s, workdir=tmp,
                          retry=retry, styles=styles)
  os.makedirs(workdir, exist_ok=True)
  results: list = [None] * len(melodies)
  jobs = []
  for i, mel in enumerate(melodies):
    stem = f'piece{i:04d}'
    try:
      src, pos = lilypond_source(mel, styles[i])
    except (ValueError, KeyError) as e:
      results[i] = e
      continue
    path = os.path.join(workdir, stem + '.ly')
    with open(path, 'w', encoding='utf-8') as f:
      f.write(src)
    jobs.append((i, stem, path, src, pos))
  if jobs:
    try:
      log, problem = _run_lilypond([j[2] for j in jobs], workdir,
                                   timeout_s * len(jobs))
    except LilyPondRunError as e:
      for i, *_ in jobs:
        results[i] = LilyPondRunError(f'{melodies[i].name}: {e}')
    else:
      for i, stem, _, src, pos in jobs:
        try:
          results[i] = _collect(melodies[i], src, pos, workdir, stem, log,
                                problem, styles[i])
        except EngraveError as e:
          results[i] = e
  if retry:
    for i, res in enumerate(results):
      if isinstance(res, LilyPondRunError):
        results[i] = engrave_many([melodies[i]], timeout_s=timeout_s,
                                  workdir=os.path.join(workdir, f'retry{i}'),
                                  retry=False, styles=[styles[i]])[0]
  return results


def warm_up(timeout_s: float = 120.0) -> None:
  """Engraves one note, so LilyPond's first run on a machine (fontconfig
  building its cache) happens once, before parallel runs start.

  Raises:
    LilyPondRunError: LilyPond cannot engrave on this machine, with why.
  """
  with tempfile.TemporaryDirectory(prefix='engrave_warm_up_') as tmp:
    path = os.path.join(tmp, 'warm_up.ly')
    with open(path, 'w', encoding='utf-8') as f:
      f.write(f'\\version "{LILYPOND_VERSION}"\n{{ c\'4 }}\n')
    log, problem = _run_lilypond([path], tmp, timeout_s)
    if problem is None and not os.path.exists(
        os.path.join(tmp, 'warm_up.png')):
      problem = 'it wrote no output'
    if problem is not None:
      raise LilyPondRunError(f'LilyPond ({lilypond_executable()}) cannot '
                             f'engrave one note on this machine: {problem}; '
                             f'log:\n{log[-2000:]}')


def page_png(melody: Melody, out_path: str, *, title: str = '',
             style: Style = Style(), timeout_s: float = 120.0) -> str:
  """Engrave a melody as a page a user would have: its title and a composer
  line over the systems, PNG at ``RESOLUTION_DPI`` (the first page).

  Raises:
    EngraveError: as :func:`engrave_many`, or no PNG written.
  """
  src, _ = lilypond_source(melody, style)
  text = title.replace('\\', '').replace('"', "'")
  src = src.replace('\\header { tagline = ##f }',
                    f'\\header {{ tagline = ##f title = "{text}" '
                    'composer = "Trad." }', 1)
  with tempfile.TemporaryDirectory(prefix='engrave_page_') as tmp:
    path = os.path.join(tmp, 'page.ly')
    with open(path, 'w', encoding='utf-8') as f:
      f.write(src)
    log, problem = _run_lilypond([path], tmp, timeout_s)
    png = os.path.join(tmp, 'page.png')
    if problem or _source_error(log, 'page') or not os.path.exists(png):
      raise EngraveError(f'{melody.name}: no page: {problem or ""}\n'
                         f'{_log_tail(log, "page")}')
    with Image.open(png) as im:
      im.convert('L').save(out_path)
  return out_path


def engrave(melody: Melody, *, timeout_s: float = 120.0, workdir=None,
            style: Style = Style()) -> Engraving:
  """Engrave one melody (see :func:`engrave_many`); raises :class:`EngraveError`."""
  res = engrave_many([melody], timeout_s=timeout_s, workdir=workdir,
                     styles=[style])[0]
  if isinstance(res, Exception):
    raise res
  return res


class LilyPond:
  """The LilyPond engraver, as the registry (``data_prep.engraving``) has
  it: the engravings ``LILYPOND`` (LilyPond's own style, the paper's) and
  ``LILYPOND_DRAWN`` (a :class:`Style` drawn per piece)."""
  name = 'lilypond'
  engravings = (LILYPOND, LILYPOND_DRAWN)
  heldout_engravings = ()
  uncached_errors = (LilyPondRunError,)
  modules = (notation, strip_lib, ly, sys.modules[__name__])

  def settings(self, engraving: str, piece: str) -> Style:
    """The layout style ``engraving`` gives ``piece``."""
    return drawn_style(piece) if engraving == LILYPOND_DRAWN else Style()

  def params(self, settings: Style) -> dict:
    return settings.to_json()

  def source(self, melody: Melody, settings: Style) -> str:
    return lilypond_source(melody, settings)[0]

  def version(self) -> str:
    return LILYPOND_VERSION

  def warm_up(self) -> None:
    warm_up()

  def engrave_many(self, melodies, settings, timeout_s: float = 120.0
                   ) -> list:
    return engrave_many(melodies, timeout_s=timeout_s, styles=settings)

  def page_png(self, melody: Melody, out_path: str, settings: Style,
               title: str = '') -> str:
    return page_png(melody, out_path, title=title, style=settings)


ENGRAVER = LilyPond()
