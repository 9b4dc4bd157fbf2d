"""ABC tune books -> MIDI files in the form this pipeline reads.

Two tune books of the ``music21`` corpus are used for training and validation
beside Nottingham (``COLLECTIONS``): O'Neill's *Music of Ireland* (1850
tunes, ``oneills1850``) and Aird's *Selection of Scotch, English, Irish and
Foreign Airs* (``airdsAirs``).  Every other collection of that corpus is
reserved for independent evaluation and is never read here.

A tune becomes one MIDI file shaped like the Nottingham files
(``data_prep.melody`` reads both the same way):

* type 1, 480 ticks per beat, 120 quarter notes per minute (the Nottingham
  tempo; a book's own ``Q:`` is ignored, so all collections are played the
  same way and differ only in how they are written);
* track 0: tempo, time and key signatures (a mode's signature as the major
  key with the same sharps or flats), the title;
* track 1: the melody, program 0, the first note of every bar with velocity
  ``melody.ACCENT`` (105), other notes 80, note-offs one tick early, as
  abc2midi writes them, so bar lines are recovered from the accents.

Accidentals hold to the end of their bar (read as ABC 2.1, as printed
music is read; music21 would read these files as ABC 1.3 and let an
accidental apply to its own note only).  Repeats are expanded the usual way
(``abc_reading.play_order``): each ``|: ... :|``
twice, first and second endings in turn, a pickup repeated with its strain,
and a strain closed by ``:|`` alone repeated from the end of the previous
repeat (music21's own ``expandRepeats`` would go back to the start of the
tune there, playing the first strain again in most of Aird's tunes).  Grace notes are dropped; tied notes are merged; a chord
inside the melody keeps its highest note (counted in the report).  A tune is
skipped, with the reason, when it cannot be read unambiguously: a jump this
conversion does not play (D.C., D.S., segno, coda, Fine, named in the tune or
its notes), several voices, repeats that do not expand (an unmatched
``|:``, endings out of order), a bar holding more than its time signature,
no meter, or no notes.  ``convert_book`` returns one ``Tune`` per tune of
the book, converted or skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Iterator, Sequence

import mido

from data_prep import abc_reading
from data_prep import melody as melody_lib
from data_prep.abc_reading import ConversionError

TICKS_PER_BEAT = 480
TEMPO_QPM = 120
OTHER_VELOCITY = 80


@dataclasses.dataclass(frozen=True)
class Collection:
  """A tune book of the music21 corpus used for training and validation.

  Attributes:
    name: the collection's name in this project (file prefix, TFDS config
      prefix), e.g. 'oneills'.
    corpus_dir: its folder in music21's corpus.
    title: for reports and the README.
    volume_in_name: the book comes in several files, one per volume (Aird's
      six), and a tune's name says which (``tune_name``).
  """
  name: str
  corpus_dir: str
  title: str
  volume_in_name: bool


COLLECTIONS = {
    'oneills': Collection('oneills', 'oneills1850',
                          "O'Neill's Music of Ireland (1850 tunes, 1903)",
                          volume_in_name=False),
    'airds': Collection('airds', 'airdsAirs',
                        "Aird's Selection of Scotch, English, Irish and "
                        'Foreign Airs (6 volumes, 1778-1803)',
                        volume_in_name=True),
}


@dataclasses.dataclass
class Tune:
  """One tune of a book: a row of the conversion report.

  ``notes`` (start, end, pitch in ticks; not in the report) and the MIDI
  bytes are set when it converted.
  """
  collection: str
  file: str                # the book file, relative to the corpus folder
  number: str              # X: field
  title: str
  name: str                # file stem, e.g. 'oneills_0001'
  status: str = 'ok'       # 'ok' or 'skipped'
  reason: str = ''
  duplicate_of: str = ''   # an earlier tune of the same id (skipped)
  n_notes: int = 0
  n_bars: int = 0
  n_chords: int = 0        # chords reduced to their highest note
  n_grace: int = 0         # grace notes dropped
  seconds: float = 0.0
  midi: bytes = dataclasses.field(default=b'', repr=False)
  pitches: tuple[int, ...] = dataclasses.field(default=(), repr=False)

  def row(self) -> dict:
    """The report row (no MIDI bytes, no notes)."""
    return {k: v for k, v in dataclasses.asdict(self).items()
            if k not in ('midi', 'pitches')}


def corpus_root() -> str:
  """music21's corpus folder.

  Raises:
    ConversionError: music21 is not installed.
  """
  try:
    import music21  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConversionError('the tune books come from the music21 package\'s '
                          'corpus: pip install music21') from e
  return os.path.join(os.path.dirname(music21.__file__), 'corpus')


def _ticks(quarter_length) -> int:
  """Quarter lengths -> ticks, rounded (tuplets off the tick grid are
  rounded; the reader snaps onsets to a 20-tick grid anyway)."""
  return int(round(float(quarter_length) * TICKS_PER_BEAT))


def _key_name(sharps: int) -> str:
  """mido's name of the major key with ``sharps`` (< 0: flats)."""
  names = {-7: 'Cb', -6: 'Gb', -5: 'Db', -4: 'Ab', -3: 'Eb', -2: 'Bb',
           -1: 'F', 0: 'C', 1: 'G', 2: 'D', 3: 'A', 4: 'E', 5: 'B', 6: 'F#',
           7: 'C#'}
  return names[max(-7, min(7, int(sharps)))]


