"""MIDI file -> monophonic melody with bar structure (Nottingham MIDIs).

The Nottingham ("Montreal") MIDI files were written by abc2midi from ABC.
Facts this module relies on (checked on all 1,037 files):

* The melody is the first instrument pretty_midi reads (track 1, channel 0;
  in the 14 type-0 files, the first channel that plays).
* 480 ticks per beat.  Note-offs come one tick early (a quarter lasts 479
  ticks) and notes of chords written inside the melody are rolled: each
  chord member starts 10 ticks after the previous one.  All other onsets
  lie on a 20-tick grid (16ths, 32nds and triplets: 160, 80 ticks).  Onsets
  and ends are therefore snapped to the nearest multiple of ``GRID`` ticks
  (ties round down) after the rolled chords are merged.
* Key and time signatures are in track 0 *and* in the melody track; the
  melody track overrides track 0 (track 0 of many jigs says 4/4 while the
  melody track says 6/8).  Meta events sit one tick before a bar line
  (e.g. 7679), so their ticks are snapped to the grid too.
* Anacruses: the first note starts at tick 0 and the bar grid is shifted.
  abc2midi plays the first note of every ABC bar with velocity 105
  (other strong beats 95, the rest 80), so the bar lines are read from
  those accents; bars that begin with a rest or a tied note get bar lines
  by counting whole bars from the previous accent.  This also recovers the
  short bars at section ends (repeats are not played in these files).
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings

import mido
import pretty_midi

GRID = 20          # ticks at 480 per beat: quantization grid
ROLL_STEP = 15     # ticks: largest onset step between members of a rolled chord
ACCENT = 105       # abc2midi velocity of the first note of each bar


class MidiError(ValueError):
  """Unreadable, empty or note-less MIDI file; message ``'{path}: {reason}'``."""


@dataclasses.dataclass(frozen=True)
class Note:
  """One melody note.  Ticks at the file's resolution, seconds from its tempo map."""
  pitch: int      # MIDI pitch
  start: int      # ticks
  end: int        # ticks (exclusive)
  start_s: float  # seconds
  end_s: float    # seconds


@dataclasses.dataclass(frozen=True)
class Melody:
  """A monophonic melody with its metre.

  ``bar_lines`` holds the tick of every bar line from the first full bar's
  start to the end of the last bar: bar ``i`` spans
  ``[bar_lines[i], bar_lines[i + 1])``.  Notes before ``bar_lines[0]`` form
  the pickup (anacrusis).  Bars may be shorter than the time signature says
  (section ends); an empty tuple means a regular grid from tick 0.
  """
  name: str                                          # file stem
  notes: tuple[Note, ...]                            # sorted, monophonic
  ticks_per_beat: int
  time_signatures: tuple[tuple[int, int, int], ...]  # (tick, num, den)
  key_signatures: tuple[tuple[int, int], ...]        # (tick, key_number)
  n_overlaps: int        # notes dropped or cut to make it monophonic
  bar_lines: tuple[int, ...] = ()                    # ticks

  @property
  def pickup(self) -> int:
    """Length of the anacrusis in ticks (0 when the melody starts on a bar line)."""
    if not self.bar_lines or not self.notes:
      return 0
    return max(0, self.bar_lines[0] - self.notes[0].start)


