"""Note-by-note alignment of an engraved strip and a synthesized spectrogram.

Every melody note has an onset: its spectrogram frame is ``round(t * fps)``
(``dccaflax.audio.onset_frame``, the same rule that places frame centres) and
its notehead x comes from the point-and-click link of its onset token in the
LilyPond source.  Tied continuation noteheads link to other tokens and carry
no onset.  A piece passes only if every onset has exactly one notehead;
otherwise it is refused with the reason, never kept misaligned.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dccaflax import audio


class AlignmentError(ValueError):
  """A note whose onset does not have exactly one notehead."""


@dataclasses.dataclass(frozen=True)
class Alignment:
  """Onsets of one piece, one per distinct onset frame.

  Attributes:
    onset_frames: ``(P,)`` int32, strictly increasing spectrogram frames.
    notehead_x: ``(P,)`` float32 notehead centres, px in the strip.
    note_index: ``(P,)`` int32 index of the (first) melody note of each onset.
  """
  onset_frames: np.ndarray
  notehead_x: np.ndarray
  note_index: np.ndarray


def check_noteheads(notes, noteheads) -> np.ndarray:
  """Notehead x of every note, ``(n_notes,)`` float32.

  Args:
    notes: melody notes (``.pitch``, ``.start_s``).
    noteheads: per note, the x positions of the noteheads linked to its onset.

  Raises:
    AlignmentError: naming the first note with zero or several noteheads and
      how many such notes there are.
  """
  if len(noteheads) != len(notes):
    raise AlignmentError(f'{len(notes)} notes but noteheads for '
                         f'{len(noteheads)}')
  bad = [i for i, xs in enumerate(noteheads) if len(xs) != 1]
  if bad:
    i = bad[0]
    raise AlignmentError(
        f'{len(bad)} of {len(notes)} onsets do not have exactly one notehead; '
        f'first: note {i} (pitch {notes[i].pitch} at {notes[i].start_s:.3f} s)'
        f' has {len(noteheads[i])}')
  return np.array([xs[0] for xs in noteheads], np.float32)


def align(notes, noteheads, n_frames: int, tempo: float = 1.0) -> Alignment:
  """Pairs onset frames with notehead positions.

  Args:
    notes: melody notes in time order (``.pitch``, ``.start_s`` in seconds at
      tempo factor 1).
    noteheads: per note, the noteheads linked to its onset token.
    n_frames: spectrogram length; every onset must fall inside it.
    tempo: tempo factor the audio was rendered with (times divided by it).

  Returns:
    One onset per distinct frame: when several notes start in the same frame
    (faster than 32 ms apart), the first note's notehead is kept.
  """
  xs = check_noteheads(notes, noteheads)
  frames, first = pair_notes(notes, tempo)
  if len(frames) and frames[-1] >= n_frames:
    raise AlignmentError(f'onset frames beyond the {n_frames}-frame '
                         'spectrogram')
  return Alignment(onset_frames=frames, notehead_x=xs[first],
                   note_index=first)


def pair_notes(notes, tempo: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """The pairs of a melody: one per distinct onset frame, the first note's.

  Needs the notes alone (no engraving), so an evaluation can find the notes
  of a piece's prepared pairs again.

  Args:
    notes: melody notes in time order (``.start_s`` at tempo factor 1).
    tempo: the primary rendering's tempo factor.

  Returns:
    ``(frames, note_index)``: ``(P,)`` int32 strictly increasing onset
    frames and the index of each pair's note in ``notes``.

  Raises:
    AlignmentError: onsets out of time order.
  """
  frames = audio.onset_frame([n.start_s / tempo for n in notes])
  if len(frames) and np.any(np.diff(frames) < 0):
    raise AlignmentError('onset frames out of order')
  first = np.flatnonzero(np.diff(frames, prepend=-1) > 0)
  return frames[first].astype(np.int32), first.astype(np.int32)


def onset_frames_at(notes, note_index, tempo: float,
                    n_frames: int) -> np.ndarray:
  """Onset frames of the same pairs in a rendering at another tempo factor.

  Pair ``i`` is the onset of ``notes[note_index[i]]`` in every rendering, so
  it stays the same notehead; at a fast tempo two pairs may share a frame.
  With the primary rendering's tempo this gives ``align``'s onset frames.

  Args:
    notes: melody notes (``.start_s`` in seconds at tempo factor 1).
    note_index: ``(P,)`` indices into ``notes`` (``Alignment.note_index``).
    tempo: tempo factor of the rendering (> 0; times divided by it).
    n_frames: that rendering's spectrogram length; every onset must fall
      inside it.

  Returns:
    ``(P,)`` int32 non-decreasing spectrogram frames.

  Raises:
    AlignmentError: an onset at or beyond ``n_frames``.
  """
  if not tempo > 0:
    raise ValueError(f'tempo factor must be > 0, got {tempo}')
  frames = audio.onset_frame(
      [notes[i].start_s / tempo for i in note_index]).astype(np.int32)
  if len(frames) and frames.max() >= n_frames:
    raise AlignmentError(f'onset frame {frames.max()} at tempo factor {tempo} '
                         f'beyond the {n_frames}-frame spectrogram')
  return frames.reshape(-1)