def _events(measures):
  """Notes, bar starts, time and key signatures of bars in playing order.

  Returns:
    ``(notes, bars, time_sigs, key_sigs, n_chords, n_grace)``: notes
    ``(start, end, pitch)`` sorted and monophonic; bar start ticks;
    ``(tick, num, den)``; ``(tick, sharps)``.

  Raises:
    ConversionError: no meter, a bar longer than its time signature, or no
      notes.
  """
  from music21 import chord, meter, key, note  # pylint: disable=g-import-not-at-top
  notes, bars, time_sigs, key_sigs = [], [], [], []
  n_chords = n_grace = 0
  ts, start = None, 0
  for m in measures:
    for t in m.getElementsByClass(meter.TimeSignature):
      ts = (t.numerator, t.denominator)
      if ts[1] & (ts[1] - 1) or not 0 < ts[0] < 256:
        raise ConversionError(f'time signature {ts[0]}/{ts[1]} (MIDI '
                              'needs a power-of-two denominator)')
      if not time_sigs or time_sigs[-1][1:] != ts:
        time_sigs.append((start + _ticks(t.offset), *ts))
    for k in m.getElementsByClass((key.KeySignature, key.Key)):
      if not key_sigs or key_sigs[-1][1] != k.sharps:
        key_sigs.append((start + _ticks(k.offset), int(k.sharps)))
    if ts is None:
      raise ConversionError('no meter (M: none or missing)')
    bar_len = melody_lib.bar_ticks(ts[0], ts[1], TICKS_PER_BEAT)
    length = _ticks(m.duration.quarterLength)
    if length > bar_len:
      raise ConversionError(
          f'bar {m.number} holds {length / TICKS_PER_BEAT:g} quarters, more '
          f'than its {ts[0]}/{ts[1]}')
    bars.append(start)
    for n in m.notesAndRests:
      if n.duration.isGrace or n.duration.quarterLength == 0:
        n_grace += isinstance(n, (note.Note, chord.Chord))
        continue
      s = start + _ticks(n.offset)
      e = s + _ticks(n.duration.quarterLength)
      if isinstance(n, chord.Chord):
        n_chords += 1
        pitch = max(p.midi for p in n.pitches)
        tie = n.tie
      elif isinstance(n, note.Note):
        pitch, tie = n.pitch.midi, n.tie
      else:
        continue
      if (tie is not None and tie.type in ('stop', 'continue') and notes
          and notes[-1][2] == pitch and notes[-1][1] == s):
        notes[-1] = (notes[-1][0], e, pitch)
      else:
        notes.append((s, e, pitch))
    start += length
  if not notes:
    raise ConversionError('no notes')
  if not key_sigs:
    key_sigs = [(0, 0)]
  notes.sort()
  mono = []
  for s, e, p in notes:
    if mono and mono[-1][0] == s:   # same onset: keep the highest
      if p > mono[-1][2]:
        mono[-1] = (s, max(e, mono[-1][1]), p)
      continue
    if mono and mono[-1][1] > s:
      mono[-1] = (mono[-1][0], s, mono[-1][2])
    mono.append((s, e, p))
  return mono, bars, time_sigs, key_sigs, n_chords, n_grace


