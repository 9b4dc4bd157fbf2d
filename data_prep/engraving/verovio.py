"""The Verovio engraver: melody -> MEI -> Verovio SVG -> strip.

A second engraver beside LilyPond (``lilypond``), for score images that do
not all look like one program's output.  Per piece:

1. :func:`mei_source` writes the melody's :func:`notation.layout` (the same
   bars, tied note pieces, rests and triplets LilyPond gets) as MEI.  The
   onset piece of ``melody.notes[i]`` carries ``xml:id="n{i}"``; tied
   continuations carry other ids.  Accidentals are written where the key
   signature and the bar's earlier notes call for them (they hold to the bar
   line, as in print); beams group the short notes of each beat.
2. Verovio (PyPI ``verovio``) engraves it in one SMuFL font on A4-wide
   systems (its own line breaking and spacing, every system justified) and
   writes SVG with the element ids.
3. The staves are read from the SVG (each system's five staff-line paths),
   the notehead centre of each ``n{i}`` from its glyph's position and the
   font's glyph box, so notehead <-> onset links are exact by construction:
   no image analysis.  The SVG is rasterised (cairosvg) at ``PX_PER_SPACE``
   = 12 px per staff space and cut into the strip by ``strip.unroll``
   (box filter 3 to 4 px per staff space), as LilyPond's page is.

Fonts: Verovio ships five.  ``HELDOUT_FONTS`` are kept for evaluation: the
data pipeline refuses to put them in the train or valid split.  The
engraving ``verovio_drawn`` engraves each piece in one training font drawn
from its name (``drawn_font``), so one data source holds all of them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import sys
import xml.etree.ElementTree as ET
from xml.sax import saxutils

import numpy as np
from PIL import Image

from data_prep.engraving import notation
from data_prep.engraving import strip as strip_lib
from data_prep.engraving.strip import EngraveError, Engraving
from data_prep.melody import Melody, bar_ticks

FONTS = ('Leipzig', 'Bravura', 'Gootville', 'Petaluma', 'Leland')
HELDOUT_FONTS = ('Leland',)
TRAINING_FONTS = tuple(f for f in FONTS if f not in HELDOUT_FONTS)
# The engravings these give, as data sources name them ('verovio_leland'),
# and a drawn one: each piece in one training font, drawn from its name.
DRAWN = 'verovio_drawn'
ENGRAVINGS = tuple(f'verovio_{f.lower()}' for f in FONTS) + (DRAWN,)
HELDOUT_ENGRAVINGS = tuple(f'verovio_{f.lower()}' for f in HELDOUT_FONTS)
PX_PER_SPACE = 12          # raster resolution; unroll box-filters by 3
PAGE_WIDTH = 2100          # Verovio page width, tenths of a mm (A4)

_SVG = '{http://www.w3.org/2000/svg}'
_XLINK = '{http://www.w3.org/1999/xlink}href'
_NUM = r'(-?[\d.]+)'
_TRANSLATE_RE = re.compile(rf'translate\({_NUM},\s*{_NUM}\)')
_SCALE_RE = re.compile(rf'scale\({_NUM},\s*{_NUM}\)')
_HLINE_RE = re.compile(rf'^M{_NUM} {_NUM} L{_NUM} {_NUM}$')


def font_name(name: str) -> str:
  """The font of ``name`` or of an engraving, matched without case
  (``'leland'``, ``'verovio_leland'`` -> ``'Leland'``).

  Raises:
    ValueError: not one of ``FONTS``.
  """
  for f in FONTS:
    if name.lower() in (f.lower(), f'verovio_{f.lower()}'):
      return f
  raise ValueError(f'unknown Verovio font {name!r}; one of {", ".join(FONTS)}')


def drawn_font(piece: str) -> str:
  """The training font the ``verovio_drawn`` engraving gives a piece: drawn
  uniformly from ``TRAINING_FONTS`` by a hash of its name (stable across
  runs and machines)."""
  digest = hashlib.sha256(piece.encode('utf-8')).digest()
  return TRAINING_FONTS[int.from_bytes(digest[:4], 'big') % len(TRAINING_FONTS)]


def engraving_font(engraving: str, piece: str) -> str:
  """The font of an engraving ('verovio_<font>' or ``DRAWN``) for a piece."""
  return drawn_font(piece) if engraving == DRAWN else font_name(engraving)


# ------------------------------------------------------------------ MEI ---

_ACCID = {-2: 'ff', -1: 'f', 0: 'n', 1: 's', 2: 'x'}


def _keysig(fifths: int) -> str:
  return '0' if fifths == 0 else f'{abs(fifths)}{"s" if fifths > 0 else "f"}'


def _beat(time: tuple[int, int], tpb: int) -> int:
  """Beam group length in ticks: the beat (a dotted one in compound time)."""
  num, den = time
  unit = 4 * tpb // den
  return 3 * unit if num % 3 == 0 and num > 3 else max(unit, tpb)


def mei_source(melody: Melody, title: str = '') -> str:
  """MEI (5.0) of a melody's :func:`notation.layout` (``title`` in its
  header, for :func:`page_png`).

  Raises:
    EngraveError: a token without a plain or dotted note value.
    ValueError: as :func:`notation.layout`.
  """
  tpb = melody.ticks_per_beat
  notes = melody.notes
  bars = notation.layout(melody)
  durs = notation.note_values(tpb)
  first = bars[0]
  clef = ('clef.shape="F" clef.line="4"' if notation.clef(melody) == 'bass'
          else 'clef.shape="G" clef.line="2"')
  out = ['<?xml version="1.0" encoding="UTF-8"?>',
         '<mei xmlns="http://www.music-encoding.org/ns/mei" meiversion="5.0">',
         '<meiHead><fileDesc><titleStmt>'
         + (f'<title>{saxutils.escape(title)}</title><composer>Trad.</composer>'
            if title else '<title/>')
         + '</titleStmt><pubStmt/></fileDesc></meiHead>',
         '<music><body><mdiv><score>',
         f'<scoreDef meter.count="{first.time[0]}" meter.unit="{first.time[1]}" '
         f'keysig="{_keysig(notation.key_fifths(first.key))}">',
         f'<staffGrp><staffDef n="1" lines="5" {clef}/></staffGrp></scoreDef>',
         '<section>']
  prev_tied = False
  for bar in bars:
    fifths = notation.key_fifths(bar.key)
    if bar.new_time or bar.new_key:
      attrs = ''
      if bar.new_time:
        attrs += f' meter.count="{bar.time[0]}" meter.unit="{bar.time[1]}"'
      if bar.new_key:
        attrs += f' keysig="{_keysig(fifths)}"'
      out.append(f'<scoreDef{attrs}/>')
    full = bar_ticks(*bar.time, tpb)
    attrs = ' metcon="false"' if bar.length != full else ''
    if bar.last:
      attrs += ' right="end"'
    in_key = notation.key_alterations(fifths)
    state: dict[tuple[str, int], int] = {}
    beat = _beat(bar.time, tpb)
    # tokens: (xml, tuplet span, beamable, beat index)
    tokens = []
    for k, pc in enumerate(bar.pieces):
      # (the layout splits every piece into note values; a guard only)
      if pc.written not in durs:
        raise EngraveError(f'{melody.name}: a note piece of {pc.written} '
                           'ticks has no plain or dotted note value')
      value, dots = durs[pc.written]
      dur_attr = f'dur="{value}"' + (f' dots="{dots}"' if dots else '')
      if pc.note < 0:
        tokens.append((f'<rest {dur_attr}/>', pc.tuplet, False, None))
        prev_tied = False
        continue
      letter, alter, octave = notation.spelled(notes[pc.note].pitch, fifths)
      attr = f'pname="{letter}" oct="{octave}" {dur_attr}'
      shown = state.get((letter, octave), in_key[letter])
      if alter != shown and pc.onset:
        attr += f' accid="{_ACCID[alter]}"'
      if alter != 0:
        attr += f' accid.ges="{_ACCID[alter]}"'
      state[(letter, octave)] = alter
      tie = ('m' if prev_tied and pc.tie else 'i' if pc.tie
             else 't' if prev_tied else '')
      if tie:
        attr += f' tie="{tie}"'
      ident = f'n{pc.note}' if pc.onset else f'n{pc.note}c{k}_{pc.p}'
      tokens.append((f'<note xml:id="{ident}" {attr}/>', pc.tuplet,
                     pc.written < tpb, pc.p // beat))
      prev_tied = pc.tie
    body = _group(tokens)
    out.append(f'<measure{attrs}><staff n="1"><layer n="1">{body}'
               '</layer></staff></measure>')
  out += ['</section>', '</score></mdiv></body></music>', '</mei>']
  return '\n'.join(out) + '\n'


def _group(tokens) -> str:
  """A bar's tokens with ``<tuplet>`` around each triplet span and
  ``<beam>`` around each run of two or more short notes in one beat."""
  parts, i = [], 0
  while i < len(tokens):
    span = tokens[i][1]
    j = i
    while j < len(tokens) and tokens[j][1] == span:
      j += 1
    inner = _beams(tokens[i:j])
    parts.append(f'<tuplet num="3" numbase="2">{inner}</tuplet>'
                 if span >= 0 else inner)
    i = j
  return ''.join(parts)


def _beams(tokens) -> str:
  parts, i = [], 0
  while i < len(tokens):
    j = i + 1
    if tokens[i][2]:
      while (j < len(tokens) and tokens[j][2]
             and tokens[j][3] == tokens[i][3]):
        j += 1
    run = ''.join(t[0] for t in tokens[i:j])
    parts.append(f'<beam>{run}</beam>' if j - i > 1 else run)
    i = j
  return ''.join(parts)


# ---------------------------------------------------------------- render ---

@functools.lru_cache(maxsize=None)
def _glyph_boxes(font: str) -> dict[str, tuple[float, float, float, float]]:
  """Glyph code -> ``(x, y, w, h)`` in font units, from Verovio's font data."""
  import verovio  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(verovio.__file__), 'data', font + '.xml')
  boxes = {}
  for g in ET.parse(path).getroot().iter('g'):
    boxes[g.get('c')] = tuple(float(g.get(k, 0)) for k in ('x', 'y', 'w', 'h'))
  return boxes


