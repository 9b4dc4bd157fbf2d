"""A melody's LilyPond source, in a layout :class:`Style`.

:func:`lilypond_source` writes the melody's engraver-neutral
:func:`~data_prep.engraving.notation.layout` as LilyPond source, one bar
per source line, one token per note piece: pieces split at metrical
boundaries are tied, triplets get ``\\tuplet 3/2``, pickups and short bars
``\\partial``.  It also says where each note's onset token is, which
LilyPond's point-and-click links point back to (``lilypond``).
"""

from __future__ import annotations

import dataclasses
import fractions
import hashlib

import numpy as np

from data_prep.engraving import notation
from data_prep.melody import Melody, bar_ticks

LILYPOND_VERSION = '2.25.12'
RESOLUTION_DPI = 288      # LilyPond PNG resolution: 20 px per staff space


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



_MAJOR_TONIC = {-5: 'des', -4: 'aes', -3: 'ees', -2: 'bes', -1: 'f', 0: 'c', 1: 'g',
                2: 'd', 3: 'a', 4: 'e', 5: 'b', 6: 'fis'}
_MINOR_TONIC = {-5: 'bes', -4: 'f', -3: 'c', -2: 'g', -1: 'd', 0: 'a', 1: 'e',
                2: 'b', 3: 'fis', 4: 'cis', 5: 'gis', 6: 'dis'}


def key_command(key_number: int) -> str:
  """LilyPond ``\\key`` command, e.g. ``\\key d \\major``."""
  f = notation.key_fifths(key_number)
  if key_number < 12:
    return f'\\key {_MAJOR_TONIC[f]} \\major'
  return f'\\key {_MINOR_TONIC[f]} \\minor'


def duration_token(ticks: int, tpb: int) -> str:
  """LilyPond duration for a length in ticks (``'4.'``; ``'16*5'`` if not a note value)."""
  table = notation.note_values(tpb)
  if ticks in table:
    value, dots = table[ticks]
    return str(value) + '.' * dots
  for k in (64, 32, 16, 8, 4, 2, 1):
    unit = fractions.Fraction(4 * tpb, k)
    if unit.denominator == 1 and ticks % int(unit) == 0:
      return f'{k}*{ticks // int(unit)}'
  f = fractions.Fraction(ticks, 4 * tpb)
  return f'1*{f.numerator}/{f.denominator}'


def _token(piece: notation.Token, pitch: str | None, tpb: int) -> str:
  """Source text of one piece (duration scaled back inside a tuplet)."""
  dur = duration_token(piece.written, tpb)
  if pitch is None:
    return 'r' + dur
  return pitch + dur + ('~' if piece.tie else '')


def lilypond_source(melody: Melody, style: Style = Style()
                    ) -> tuple[str, list[tuple[int, int]]]:
  """LilyPond source of a melody (its :func:`notation.layout`, one bar per
  line).

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
  bars = notation.layout(melody)
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
  lines.append(f'  \\clef {notation.clef(melody)} {key_command(first.key)} '
               f'\\time {first.time[0]}/{first.time[1]}')
  for bar in bars:
    cmds = []
    if bar.new_time:
      cmds.append(f'\\time {bar.time[0]}/{bar.time[1]}')
    if bar.new_key:
      cmds.append(key_command(bar.key))
    fifths = notation.key_fifths(bar.key)
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
      pitch = (notation.pitch_name(notes[pc.note].pitch, fifths)
               if pc.note >= 0 else None)
      text += _token(pc, pitch, tpb) + ' '
    if open_tuplet >= 0:
      text += '} '
    if bar.length > L:
      text += f'\\set Timing.measureLength = #(ly:make-moment {L}/{4 * tpb}) '
    text += '|' if not bar.last else '\\bar "|."'
    lines.append(text)
  lines.append('}')
  return '\n'.join(lines) + '\n', positions  # type: ignore[return-value]
