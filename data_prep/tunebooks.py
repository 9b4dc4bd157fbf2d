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
accidental apply to its own note only).  Repeats are expanded the usual way (``play_order``): each ``|: ... :|``
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
import warnings
from typing import Iterator, Sequence

import mido
import numpy as np

from data_prep import melody as melody_lib

TICKS_PER_BEAT = 480
TEMPO_QPM = 120
OTHER_VELOCITY = 80
ABC_VERSION_LINE = '%abc-2.1\n'


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


class ConversionError(ValueError):
  """A tune that cannot be converted unambiguously; the message says why."""


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


_X_RE = re.compile(r'^X:\s*(\S*)', re.M)


def split_tunes(text: str) -> list[tuple[str, str]]:
  """A book's text -> ``(number, tune text)`` per ``X:`` field, in order.

  The text before the first ``X:`` (the book's header) is put in front of
  every tune, so book-wide fields apply to each.
  """
  starts = [m.start() for m in _X_RE.finditer(text)]
  if not starts:
    return []
  header = text[:starts[0]]
  out = []
  for a, b in zip(starts, starts[1:] + [len(text)]):
    tune = text[a:b]
    out.append((_X_RE.match(tune).group(1), header + tune))
  return out


# Jumps this conversion does not play.  Searched in the tune's notes and
# comments as well as its body: a transcriber's note that the book uses a
# da capo means the written repeats are not the whole form.
_JUMP_RE = re.compile(r'D\.\s?C\.|D\.\s?S\.|da\s+capo|dal\s+segno|segno|'
                      r'\bcoda\b|\bFine\b|!D\.[CS]|!fine!', re.I)


def _words(tune: str) -> list[str]:
  """The tune's text that is not notes: field and comment lines, comments
  after notes, quoted annotations and ``!decorations!`` (so staccato notes
  such as ``.D.C.`` are not read as a da capo)."""
  out = []
  for line in tune.split('\n'):
    if re.match(r'^\s*(%|[A-Za-z]:)', line):
      out.append(line.strip())
      continue
    notes, _, comment = line.partition('%')
    if comment:
      out.append('%' + comment.strip())
    out.extend(re.findall(r'"[^"]*"|![^!\s]*!', notes))
  return out


def _check_text(tune: str) -> None:
  """Raises ConversionError for jumps and several voices."""
  for words in _words(tune):
    m = _JUMP_RE.search(words)
    if m:
      raise ConversionError(f'a jump ({m.group(0)!r}) this conversion does '
                            f'not expand: {words[:80]!r}')
  voices = set(re.findall(r'^V:\s*(\S+)', tune, re.M))
  if len(voices) > 1:
    raise ConversionError(f'{len(voices)} voices (V: {sorted(voices)})')


def _parse(tune: str):
  import music21  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    try:
      # As ABC 2.1 (music21 reads a tune without a version line as ABC
      # 1.3): an accidental holds to the end of its bar for the same
      # pitch, as in the printed books these were transcribed from.
      score = music21.converter.parse(ABC_VERSION_LINE + tune, format='abc')
    except Exception as e:  # music21 raises many kinds
      raise ConversionError(f'unreadable ABC ({type(e).__name__}: '
                            f'{str(e)[:120]})') from e
  if isinstance(score, music21.stream.Opus):
    raise ConversionError('several tunes under one X: field')
  return score


def _check_bars(tune: str, part) -> None:
  """Bars music21 re-barred (a written bar longer than its time signature
  is split by music21) or no bars at all.

  Raises:
    ConversionError: naming the counts.
  """
  from music21 import abcFormat  # pylint: disable=g-import-not-at-top
  handler = abcFormat.ABCHandler(abcVersion=(2, 1, 0))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    handler.process(ABC_VERSION_LINE + tune)
    written = sum(1 for b in handler.splitByMeasure() if b.hasNotes())
  made = len(part.getElementsByClass('Measure'))
  if not made:
    raise ConversionError(f'no bars music21 can read ({written} written)')
  if made > written:
    raise ConversionError(
        f'bars longer than their time signature: music21 re-bars the '
        f'{written} written bars into {made}')


