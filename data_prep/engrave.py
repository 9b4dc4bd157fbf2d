"""Melody -> LilyPond source -> SVG -> unrolled score strip with notehead x.

Pipeline per piece:

1. :func:`lilypond_source` writes the melody as LilyPond source, one bar per
   source line, one token per note piece.  Note values are split at metrical
   boundaries (``split_segment``) and tied; triplets get ``\\tuplet 3/2``.
   Pickups and short bars (section ends, read from ``Melody.bar_lines``)
   use ``\\partial``.
2. LilyPond (binary of the PyPI ``lilypond`` package) renders it on one
   page (``ly:one-page-breaking``: ordinary line breaking, A4 systems) with
   its cairo back end, writing a PNG at ``RESOLUTION_DPI`` (20 px per staff
   space) and a PDF.  With ``-dpoint-and-click=note-event`` every notehead
   carries a link annotation ``textedit://FILE:LINE:COL:COL`` (LINE 1-based,
   COL 0-based) whose box is the notehead; tied continuation noteheads link
   to their own (continuation) tokens.  The SVG back end would give the same
   links but is about 6x slower (2.6 s vs 0.4 s for a 33-bar jig), hence
   PNG + PDF.
3. Staves are found on the PNG (rows dark over most of the width), each
   system is cut out around its middle staff line, the systems are joined
   left to right (``SYSTEM_GAP_PX`` of paper between them; the clef and key
   at each system start are kept) and the strip is box-filtered by
   5 (``unroll``) to ``frontends.STAFF_SPACE`` = 4 px between staff
   lines, the middle line centred on row ``STRIP_HEIGHT // 2``.
"""

from __future__ import annotations

import dataclasses
import fractions
import hashlib
import os
import re
import subprocess
import tempfile

import numpy as np
from PIL import Image

from dccaflax import frontends
from dccaflax.snippets import PAPER, STRIP_HEIGHT
from data_prep.melody import Melody, bar_ticks

SYSTEM_GAP_PX = frontends.SYSTEM_GAP   # px of paper between joined systems
LILYPOND_VERSION = '2.25.12'
EXECUTABLE_ENV_VAR = 'DCCAFLAX_LILYPOND'


class EngraveError(RuntimeError):
  """The piece cannot be engraved: LilyPond reported an error in the piece's
  own source (the message ends with its log tail), or its output has no
  usable staff or links.  A fact about the piece: the pipeline caches it."""


class LilyPondRunError(EngraveError):
  """LilyPond did not run through, for a reason outside the piece's source:
  a timeout, a crash or signal, a font or fontconfig error, no output files,
  a non-zero exit with no error in any source.  A fact about the machine,
  not the piece: :func:`engrave_many` retries it once on its own, and the
  pipeline never caches it, so the next run tries again."""


@dataclasses.dataclass(frozen=True)
class Engraving:
  """An unrolled score strip.

  ``noteheads[i]`` holds the x centres (px in ``strip``) of the noteheads
  linked to the onset token of ``melody.notes[i]``; exactly one for a
  correctly engraved note.
  """
  strip: np.ndarray                           # (STRIP_HEIGHT, W) uint8
  noteheads: tuple[tuple[float, ...], ...]    # px, per melody note
  source: str                                 # LilyPond source