def midi_bytes(notes, bars, time_sigs, key_sigs, title: str) -> bytes:
  """A type-1 MIDI file in the Nottingham form (see the module doc).

  Args:
    notes: ``(start, end, pitch)`` ticks at 480 per beat, monophonic.
    bars: bar start ticks (the first note of each gets the accent).
    time_sigs: ``(tick, num, den)``; key_sigs: ``(tick, sharps)``.
    title: track 0's name.
  """
  import io  # pylint: disable=g-import-not-at-top
  conductor = [(0, mido.MetaMessage('track_name', name=title[:60] or 'tune')),
               (0, mido.MetaMessage('set_tempo',
                                    tempo=mido.bpm2tempo(TEMPO_QPM)))]
  for t, n, d in time_sigs:
    conductor.append((t, mido.MetaMessage('time_signature', numerator=n,
                                          denominator=d)))
  for t, sharps in key_sigs:
    conductor.append((t, mido.MetaMessage('key_signature',
                                          key=_key_name(sharps))))
  bar_set = set(bars)
  melody = [(0, mido.Message('program_change', program=0, channel=0))]
  for s, e, p in notes:
    v = melody_lib.ACCENT if s in bar_set else OTHER_VELOCITY
    melody.append((s, mido.Message('note_on', note=p, velocity=v)))
    melody.append((max(s + 1, e - 1), mido.Message('note_off', note=p,
                                                   velocity=0)))
  mf = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
  for events in (conductor, melody):
    track = mido.MidiTrack()
    now = 0
    # note-offs before note-ons at the same tick
    for t, msg in sorted(events, key=lambda e: (e[0], e[1].type == 'note_on')):
      track.append(msg.copy(time=t - now))
      now = t
    track.append(mido.MetaMessage('end_of_track', time=0))
    mf.tracks.append(track)
  out = io.BytesIO()
  mf.save(file=out)
  return out.getvalue()


def _title(tune: str) -> str:
  m = re.search(r'^T:\s*(.*)$', tune, re.M)
  return m.group(1).strip() if m else ''


def tune_name(collection: Collection, file: str, number: str) -> str:
  """The file stem of a tune, e.g. 'oneills_0001', 'airds_b1_0001'."""
  num = re.sub(r'\W', '', number) or '0'
  num = num.zfill(4)
  if collection.volume_in_name:
    book = re.sub(r'\D', '', os.path.splitext(os.path.basename(file))[0])
    return f'{collection.name}_b{book}_{num}'
  return f'{collection.name}_{num}'


def convert_tune(collection: Collection, file: str, number: str,
                 text: str) -> Tune:
  """One tune's ABC text -> a ``Tune``, converted or skipped with the reason.

  Args:
    collection: its book.
    file: the book file (for the report).
    number: its ``X:``.
    text: the tune's ABC (with the book's header).
  """
  tune = Tune(collection=collection.name, file=file, number=number,
              title=_title(text), name=tune_name(collection, file, number))
  try:
    abc_reading.check_text(text.split('X:', 1)[-1])
    score = abc_reading.parse(text)
    parts = list(score.parts) if hasattr(score, 'parts') else []
    if len(parts) > 1:
      raise ConversionError(f'{len(parts)} parts')
    part = parts[0] if parts else score
    abc_reading.check_bars(text, part)
    notes, bars, time_sigs, key_sigs, n_chords, n_grace = _events(
        abc_reading.expand(part))
  except ConversionError as e:
    tune.status, tune.reason = 'skipped', str(e)
    return tune
  tune.midi = midi_bytes(notes, bars, time_sigs, key_sigs, tune.title)
  # read back as the pipeline will, so what is screened and split is what
  # is trained on
  try:
    back = melody_lib.melody_from_midi_bytes(tune.midi, tune.name)
  except melody_lib.MidiError as e:
    tune.status, tune.midi = 'skipped', b''
    tune.reason = f'the MIDI written does not read back: {e}'
    return tune
  tune.n_notes, tune.n_bars = len(notes), len(bars)
  tune.n_chords, tune.n_grace = n_chords, n_grace
  tune.seconds = notes[-1][1] / TICKS_PER_BEAT * 60.0 / TEMPO_QPM
  tune.pitches = tuple(n.pitch for n in back.notes)
  return tune