@functools.lru_cache(maxsize=None)
def version() -> str:
  """The Verovio version (part of the data pipeline's cache key)."""
  import verovio  # pylint: disable=import-outside-toplevel
  return verovio.toolkit().getVersion()


def toolkit(font: str):
  import verovio  # pylint: disable=import-outside-toplevel
  verovio.enableLog(verovio.LOG_OFF)
  tk = verovio.toolkit()
  tk.setOptions({'font': font, 'breaks': 'auto', 'pageWidth': PAGE_WIDTH,
                 'pageHeight': 60000, 'adjustPageHeight': True,
                 'header': 'none', 'footer': 'none',
                 'minLastJustification': 0.0})
  return tk


def _classes(el) -> list[str]:
  return (el.get('class') or '').split()


def svg_layout(svg: str, font: str):
  """Staves and onset noteheads of one Verovio SVG page.

  Returns:
    ``(staves, heads, spacing, width, margin)`` in SVG units (the
    ``definition-scale`` viewBox): ``staves`` as ``(y_middle, x0, x1)`` per
    system; ``heads`` as ``(note_index, x, y)`` notehead centres of the
    ``n{i}`` notes; the staff-line distance; the viewBox width; the page
    margin ``(dx, dy)`` added to every coordinate.
  """
  root = ET.fromstring(svg)
  inner = next(e for e in root.iter(f'{_SVG}svg')
               if 'definition-scale' in _classes(e))
  width = float(inner.get('viewBox').split()[2])
  page = next(e for e in inner.iter(f'{_SVG}g')
              if 'page-margin' in _classes(e))
  margin = tuple(float(v) for v in _TRANSLATE_RE.search(
      page.get('transform')).groups())
  boxes = _glyph_boxes(font)
  staves, heads, gaps = [], [], []
  for system in page.iter(f'{_SVG}g'):
    if 'system' not in _classes(system):
      continue
    ys, x0, x1 = set(), np.inf, -np.inf
    for staff in system.iter(f'{_SVG}g'):
      if 'staff' not in _classes(staff):
        continue
      for path in staff.findall(f'{_SVG}path'):
        m = _HLINE_RE.match(path.get('d', ''))
        if m and m.group(2) == m.group(4):
          xa, y, xb = float(m.group(1)), float(m.group(2)), float(m.group(3))
          ys.add(y)
          x0, x1 = min(x0, xa, xb), max(x1, xa, xb)
    if len(ys) != 5:
      raise EngraveError(f'a system with {len(ys)} staff lines, not 5')
    ys = sorted(ys)
    gaps += list(np.diff(ys))
    staves.append((ys[2], x0, x1))
    for note in system.iter(f'{_SVG}g'):
      ident = note.get('id') or ''
      if 'note' not in _classes(note) or not re.fullmatch(r'n\d+', ident):
        continue
      head = next(e for e in note.iter(f'{_SVG}g')
                  if 'notehead' in _classes(e))
      use = head.find(f'{_SVG}use')
      code = use.get(_XLINK).lstrip('#').split('-')[0]
      tx, ty = (float(v) for v in _TRANSLATE_RE.search(
          use.get('transform')).groups())
      sx, sy = (float(v) for v in _SCALE_RE.search(
          use.get('transform')).groups())
      gx, gy, gw, gh = boxes[code]
      heads.append((int(ident[1:]), tx + (gx + gw / 2) * sx,
                    ty - (gy + gh / 2) * sy))
  if not staves:
    raise EngraveError('no staff in the SVG')
  return staves, heads, float(np.median(gaps)), width, margin


