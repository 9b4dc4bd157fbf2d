"""An ABC tune's text -> its music21 part, bars in playing order.

The reading half of the tune-book conversion (``tunebooks``): a book's text
split into tunes (:func:`split_tunes`), a tune refused when it cannot be
read unambiguously (:func:`check_text`: a jump this conversion does not
play, several voices; :func:`check_bars`: a bar music21 cannot read), the
text parsed as ABC 2.1 (:func:`parse`), and the repeats expanded the usual
way (:func:`play_order`, :func:`expand`).  Every refusal is a
:class:`ConversionError` whose message says why.
"""

from __future__ import annotations

import re
import warnings
from typing import Sequence

ABC_VERSION_LINE = '%abc-2.1\n'


class ConversionError(ValueError):
  """A tune that cannot be converted unambiguously; the message says why."""


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


def check_text(tune: str) -> None:
  """Raises ConversionError for jumps and several voices."""
  for words in _words(tune):
    m = _JUMP_RE.search(words)
    if m:
      raise ConversionError(f'a jump ({m.group(0)!r}) this conversion does '
                            f'not expand: {words[:80]!r}')
  voices = set(re.findall(r'^V:\s*(\S+)', tune, re.M))
  if len(voices) > 1:
    raise ConversionError(f'{len(voices)} voices (V: {sorted(voices)})')


def parse(tune: str):
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


def check_bars(tune: str, part) -> None:
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


def expand(part) -> list:
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