def book_files(collection: Collection, root: str | None = None) -> list[str]:
  """The collection's ``.abc`` files, relative to the corpus, sorted."""
  root = root or corpus_root()
  d = os.path.join(root, collection.corpus_dir)
  if not os.path.isdir(d):
    raise ConversionError(f'{d}: no such folder (music21 without its '
                          'corpus?)')
  return sorted(os.path.join(collection.corpus_dir, f) for f in os.listdir(d)
                if f.endswith('.abc'))


def iter_tunes(collection: Collection, root: str | None = None,
               limit: int | None = None) -> Iterator[tuple[str, str, str]]:
  """``(file, number, text)`` of every tune of a collection, in book order."""
  root = root or corpus_root()
  n = 0
  for rel in book_files(collection, root):
    with open(os.path.join(root, rel), encoding='utf-8',
              errors='replace') as f:
      text = f.read()
    for number, tune in abc_reading.split_tunes(text):
      if limit is not None and n >= limit:
        return
      n += 1
      yield rel, number, tune


def _convert_task(task):
  name, rel, number, text = task
  try:
    return convert_tune(COLLECTIONS[name], rel, number, text)
  except Exception as e:  # a bug here, not a fact about the tune: name it
    raise RuntimeError(f'{rel} X:{number}: conversion failed: '
                       f'{type(e).__name__}: {e}') from e


def convert_collection(collection: Collection, root: str | None = None,
                       limit: int | None = None, workers: int = 1,
                       progress: bool = True) -> list[Tune]:
  """Every tune of a collection, converted or skipped, in book order.

  A tune whose id (``tune_name``) an earlier one already has is skipped as a
  duplicate of it: O'Neill's files overlap (two transcriptions of tunes
  1116-1135, for instance) and the first file's is kept.
  """
  import multiprocessing  # pylint: disable=g-import-not-at-top
  import tqdm  # pylint: disable=g-import-not-at-top
  tasks = [(collection.name, rel, number, text)
           for rel, number, text in iter_tunes(collection, root, limit)]
  bar = tqdm.tqdm(total=len(tasks), desc=collection.name, unit='tune',
                  disable=not progress)
  tunes = []
  with bar:
    if workers > 1:
      with multiprocessing.get_context('fork').Pool(workers) as pool:
        for t in pool.imap(_convert_task, tasks, chunksize=8):
          tunes.append(t)
          bar.update()
    else:
      for task in tasks:
        tunes.append(_convert_task(task))
        bar.update()
  seen = {}
  for t in tunes:
    if t.name in seen:
      first = seen[t.name]
      t.status, t.duplicate_of = 'skipped', first.name
      t.reason = (f'duplicate id: tune {t.number} again (first in '
                  f'{first.file})')
      t.midi = b''
    else:
      seen[t.name] = t
  return tunes


def content_hash(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def summary(tunes: Sequence[Tune]) -> dict:
  """Counts of a collection's conversion: ok, skipped by reason kind."""
  kinds: dict[str, int] = {}
  for t in tunes:
    if t.status != 'ok':
      kind = t.reason.split(':')[0].split('(')[0].strip()
      kinds[kind] = kinds.get(kind, 0) + 1
  return {'inputs': len(tunes), 'ok': sum(t.status == 'ok' for t in tunes),
          'skipped': sum(t.status != 'ok' for t in tunes),
          'skipped_by_reason': dict(sorted(kinds.items()))}