@dataclasses.dataclass(frozen=True)
class Style:
  """LilyPond layout settings of one engraving (the defaults: its own).

  Attributes:
    staff_size: global staff size, pt; one of ``STAFF_SIZES`` (at
      ``RESOLUTION_DPI`` a staff space is ``staff_size`` px, which the strip
      box-filters by an integer).  A smaller size fits more bars per system.
    spacing_increment: ``SpacingSpanner.spacing-increment`` (space added per
      doubling of a note's duration, staff spaces; LilyPond's 1.2).
    shortest_space: ``SpacingSpanner.shortest-duration-space`` (LilyPond's
      2.0): wider spacing of the shortest notes.
    staff_thickness: ``StaffSymbol.thickness`` (staff lines; 1.0).
    stem_thickness: ``Stem.thickness`` (1.3).
    beam_thickness: ``Beam.beam-thickness`` (staff spaces; 0.48).
  """
  staff_size: int = 20
  spacing_increment: float = 1.2
  shortest_space: float = 2.0
  staff_thickness: float = 1.0
  stem_thickness: float = 1.3
  beam_thickness: float = 0.48

  def size_lines(self) -> list[str]:
    """Source lines before any ``\\paper`` block: the staff size (none for
    LilyPond's defaults, so the default engraving's source is unchanged)."""
    return ([] if self == Style() else
            [f'#(set-global-staff-size {self.staff_size})'])

  def layout_lines(self) -> list[str]:
    """Source lines after the ``\\layout`` block: the spacing and
    thicknesses (none for LilyPond's defaults)."""
    if self == Style():
      return []
    return ['\\layout { \\context { \\Score '
            f'\\override SpacingSpanner.spacing-increment = '
            f'#{self.spacing_increment:.3f} '
            f'\\override SpacingSpanner.shortest-duration-space = '
            f'#{self.shortest_space:.3f} '
            f'\\override StaffSymbol.thickness = #{self.staff_thickness:.3f} '
            f'\\override Stem.thickness = #{self.stem_thickness:.3f} '
            f'\\override Beam.beam-thickness = #{self.beam_thickness:.3f} '
            '} }']

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @property
  def px_per_space(self) -> float:
    """Staff-line distance on the PNG at ``RESOLUTION_DPI``."""
    return RESOLUTION_DPI * self.staff_size / 4 / 72.0


STAFF_SIZES = (16, 20, 24)
# Ranges of the drawn styles (uniform; ``drawn_style``).
STYLE_RANGES = {'spacing_increment': (0.8, 1.8), 'shortest_space': (1.5, 3.0),
                'staff_thickness': (0.6, 1.8), 'stem_thickness': (0.8, 2.5),
                'beam_thickness': (0.35, 0.6)}


def drawn_style(piece: str, seed: int = 0) -> Style:
  """A style drawn for a piece from its name and ``seed`` (stable across
  runs and machines): a staff size of ``STAFF_SIZES``, the rest uniform in
  ``STYLE_RANGES``."""
  digest = hashlib.sha256(f'{seed}/{piece}'.encode('utf-8')).digest()
  rng = np.random.default_rng(int.from_bytes(digest[:8], 'big'))
  return Style(staff_size=int(rng.choice(STAFF_SIZES)),
               **{k: round(float(rng.uniform(*r)), 3)
                  for k, r in STYLE_RANGES.items()})


# --------------------------------------------------------------- pitches

_SHARP_NAMES = ('c', 'cis', 'd', 'dis', 'e', 'f', 'fis', 'g', 'gis', 'a', 'ais', 'b')
_FLAT_NAMES = ('c', 'des', 'd', 'ees', 'e', 'f', 'ges', 'g', 'aes', 'a', 'bes', 'b')
_LETTER_PC = {'c': 0, 'd': 2, 'e': 4, 'f': 5, 'g': 7, 'a': 9, 'b': 11}
_FIFTHS_OF_MAJOR_PC = {0: 0, 7: 1, 2: 2, 9: 3, 4: 4, 11: 5, 6: 6, 1: -5, 8: -4, 3: -3, 10: -2, 5: -1}
_MAJOR_TONIC = {-5: 'des', -4: 'aes', -3: 'ees', -2: 'bes', -1: 'f', 0: 'c', 1: 'g',
                2: 'd', 3: 'a', 4: 'e', 5: 'b', 6: 'fis'}
_MINOR_TONIC = {-5: 'bes', -4: 'f', -3: 'c', -2: 'g', -1: 'd', 0: 'a', 1: 'e',
                2: 'b', 3: 'fis', 4: 'cis', 5: 'gis', 6: 'dis'}
_SHARP_ORDER = 'fcgdaeb'


def key_fifths(key_number: int) -> int:
  """Sharps (> 0) or flats (< 0) of a pretty_midi key number (0-11 major, 12-23 minor)."""
  pc = key_number % 12
  major_pc = pc if key_number < 12 else (pc + 3) % 12
  return _FIFTHS_OF_MAJOR_PC[major_pc]


def key_command(key_number: int) -> str:
  """LilyPond ``\\key`` command, e.g. ``\\key d \\major``."""
  f = key_fifths(key_number)
  if key_number < 12:
    return f'\\key {_MAJOR_TONIC[f]} \\major'
  return f'\\key {_MINOR_TONIC[f]} \\minor'