def _raster(svg: str, font: str):
  """One SVG page rasterised at ``PX_PER_SPACE`` px per staff space (cairosvg)
  with its :func:`svg_layout` in px of that raster: ``(page, staves,
  heads)``."""
  import cairosvg  # pylint: disable=import-outside-toplevel
  st, hd, spacing, width, (mx, my) = svg_layout(svg, font)
  outer_w = float(re.search(r'width="([\d.]+)px"', svg).group(1))
  k = PX_PER_SPACE / spacing            # px per SVG unit
  png = cairosvg.svg2png(bytestring=svg.encode('utf-8'),
                         scale=k * width / outer_w, background_color='white')
  with Image.open(io.BytesIO(png)) as im:
    page = np.asarray(im.convert('L'))
  staves = [((y + my) * k, int(round((a + mx) * k)), int(round((b + mx) * k)))
            for y, a, b in st]
  heads = [(i, (x + mx) * k, (y + my) * k) for i, x, y in hd]
  return page, staves, heads


def page_png(melody: Melody, out_path: str, font: str = 'Leipzig',
             title: str = '') -> str:
  """Engrave a melody as a page a user would have: its title and composer
  over the systems (Verovio's page header), the first page as a PNG at
  ``PX_PER_SPACE`` px per staff space.

  Raises:
    EngraveError: Verovio does not read the MEI.
  """
  font = font_name(font)
  tk = toolkit(font)
  tk.setOptions({'header': 'auto'})
  if not tk.loadData(mei_source(melody, title)):
    raise EngraveError(f'{melody.name}: Verovio did not read its MEI')
  page, _, _ = _raster(tk.renderToSVG(1), font)
  Image.fromarray(page).save(out_path)
  return out_path