def snap(tick: int, grid: int = GRID) -> int:
  """Nearest multiple of ``grid`` (ticks); exact halves round down."""
  return ((int(tick) + (grid - 1) // 2) // grid) * grid


def bar_ticks(numerator: int, denominator: int, ticks_per_beat: int) -> int:
  """Length of one bar in ticks (a beat = a quarter note)."""
  return numerator * ticks_per_beat * 4 // denominator


def _meta_events(mf: mido.MidiFile, melody_track: int):
  """Time and key signatures, ticks snapped, melody track overriding track 0.

  Returns:
    ``(time_signatures, key_signatures)``: sorted tuples of
    ``(tick, num, den)`` and ``(tick, key_number)``; consecutive repeats
    are dropped and the first entry is moved to tick 0.
  """
  ts, ks = {}, {}
  grid = GRID * mf.ticks_per_beat // 480 or 1
  tracks = sorted({0, melody_track})
  for i in tracks:
    tick = 0
    for msg in mf.tracks[i]:
      tick += msg.time
      if msg.type == 'time_signature':
        ts[snap(tick, grid)] = (msg.numerator, msg.denominator)
      elif msg.type == 'key_signature':
        try:
          ks[snap(tick, grid)] = pretty_midi.key_name_to_key_number(msg.key)
        except ValueError:
          pass
  if not ts:
    ts = {0: (4, 4)}
  if not ks:
    ks = {0: 0}

  def dedupe(d):
    out = []
    for t in sorted(d):
      if not out or out[-1][1:] != (d[t] if isinstance(d[t], tuple) else (d[t],)):
        val = d[t] if isinstance(d[t], tuple) else (d[t],)
        out.append((t,) + val)
    out[0] = (0,) + out[0][1:]
    return tuple(out)

  return dedupe(ts), dedupe(ks)


def _merge_rolled(raw, max_step: int):
  """Collapse rolled chords and same-onset notes to their highest pitch.

  A note joins the previous chord when it starts at most ``max_step`` ticks
  after the chord's latest member and before the chord ends.

  Args:
    raw: ``(start, end, pitch, velocity)`` in ticks (unsnapped), sorted.
    max_step: largest onset step (ticks) inside a rolled chord.

  Returns:
    ``(notes, n_dropped)``: ``(start, end, pitch, velocity)`` per chord:
    the chord's first onset and velocity, its latest end, its highest pitch.
  """
  groups, dropped = [], 0
  for s, e, p, v in raw:
    if groups and s - groups[-1][4] <= max_step and s < groups[-1][1]:
      g0, g1, gp, gv, _ = groups[-1]
      groups[-1] = (g0, max(g1, e), max(gp, p), gv, s)
      dropped += 1
    else:
      groups.append((s, e, p, v, s))
  return [g[:4] for g in groups], dropped


def _highest_per_onset(notes):
  """Keep the highest pitch (and latest end) among notes sharing an onset.

  Args:
    notes: ``(start, end, pitch)`` ticks, sorted by start.

  Returns:
    ``(notes, n_dropped)``.
  """
  out, dropped = [], 0
  for s, e, p in notes:
    if out and out[-1][0] == s:
      out[-1] = (s, max(e, out[-1][1]), max(p, out[-1][2]))
      dropped += 1
    else:
      out.append((s, e, p))
  return out, dropped


def _monophonic(notes):
  """Cut each note's end at the next onset.

  Args:
    notes: ``(start, end, pitch)`` ticks, sorted by start, unique starts.

  Returns:
    ``(notes, n_cut)``.
  """
  out, cut = [], 0
  for i, (s, e, p) in enumerate(notes):
    if i + 1 < len(notes) and notes[i + 1][0] < e:
      e = notes[i + 1][0]
      cut += 1
    if e > s:
      out.append((s, e, p))
  return out, cut


def infer_bar_lines(accents, time_signatures, first_onset: int, last_end: int,
                    ticks_per_beat: int) -> tuple[int, ...]:
  """Bar lines (ticks) from abc2midi bar accents.

  Args:
    accents: sorted onsets (ticks) of notes played with the bar accent.
    time_signatures: ``(tick, num, den)``; their ticks are bar lines too.
    first_onset, last_end: the melody's extent in ticks.
    ticks_per_beat: MIDI resolution.

  Returns:
    Sorted bar-line ticks; the first is the first full bar's start (after
    the pickup), the last is ``>= last_end`` unless the final bar is short
    (then it is ``last_end``).
  """
  def bar_len(t):
    n, d = next((n, d) for tt, n, d in reversed(time_signatures) if tt <= t)
    return bar_ticks(n, d, ticks_per_beat)

  marks = sorted({a for a in accents if first_onset <= a < last_end}
                 | {t for t, _, _ in time_signatures if first_onset < t < last_end}
                 | {first_onset})
  lines = []
  for a, b in zip(marks, marks[1:] + [None]):
    lines.append(a)
    step = bar_len(a)
    t = a + step
    stop = last_end if b is None else b
    while t < stop:
      lines.append(t)
      t += bar_len(t)
    if b is None:
      lines.append(min(t, max(last_end, lines[-1] + 1)))
  # the first accent is the first note: a pickup when the next bar is short
  if len(lines) > 2 and lines[1] - lines[0] < bar_len(lines[0]):
    lines = lines[1:]
  return tuple(lines)


def melody_from_midi_bytes(data: bytes, name: str) -> Melody:
  """Parse MIDI bytes into a :class:`Melody` (see the module docstring).

  Args:
    data: the bytes of a standard MIDI file.
    name: label used in error messages and as ``Melody.name``.

  Raises:
    MidiError: empty, corrupt or non-MIDI data, or no melody notes.
  """
  if not data:
    raise MidiError(f'{name}: empty file')
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      mf = mido.MidiFile(file=io.BytesIO(data))
      # absolute ticks of meta events are read before pretty_midi mutates mf
      tpb = mf.ticks_per_beat
      if tpb <= 0:
        raise MidiError(f'{name}: SMPTE time division is not supported')
      pm = pretty_midi.PrettyMIDI(mido_object=mido.MidiFile(file=io.BytesIO(data)))
  except MidiError:
    raise
  except Exception as e:  # mido raises OSError, EOFError, KeyError, ...
    raise MidiError(f'{name}: not a readable MIDI file ({type(e).__name__}: {e})') from e
  if not pm.instruments or not pm.instruments[0].notes:
    raise MidiError(f'{name}: no notes')
  melody_track = _melody_track(mf)
  time_sigs, key_sigs = _meta_events(mf, melody_track)
  grid = GRID * tpb // 480 or 1
  raw = sorted((pm.time_to_tick(n.start), pm.time_to_tick(n.end) + 1, n.pitch,
                n.velocity) for n in pm.instruments[0].notes)
  merged, dropped = _merge_rolled(raw, max_step=ROLL_STEP * tpb // 480)
  accents = sorted({snap(s, grid) for s, _, _, v in merged if v == ACCENT})
  snapped = [(snap(s, grid), snap(e, grid), p) for s, e, p, _ in merged]
  snapped = [(s, max(e, s + grid), p) for s, e, p in snapped]
  unique, dropped2 = _highest_per_onset(snapped)
  mono, cut = _monophonic(unique)
  notes = tuple(Note(p, s, e, float(pm.tick_to_time(s)), float(pm.tick_to_time(e)))
                for s, e, p in mono)
  bars = infer_bar_lines(accents, time_sigs, notes[0].start, notes[-1].end, tpb)
  return Melody(name=name, notes=notes, ticks_per_beat=tpb,
                time_signatures=time_sigs, key_signatures=key_sigs,
                n_overlaps=dropped + dropped2 + cut, bar_lines=bars)


def _melody_track(mf: mido.MidiFile) -> int:
  """Index of the first track with a note-on (pretty_midi's first instrument)."""
  for i, track in enumerate(mf.tracks):
    if any(m.type == 'note_on' and m.velocity > 0 for m in track):
      return i
  return 0


def piece_name(path) -> str:
  """The name of the piece in a MIDI file: the file name without extension,
  e.g. 'ashover_simple_chords_11'."""
  return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def read_melody(path) -> Melody:
  """Read a MIDI file's melody.

  Args:
    path: str or path-like to a ``.mid`` file.

  Raises:
    MidiError: message ``'{path}: {reason}'``.
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise MidiError(f'{path}: {e.strerror or e}') from e
  try:
    mel = melody_from_midi_bytes(data, str(path))
  except MidiError:
    raise
  return dataclasses.replace(mel, name=piece_name(path))