def pitch_name(pitch: int, fifths: int) -> str:
  """LilyPond absolute pitch (``c'`` = MIDI 60) spelled for a key signature."""
  pc = pitch % 12
  names = _SHARP_NAMES if fifths >= 0 else _FLAT_NAMES
  name = names[pc]
  if fifths >= 0:
    sharps = set(_SHARP_ORDER[:fifths])
    # e sharp / b sharp in keys that sharpen f / c
    if pc == 5 and 'e' in sharps and fifths >= 6:
      name = 'eis'
  else:
    flats = set(_SHARP_ORDER[::-1][:-fifths])
    if pc == 11 and 'c' in flats:
      name = 'ces'
  alt = name.count('is') - name.count('es')
  natural = _LETTER_PC[name[0]]
  octave = (pitch - alt - natural) // 12 - 4   # 0 -> c (MIDI 48), 1 -> c'
  return name + ("'" * octave if octave > 0 else ',' * -octave)


# ------------------------------------------------------------- durations

def _base_durations(tpb: int) -> dict[int, str]:
  """Representable lengths (ticks) -> LilyPond duration, plain and dotted."""
  out = {}
  for k, tok in ((1, '1'), (2, '2'), (4, '4'), (8, '8'), (16, '16'), (32, '32'), (64, '64')):
    d = fractions.Fraction(4 * tpb, k)
    if d.denominator == 1:
      out.setdefault(int(d), tok)
      dd = d * 3 / 2
      if dd.denominator == 1:
        out.setdefault(int(dd), tok + '.')
  return out


def duration_token(ticks: int, tpb: int) -> str:
  """LilyPond duration for a length in ticks (``'4.'``; ``'16*5'`` if not a note value)."""
  table = _base_durations(tpb)
  if ticks in table:
    return table[ticks]
  for k in (64, 32, 16, 8, 4, 2, 1):
    unit = fractions.Fraction(4 * tpb, k)
    if unit.denominator == 1 and ticks % int(unit) == 0:
      return f'{k}*{ticks // int(unit)}'
  f = fractions.Fraction(ticks, 4 * tpb)
  return f'1*{f.numerator}/{f.denominator}'