def engrave(melody: Melody, font: str = 'Leipzig') -> Engraving:
  """Engrave one melody with Verovio in ``font``.

  Raises:
    EngraveError: the melody cannot be written as MEI, Verovio does not read
      it, or its output lacks a staff or a notehead.
    ValueError: an unknown font, or as :func:`notation.layout`.
  """
  font = font_name(font)
  try:
    mei = mei_source(melody)
  except EngraveError as e:
    raise EngraveError(f'{melody.name}: {e}') from e
  tk = toolkit(font)
  if not tk.loadData(mei):
    raise EngraveError(f'{melody.name}: Verovio did not read its MEI')
  pages, staves, heads, y0 = [], [], [], 0
  for p in range(1, tk.getPageCount() + 1):
    try:
      page, st, hd = _raster(tk.renderToSVG(p), font)
    except EngraveError as e:
      raise EngraveError(f'{melody.name}: {e}') from e
    staves += [(y0 + y, a, b) for y, a, b in st]
    heads += [(i, x, y0 + y) for i, x, y in hd]
    pages.append(page)
    y0 += page.shape[0]
  w = max(p.shape[1] for p in pages)
  page = np.concatenate([np.pad(p, ((0, 0), (0, w - p.shape[1])),
                                constant_values=255) for p in pages])
  strip, noteheads = strip_lib.unroll(page, staves, heads,
                                      len(melody.notes), PX_PER_SPACE)
  missing = [i for i, h in enumerate(noteheads) if len(h) != 1]
  if missing:
    raise EngraveError(f'{melody.name}: Verovio drew {len(noteheads[missing[0]])} '
                       f'noteheads for note {missing[0]} (and '
                       f'{len(missing) - 1} more notes not one)')
  return Engraving(strip=strip, noteheads=noteheads, source=mei)


def engrave_many(melodies, fonts) -> list:
  """:func:`engrave` of each melody in its font (a sequence as long).

  Returns:
    One :class:`Engraving` or ``EngraveError`` per melody, in order.
  """
  out = []
  for mel, font in zip(melodies, fonts, strict=True):
    try:
      out.append(engrave(mel, font))
    except EngraveError as e:
      out.append(e)
  return out


class Verovio:
  """The Verovio engraver, as the registry (``data_prep.engraving``) has
  it: the engravings ``ENGRAVINGS``, one per font and ``DRAWN``.  Verovio
  runs in this process, so every failure is a fact about the piece."""
  name = 'verovio'
  engravings = ENGRAVINGS
  heldout_engravings = HELDOUT_ENGRAVINGS
  uncached_errors = ()
  modules = (notation, strip_lib, sys.modules[__name__])

  def settings(self, engraving: str, piece: str) -> str:
    """The font ``engraving`` gives ``piece``."""
    return engraving_font(engraving, piece)

  def params(self, settings: str) -> dict:
    return {'font': settings}

  def source(self, melody: Melody, settings: str) -> str:
    del settings  # the font is not in the MEI
    return mei_source(melody)

  def version(self) -> str:
    return version()

  def warm_up(self) -> None:
    pass

  def engrave_many(self, melodies, settings, timeout_s: float = 120.0
                   ) -> list:
    del timeout_s  # in this process, not timed
    return engrave_many(melodies, settings)

  def page_png(self, melody: Melody, out_path: str, settings: str,
               title: str = '') -> str:
    return page_png(melody, out_path, settings, title=title)


ENGRAVER = Verovio()