def _brackets(part) -> dict[int, tuple[int, ...]]:
  """Measure index -> the ending numbers of its first/second-ending bracket.

  Raises:
    ConversionError: an ending numbered other than 1 or 2.
  """
  from music21 import spanner  # pylint: disable=g-import-not-at-top
  index = {id(m): i for i, m in enumerate(
      part.getElementsByClass('Measure'))}
  out = {}
  for rb in part.spannerBundle.getByClass(spanner.RepeatBracket):
    try:
      numbers = tuple(sorted({int(x) for x in re.split(
          r'[,\s]+', str(rb.number).strip()) if x}))
    except ValueError:
      numbers = ()
    if not numbers or not set(numbers) <= {1, 2}:
      raise ConversionError(f'ambiguous repeat: an ending numbered '
                            f'{rb.number!r}')
    for m in rb.getSpannedElements():
      if id(m) in index:
        out[index[id(m)]] = numbers
  return out


def play_order(starts: Sequence[bool], ends: Sequence[bool],
               endings: dict[int, tuple[int, ...]]) -> list[int]:
  """The order bars are played in, repeats expanded the usual way.

  A ``:|`` goes back to the last ``|:``; where there is none since the
  previous repeat's end (a strain closed by ``:|`` alone), to the bar after
  that end, or to the start.  Each repeat is played twice; on the second
  time, first-ending bars are skipped and second-ending bars played.

  Args:
    starts: per written bar, whether it opens with ``|:``.
    ends: per written bar, whether it closes with ``:|``.
    endings: bar index -> its ending numbers, (1,), (2,) or (1, 2).

  Returns:
    Indices of the written bars in playing order.

  Raises:
    ConversionError: a ``|:`` inside an open repeat, a ``|:`` never closed,
      a second ending before its first, or a ``:|`` inside a second time
      through.
  """
  n = len(starts)
  order, start, i = [], 0, 0
  second, loop_end, open_start = False, -1, None
  while i < n:
    if second and i > loop_end and i not in endings:
      second, start = False, i        # the repeat is over
    if starts[i] and not second:
      if open_start is not None and open_start != i:
        raise ConversionError(f'ambiguous repeat: |: in bar {i + 1} while '
                              f'the |: of bar {open_start + 1} is open')
      start = open_start = i
    ending = endings.get(i)
    if ending is not None:
      if not second and 1 not in ending:
        raise ConversionError(f'ambiguous repeat: second ending in bar '
                              f'{i + 1} before its first ending is played')
      if second and 2 not in ending:
        i += 1
        continue
    order.append(i)
    if ends[i]:
      if not second:
        second, loop_end, open_start = True, i, None
        i = start
        continue
      if i != loop_end and ending is None:
        raise ConversionError(f'ambiguous repeat: :| in bar {i + 1} on the '
                              'second time through another repeat')
      second, start = False, i + 1
    i += 1
  if open_start is not None:
    raise ConversionError(f'ambiguous repeat: |: in bar {open_start + 1} is '
                          'never closed')
  return order


def _expand(part) -> list:
  """The part's bars in playing order (``play_order``), as music21
  measures (a repeated bar appears twice).

  Raises:
    ConversionError: ambiguous repeats (``play_order``), or an expansion
      that plays some bar more than twice (a safety net: plain repeats and
      endings play each written bar once or twice).
  """
  from music21 import bar  # pylint: disable=g-import-not-at-top
  measures = list(part.getElementsByClass('Measure'))
  starts = [isinstance(m.leftBarline, bar.Repeat)
            and m.leftBarline.direction == 'start' for m in measures]
  ends = [isinstance(m.rightBarline, bar.Repeat)
          and m.rightBarline.direction == 'end' for m in measures]
  order = play_order(starts, ends, _brackets(part))
  if len(order) > 2 * len(measures):
    raise ConversionError(f'ambiguous repeat: the repeats expand '
                          f'{len(measures)} written bars to {len(order)}')
  return [measures[i] for i in order]


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
    _check_text(text.split('X:', 1)[-1])
    score = _parse(text)
    parts = list(score.parts) if hasattr(score, 'parts') else []
    if len(parts) > 1:
      raise ConversionError(f'{len(parts)} parts')
    part = parts[0] if parts else score
    _check_bars(text, part)
    notes, bars, time_sigs, key_sigs, n_chords, n_grace = _events(
        _expand(part))
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
    for number, tune in split_tunes(text):
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
