"""Engraver-neutral notation of a melody: pitch spelling, note values,
metre and the bar-by-bar :func:`layout` every engraver writes out.

:func:`layout` clips the notes to their bars (tied on), fills the gaps
with rests, splits every piece at metrical boundaries (:func:`split_segment`)
and puts triplets in tuplet spans, so every :class:`Token` is a plain or
dotted note value (:func:`note_values`).  Pickups and short bars (section
ends, read from ``Melody.bar_lines``) are the tail of a full bar
(``Bar.offset``).  The LilyPond and Verovio engravers write the same bars.
"""

from __future__ import annotations

import dataclasses
import fractions

from data_prep.melody import Melody, bar_ticks

# --------------------------------------------------------------- pitches

_SHARP_NAMES = ('c', 'cis', 'd', 'dis', 'e', 'f', 'fis', 'g', 'gis', 'a', 'ais', 'b')
_FLAT_NAMES = ('c', 'des', 'd', 'ees', 'e', 'f', 'ges', 'g', 'aes', 'a', 'bes', 'b')
_LETTER_PC = {'c': 0, 'd': 2, 'e': 4, 'f': 5, 'g': 7, 'a': 9, 'b': 11}
_FIFTHS_OF_MAJOR_PC = {0: 0, 7: 1, 2: 2, 9: 3, 4: 4, 11: 5, 6: 6, 1: -5, 8: -4, 3: -3, 10: -2, 5: -1}
SHARP_ORDER = 'fcgdaeb'   # the order of the sharps (reversed: the flats)


def key_fifths(key_number: int) -> int:
  """Sharps (> 0) or flats (< 0) of a pretty_midi key number (0-11 major, 12-23 minor)."""
  pc = key_number % 12
  major_pc = pc if key_number < 12 else (pc + 3) % 12
  return _FIFTHS_OF_MAJOR_PC[major_pc]


def pitch_name(pitch: int, fifths: int) -> str:
  """A pitch spelled for a key signature, as a LilyPond absolute pitch
  (``c'`` = MIDI 60, ``fis''``; :func:`spelled` gives its parts)."""
  pc = pitch % 12
  names = _SHARP_NAMES if fifths >= 0 else _FLAT_NAMES
  name = names[pc]
  if fifths >= 0:
    sharps = set(SHARP_ORDER[:fifths])
    # e sharp / b sharp in keys that sharpen f / c
    if pc == 5 and 'e' in sharps and fifths >= 6:
      name = 'eis'
  else:
    flats = set(SHARP_ORDER[::-1][:-fifths])
    if pc == 11 and 'c' in flats:
      name = 'ces'
  alt = name.count('is') - name.count('es')
  natural = _LETTER_PC[name[0]]
  octave = (pitch - alt - natural) // 12 - 4   # 0 -> c (MIDI 48), 1 -> c'
  return name + ("'" * octave if octave > 0 else ',' * -octave)


def spelled(pitch: int, fifths: int) -> tuple[str, int, int]:
  """``(letter, alteration, octave)`` of a MIDI pitch spelled for a key
  (the spelling of :func:`pitch_name`); MIDI 60 = C4."""
  name = pitch_name(pitch, fifths)
  core = name.rstrip("',")
  alter = core.count('is') - core[1:].count('es')
  return name[0], alter, 3 + name.count("'") - name.count(',')


def key_alterations(fifths: int) -> dict[str, int]:
  """Alteration the key signature gives each letter."""
  if fifths >= 0:
    return {c: int(c in SHARP_ORDER[:fifths]) for c in 'abcdefg'}
  return {c: -int(c in SHARP_ORDER[::-1][:-fifths]) for c in 'abcdefg'}


# ------------------------------------------------------------- durations

def note_values(tpb: int) -> dict[int, tuple[int, int]]:
  """Representable lengths (ticks) -> ``(value, dots)``, plain and dotted
  (``(4, 1)``: a dotted quarter)."""
  out = {}
  for k in (1, 2, 4, 8, 16, 32, 64):
    d = fractions.Fraction(4 * tpb, k)
    if d.denominator == 1:
      out.setdefault(int(d), (k, 0))
      dd = d * 3 / 2
      if dd.denominator == 1:
        out.setdefault(int(dd), (k, 1))
  return out


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


# ---------------------------------------------------------------- layout

@dataclasses.dataclass
class Token:
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
    offset: virtual position of the bar's first tick (a pickup or short
      bar is the tail of a full bar).
    bar_len, levels: of the time signature.

  Returns:
    List of :class:`Token`.
  """
  lengths = note_values(tpb)
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
        out.append(Token(x, y, idx, False, idx >= 0, span[0] if span else -1))
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
    pieces: its tokens, notes and rests, in order (:class:`Token`; ticks are
      virtual bar positions).
    last: the final bar.
  """
  time: tuple[int, int]
  key: int
  new_time: bool
  new_key: bool
  length: int
  offset: int
  pieces: tuple[Token, ...]
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