def metre_levels(num: int, den: int, tpb: int) -> list[int]:
  """Metrical grid sizes (ticks), coarse to fine, starting with the bar.

  Simple metres: bar, half bar (4/4), beat, then halves.  Compound metres
  (6/8, 9/8, 12/8, 6/4): bar, half bar (12/8, 6/x), dotted beat, unit, halves.
  """
  bar = bar_ticks(num, den, tpb)
  unit = 4 * tpb // den
  compound = num % 3 == 0 and num > 3
  levels = [bar]
  if compound:
    beat = 3 * unit
    if num in (6, 12) and den == 4 or num == 12:
      levels.append(bar // 2)
    levels += [beat, unit]
  else:
    if num == 4:
      levels.append(bar // 2)
    levels.append(unit)
  g = levels[-1]
  while g % 2 == 0 and g // 2 >= tpb // 16:
    g //= 2
    levels.append(g)
  out = []
  for g in levels:
    if g > 0 and (not out or g < out[-1]):
      out.append(g)
  return out


def split_segment(p: int, q: int, levels: list[int], lengths) -> list[tuple[int, int]]:
  """Split ``[p, q)`` (ticks from the bar start) into notatable pieces.

  A piece may cross a metrical boundary only if it starts on a boundary of
  that level and its length is a (dotted) note value; otherwise it is cut
  at the coarsest boundary inside it (the latest such boundary that leaves a
  note value before it).  So 4/4 keeps beats 2-3 apart, 6/8 groups by
  dotted quarters.

  Args:
    p, q: piece bounds in ticks relative to the (virtual) bar start.
    levels: :func:`metre_levels` output.
    lengths: container of representable lengths (ticks).

  Returns:
    Consecutive ``(start, end)`` pieces covering ``[p, q)``.
  """
  for g in levels[1:]:
    first = (p // g + 1) * g
    if first >= q:
      continue
    if p % g == 0 and (q - p) in lengths:
      return [(p, q)]
    bounds = list(range(first, q, g))
    good = [b for b in reversed(bounds) if (b - p) in lengths]
    b = good[0] if good else bounds[0]
    return split_segment(p, b, levels, lengths) + split_segment(b, q, levels, lengths)
  return [(p, q)]


# ------------------------------------------------------------ the source

@dataclasses.dataclass
class _Piece:
  """One token: a note piece or a rest, ticks relative to the virtual bar."""
  p: int
  q: int
  note: int            # melody note index, -1 for rests
  onset: bool          # first piece of its note
  tie: bool            # tied to the next piece
  tuplet: int = -1     # tuplet span start (ticks) or -1

  @property
  def written(self) -> int:
    """Its written length in ticks (a triplet's scaled back by 3/2)."""
    d = self.q - self.p
    return d * 3 // 2 if self.tuplet >= 0 else d


def _tuplet_spans(bounds: list[int], bar_len: int, tpb: int) -> list[tuple[int, int]]:
  """Triplet spans ``[a, b)`` covering the bar positions off the binary grid.

  Args:
    bounds: event boundaries (ticks from the virtual bar start).
    bar_len: virtual bar length in ticks.

  Returns:
    Disjoint spans of length ``S`` in (eighth, quarter, half, whole),
    aligned to multiples of ``S``, whose inner boundaries are all multiples
    of ``S / 6`` (so that a 3:2 tuplet notates them).
  """
  fine = tpb // 8
  odd = sorted({b for b in bounds if b % fine})
  spans = []
  for b in odd:
    if any(a < b < e for a, e in spans):
      continue
    def fits(a, e, s):
      inner = [x for x in bounds if a < x < e]
      return e <= bar_len and all((x - a) % (s // 6) == 0 for x in inner) \
          and not any(a < sa < e or a < se < e for sa, se in spans)
    sizes = (tpb // 2, tpb, 2 * tpb, 4 * tpb)
    # prefer a span whose edges are event boundaries (no note cut at its edges)
    cands = [((b // s) * s, (b // s) * s + s, s) for s in sizes]
    clean = [c for c in cands if c[0] in bounds and c[1] in bounds and fits(*c)]
    rough = [c for c in cands if fits(*c)]
    if clean or rough:
      a, e, _ = (clean or rough)[0]
      spans.append((a, e))
  return sorted(spans)


def _bar_pieces(events, offset, bar_len, levels, tpb):
  """Tokens of one bar.

  Args:
    events: ``(start, end, note_index, onset, tie_out)`` ticks relative to
      the bar line, note_index -1 for rests.
    offset: virtual position of the bar's first tick (``\\partial`` bars
      are the tail of a full bar).
    bar_len, levels: of the time signature.

  Returns:
    List of :class:`_Piece`.
  """
  lengths = _base_durations(tpb)
  bounds = sorted({offset + s for s, _, _, _, _ in events} | {offset + e for _, e, _, _, _ in events})
  spans = _tuplet_spans(bounds, bar_len, tpb)
  cuts = sorted({x for span in spans for x in span})
  out = []
  for s, e, idx, onset, tie_out in events:
    s, e = s + offset, e + offset
    parts = [s] + [c for c in cuts if s < c < e] + [e]
    for a, b in zip(parts, parts[1:]):
      span = next((sp for sp in spans if sp[0] <= a and b <= sp[1]), None)
      if span is not None:
        t_levels = [x * 3 // 2 for x in (span[1] - span[0], (span[1] - span[0]) // 3,
                                         (span[1] - span[0]) // 6)]
        sub = split_segment((a - span[0]) * 3 // 2, (b - span[0]) * 3 // 2, t_levels, lengths)
        sub = [(span[0] + x * 2 // 3, span[0] + y * 2 // 3) for x, y in sub]
      else:
        sub = split_segment(a, b, levels, lengths)
      for x, y in sub:
        out.append(_Piece(x, y, idx, False, idx >= 0, span[0] if span else -1))
  # first piece of each note is its onset; last piece ties only if the note goes on
  for i, pc in enumerate(out):
    if pc.note < 0:
      pc.tie = False
      continue
    pc.onset = (i == 0 or out[i - 1].note != pc.note) and \
        any(ev[2] == pc.note and ev[3] and ev[0] + offset == pc.p for ev in events)
    last = i + 1 == len(out) or out[i + 1].note != pc.note
    if last:
      pc.tie = any(ev[2] == pc.note and ev[4] for ev in events)
  return out


def _token(piece: _Piece, pitch: str | None, tpb: int) -> str:
  """Source text of one piece (duration scaled back inside a tuplet)."""
  dur = duration_token(piece.written, tpb)
  if pitch is None:
    return 'r' + dur
  return pitch + dur + ('~' if piece.tie else '')


def _bars(melody: Melody):
  """Bar spans ``(start, end)`` in ticks; the first is the pickup if any."""
  notes = melody.notes
  lines = list(melody.bar_lines)
  if not lines:
    n, d = melody.time_signatures[0][1:]
    L = bar_ticks(n, d, melody.ticks_per_beat)
    lines = list(range(0, notes[-1].end + L, L))
    while len(lines) > 1 and lines[-2] >= notes[-1].end:
      lines.pop()
  start = min(notes[0].start, lines[0])
  spans = []
  if start < lines[0]:
    spans.append((start, lines[0]))
  spans += list(zip(lines, lines[1:]))
  return [(a, b) for a, b in spans if b > a]


def _signature_at(items, t):
  """Last ``(tick, ...)`` item with tick <= t (the first item otherwise)."""
  cur = items[0]
  for it in items:
    if it[0] <= t:
      cur = it
  return cur


@dataclasses.dataclass(frozen=True)
class Bar:
  """One bar of the notation, engraver-neutral (see :func:`layout`).

  Attributes:
    time: ``(numerator, denominator)`` in force.
    key: pretty_midi key number in force.
    new_time, new_key: whether the bar changes them (the first bar does
      not: its signatures open the score).
    length: the bar's length in ticks (a pickup or a short section end is
      shorter than the metre's ``bar_ticks``, a long bar longer).
    offset: virtual position of its first tick (a pickup is the tail of a
      full bar: ``offset = bar_ticks - length``), else 0.
    pieces: its tokens, notes and rests, in order (``_Piece``; ticks are
      virtual bar positions).
    last: the final bar.
  """
  time: tuple[int, int]
  key: int
  new_time: bool
  new_key: bool
  length: int
  offset: int
  pieces: tuple[_Piece, ...]
  last: bool


def clef(melody: Melody) -> str:
  """'bass' if most notes lie below middle C, else 'treble'."""
  below = sum(n.pitch < 60 for n in melody.notes)
  return 'bass' if below * 2 > len(melody.notes) else 'treble'


def layout(melody: Melody) -> list[Bar]:
  """The melody as bars of notatable tokens: one layout for every engraver.

  Notes are clipped to their bars (tied on), gaps become rests, each piece
  is split at metrical boundaries (:func:`split_segment`) and triplets get
  tuplet spans, so every token is a plain or dotted note value.

  Raises:
    ValueError: the melody has no notes, or a note got no onset token.
  """
  tpb = melody.ticks_per_beat
  notes = melody.notes
  if not notes:
    raise ValueError(f'{melody.name}: no notes')
  cur_ts = melody.time_signatures[0][1:]
  cur_key = melody.key_signatures[0][1]
  spans = _bars(melody)
  out, ni = [], 0
  seen = set()
  for bi, (a, b) in enumerate(spans):
    ts = _signature_at(melody.time_signatures, a)[1:]
    key = _signature_at(melody.key_signatures, a)[1]
    new_ts, new_key = ts != cur_ts, key != cur_key
    cur_ts, cur_key = ts, key
    L = bar_ticks(ts[0], ts[1], tpb)
    d = b - a
    is_last = bi + 1 == len(spans)
    offset = L - d if d < L and not (is_last and bi > 0) else 0
    # events of this bar: notes clipped to [a, b), rests in the gaps
    events, t = [], a
    while ni < len(notes) and notes[ni].end <= a:
      ni += 1
    j = ni
    while j < len(notes) and notes[j].start < b:
      n = notes[j]
      s, e = max(n.start, a), min(n.end, b)
      if s > t:
        events.append((t - a, s - a, -1, False, False))
      events.append((s - a, e - a, j, n.start >= a, n.end > b))
      t = e
      j += 1
    if t < b and not (is_last and t > a):
      events.append((t - a, b - a, -1, False, False))
    pieces = _bar_pieces(events, offset, L, metre_levels(*ts, tpb), tpb)
    seen.update(pc.note for pc in pieces if pc.note >= 0 and pc.onset)
    out.append(Bar(time=ts, key=key, new_time=new_ts, new_key=new_key,
                   length=d, offset=offset, pieces=tuple(pieces),
                   last=is_last))
  missing = [i for i in range(len(notes)) if i not in seen]
  if missing:
    raise ValueError(f'{melody.name}: notes without onset token: {missing[:5]}')
  return out


def lilypond_source(melody: Melody, style: Style = Style()
                    ) -> tuple[str, list[tuple[int, int]]]:
  """LilyPond source of a melody (its :func:`layout`, one bar per line).

  Args:
    melody: a :class:`~data_prep.melody.Melody`.
    style: layout settings (default: LilyPond's own).

  Returns:
    ``(source, positions)``: ``positions[i]`` is the ``(line, column)`` of
    the onset token of ``melody.notes[i]`` (line 1-based, column 0-based,
    as in LilyPond's textedit links).
  """
  tpb = melody.ticks_per_beat
  notes = melody.notes
  bars = layout(melody)
  lines = [
      f'\\version "{LILYPOND_VERSION}"',
      *style.size_lines(),
      '\\header { tagline = ##f }',
      '\\paper { page-breaking = #ly:one-page-breaking indent = 0 '
      'print-page-number = ##f }',
      '\\layout { \\context { \\Score \\remove "Bar_number_engraver" } }',
      *style.layout_lines(),
      '{',
  ]
  positions: list[tuple[int, int] | None] = [None] * len(notes)
  first = bars[0]
  lines.append(f'  \\clef {clef(melody)} {key_command(first.key)} '
               f'\\time {first.time[0]}/{first.time[1]}')
  for bar in bars:
    cmds = []
    if bar.new_time:
      cmds.append(f'\\time {bar.time[0]}/{bar.time[1]}')
    if bar.new_key:
      cmds.append(key_command(bar.key))
    fifths = key_fifths(bar.key)
    L = bar_ticks(*bar.time, tpb)
    if bar.offset:
      cmds.append(f'\\partial {duration_token(bar.length, tpb)}')
    elif bar.length > L:
      cmds.append('\\set Timing.measureLength = '
                  f'#(ly:make-moment {bar.length}/{4 * tpb})')
    text = '  ' + (' '.join(cmds) + ' ' if cmds else '')
    open_tuplet = -1
    for pc in bar.pieces:
      if pc.tuplet != open_tuplet:
        if open_tuplet >= 0:
          text += '} '
        if pc.tuplet >= 0:
          text += '\\tuplet 3/2 { '
        open_tuplet = pc.tuplet
      if pc.note >= 0 and pc.onset:
        positions[pc.note] = (len(lines) + 1, len(text))
      pitch = pitch_name(notes[pc.note].pitch, fifths) if pc.note >= 0 else None
      text += _token(pc, pitch, tpb) + ' '
    if open_tuplet >= 0:
      text += '} '
    if bar.length > L:
      text += f'\\set Timing.measureLength = #(ly:make-moment {L}/{4 * tpb}) '
    text += '|' if not bar.last else '\\bar "|."'
    lines.append(text)
  lines.append('}')
  return '\n'.join(lines) + '\n', positions  # type: ignore[return-value]


# ------------------------------------------------------------- rendering

RESOLUTION_DPI = 288      # LilyPond PNG resolution: 20 px per staff space
STAFF_SPACE_PT = 5.0      # staff size 20 pt = 4 staff spaces
_HI_PX_PER_SPACE = RESOLUTION_DPI * STAFF_SPACE_PT / 72.0
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


def find_staves(page: np.ndarray, spacing: float = _HI_PX_PER_SPACE):
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
           px_per_space: float = _HI_PX_PER_SPACE):
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


def link_heads(links, positions):
  """``(note_index, x, y)`` of the :func:`pdf_links` that point at a note's
  onset token (``positions``, from :func:`lilypond_source`)."""
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
    strip, heads = unroll(page, find_staves(page, style.px_per_space),
                          link_heads(links, positions), len(melody.notes),
                          style.px_per_space)
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
