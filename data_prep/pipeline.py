"""MIDI files -> aligned pieces, cached by content hash, in parallel.

Stages per piece (one module each): ``melody`` (MIDI -> monophonic melody),
``engraving`` (an engraver: LilyPond or Verovio -> strip + noteheads),
``synth`` (FluidSynth -> audio), ``dccaflax.audio`` (-> log spectrogram),
``align`` (onsets <-> noteheads).

Engravings: a run engraves with one engraving of ``ENGRAVINGS`` (the
engravers' registry, ``data_prep.engraving``): 'lilypond' (the paper's),
'lilypond_drawn' (LilyPond with a staff size, spacing and line thicknesses
drawn per piece, ``lilypond_source.drawn_style``), 'verovio_<font>' or
'verovio_drawn' (a training font drawn per piece).  Each piece's drawn
values are in its report item (``engraving_params``).  Held-out ones
(``engraving.HELDOUT_ENGRAVINGS``) never reach the train and valid splits
(``check_engraving``).

Renderings: the audio is rendered once with the primary ``SynthParams`` (the
one aligned to the noteheads) and, optionally, with extra ones for
augmentation: fixed ones (other tempo factors or soundfonts) or drawn slots
(``performance.Draw``: instrument, soundfont, tempo, dynamics and timing
drawn per piece).  An extra rendering has the same pairs as the primary, in
the same order: pair ``i`` is the onset of the same melody note, its frame
recomputed from that rendering's performed note times
(``align.onset_frames_at``).  A piece one of whose renderings fails is
skipped as a whole, so every prepared piece has every rendering.  Held-out
instruments and soundfonts (``performance``) never reach the train and
valid splits.

Caching (``piece_cache``): every stage result is stored under ``cache_dir``
by a SHA-256 of its inputs and of the code that computes it, so a re-run
redoes only what changed.  Deterministic failures (an error in the piece's
own LilyPond source) are cached too; a failure of the machine (the
engraver's ``uncached_errors``, e.g. ``lilypond.LilyPondRunError``: a
timeout, a crash, a font error, no output) never is, so the next run tries
the piece again.  The engraver warms up once before the worker pool starts
(LilyPond's first run on a machine builds the fontconfig cache: not in
several processes at once).

Nothing is dropped silently: every input file yields one ``Item`` that is
``ok`` or ``skipped`` with the reason, and a warning line is printed for each
skip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
from typing import Iterator, Sequence

import numpy as np

from data_prep import align as align_lib
from data_prep import engraving as engraving_lib
from data_prep import melody as melody_lib
from data_prep import performance
from data_prep import piece_cache
from data_prep import synth as synth_lib

SPLITS = ('train', 'valid', 'test')
LILYPOND = engraving_lib.lilypond.LILYPOND   # the default engraving
ENGRAVINGS = engraving_lib.ENGRAVINGS
CHUNK = 8  # pieces per worker task: one LilyPond process engraves a chunk


class PrepareError(RuntimeError):
  """Nothing to prepare: a missing input folder, or no usable piece."""


@dataclasses.dataclass
class Item:
  """One input file's fate, a row of ``prep_report.json``."""
  file: str
  split: str
  status: str = 'ok'          # 'ok' or 'skipped'
  reason: str = ''
  stage: str = ''             # where a skipped piece failed
  n_notes: int = 0
  n_onsets: int = 0
  n_overlaps: int = 0
  piece_path: str = ''        # cached aligned piece (.npz), when ok
  engraving_params: str = ''  # JSON: its drawn style or Verovio font

  @property
  def name(self) -> str:
    return melody_lib.piece_name(self.file)


def check_renderings(params: synth_lib.SynthParams,
                     renderings: Sequence[synth_lib.SynthParams |
                                          performance.Draw],
                     splits: Sequence[str] = ()
                     ) -> tuple[synth_lib.SynthParams | performance.Draw, ...]:
  """The extra renderings as a tuple, after checking them.

  Args:
    params: the primary rendering.
    renderings: the extra ones (fixed, or drawn slots).
    splits: the splits they are for; for 'train' or 'valid', no rendering
      may use a held-out instrument or soundfont.

  Raises:
    PrepareError: a rendering whose tag is the primary's or another's (tags
      name the renderings in the data), a tempo factor that is not > 0, or
      a held-out instrument or soundfont for training data.
  """
  renderings = tuple(renderings)
  for r in (params, *renderings):
    if isinstance(r, performance.Draw):
      if r.heldout and {'train', 'valid'} & set(splits):
        raise PrepareError(f'rendering {r.tag} draws held-out instruments '
                           'and soundfonts, which never reach the train and '
                           'valid splits')
      continue
    if not isinstance(r, synth_lib.SynthParams):
      raise PrepareError('a rendering must be a synth.SynthParams or a '
                         f'performance.Draw, got {r!r}')
    if {'train', 'valid'} & set(splits):
      try:
        performance.check_training(r, f'rendering {r.tag}')
      except performance.HeldOutError as e:
        raise PrepareError(str(e)) from e
    if not r.tempo > 0:
      raise PrepareError(f'rendering {r.tag}: tempo factor must be > 0, got '
                         f'{r.tempo}')
  seen = {params.tag: 'the primary rendering'}
  for i, r in enumerate(renderings):
    if r.tag in seen:
      raise PrepareError(f'extra rendering {i} has the tag {r.tag} of '
                         f'{seen[r.tag]}; each rendering needs its own '
                         'soundfont or tempo factor')
    seen[r.tag] = f'extra rendering {i}'
  return renderings


def check_engraving(engraving: str, splits: Sequence[str] = ()) -> str:
  """``engraving`` after checking it is known, and not held out if
  ``splits`` include 'train' or 'valid'.

  Raises:
    PrepareError: an unknown engraving, or a held-out one for training data.
  """
  if engraving not in ENGRAVINGS:
    raise PrepareError(f'unknown engraving {engraving!r}; have '
                       f'{list(ENGRAVINGS)}')
  if (engraving in engraving_lib.HELDOUT_ENGRAVINGS
      and {'train', 'valid'} & set(splits)):
    raise PrepareError(f'engraving {engraving} is held out for evaluation: '
                       'it never reaches the train and valid splits (prepare '
                       'it with --splits test)')
  return engraving


def list_midi(midi_dir: str, splits: Sequence[str] = SPLITS,
              limit: int | None = None) -> dict[str, list[str]]:
  """Sorted ``*.mid`` files of each split folder, at most ``limit`` each.

  Raises:
    PrepareError: the folder or a split folder is missing, or holds no file.
  """
  if not os.path.isdir(midi_dir):
    raise PrepareError(f'{midi_dir}: no such folder (expected one holding '
                       f'{"/".join(SPLITS)} with .mid files)')
  out = {}
  for split in splits:
    d = os.path.join(midi_dir, split)
    if not os.path.isdir(d):
      raise PrepareError(f'{d}: no such folder (split {split!r})')
    files = sorted(os.path.join(d, f) for f in os.listdir(d)
                   if f.lower().endswith(('.mid', '.midi')))
    if not files:
      raise PrepareError(f'{d}: no .mid files')
    out[split] = files[:limit] if limit else files
  return out


# ------------------------------------------------------------------ stages ---

def engraving_params(engraving: str, piece: str) -> dict:
  """What an engraving gives a piece: its engraver and the settings (a
  LilyPond style, a Verovio font; a drawn engraving's drawn values)."""
  engraver = engraving_lib.engraver_of(engraving)
  return {'engraver': engraver.name,
          **engraver.params(engraver.settings(engraving, piece))}


def bar_of_tick(mel, tick: int) -> int:
  """1-based bar number of a tick; 0 in the pickup (anacrusis).

  Uses ``mel.bar_lines`` (bar ``i + 1`` spans ``[bar_lines[i],
  bar_lines[i + 1])``); without bar lines, a regular grid of the first time
  signature from tick 0.
  """
  if mel.bar_lines:
    return int(np.searchsorted(mel.bar_lines, tick, side='right'))
  _, num, den = mel.time_signatures[0] if mel.time_signatures else (0, 4, 4)
  return 1 + tick // melody_lib.bar_ticks(num, den, mel.ticks_per_beat)


def onset_bars(mel, note_index) -> np.ndarray:
  """``(P,)`` int32 bar number of each onset (see ``bar_of_tick``)."""
  return np.array([bar_of_tick(mel, mel.notes[i].start) for i in note_index],
                  np.int32)


class _RenderingError(Exception):
  """An extra rendering that failed: ``stage`` and ``reason`` of the skip."""

  def __init__(self, stage: str, reason: str):
    super().__init__(reason)
    self.stage, self.reason = stage, reason


def _extra_renderings(mel, al, renderings, cache_dir):
  """Audio keys, spectrograms, ``(E, P)`` onset frames and ``SynthParams``
  of the extras (a drawn slot's drawn for this piece).

  Raises:
    _RenderingError: the stage ('synth' or 'align') and the reason, naming
      the failing rendering's tag.
  """
  keys, specs, onsets, params = [], [], [], []
  for r in renderings:
    if isinstance(r, performance.Draw):
      r = r.params_for(mel.name)
    try:
      key, spec = piece_cache.spectrogram_cached(mel, r, cache_dir)
    except Exception as e:  # pylint: disable=broad-except
      raise _RenderingError('synth', f'rendering {r.tag}: {e}') from e
    try:
      played, _ = synth_lib.performed(mel.notes, r)
      frames = align_lib.onset_frames_at(played, al.note_index, 1.0,
                                         spec.shape[1])
    except align_lib.AlignmentError as e:
      raise _RenderingError('align', f'rendering {r.tag}: {e}') from e
    keys.append(key)
    specs.append(spec)
    onsets.append(frames)
    params.append(r)
  return tuple(keys), specs, onsets, params


def _process_chunk(task):
  """Worker: (items, cache_dir, params, renderings, extra_splits, timeout,
  engraving) -> items."""
  (items, cache_dir, params, all_renderings, extra_splits, timeout_s,
   engraving) = task
  mels = {}
  for it in items:
    try:
      mel = melody_lib.read_melody(it.file)
    except melody_lib.MidiError as e:
      it.status, it.stage, it.reason = 'skipped', 'midi', str(e)
      continue
    it.n_notes, it.n_overlaps = len(mel.notes), mel.n_overlaps
    mels[it.file] = mel
  live = [it for it in items if it.file in mels]
  try:
    engraved = piece_cache.engrave_cached([mels[it.file] for it in live],
                                          cache_dir, timeout_s, engraving)
  except Exception as e:  # pylint: disable=broad-except
    engraved = [e] * len(live)
  for it, eng in zip(live, engraved):
    mel = mels[it.file]
    if isinstance(eng, Exception):
      it.status, it.stage, it.reason = 'skipped', 'engrave', str(eng)
      continue
    ekey, strip, noteheads = eng
    it.engraving_params = json.dumps(engraving_params(engraving, mel.name),
                                     sort_keys=True)
    try:
      akey, spec = piece_cache.spectrogram_cached(mel, params, cache_dir)
    except Exception as e:  # pylint: disable=broad-except
      it.status, it.stage, it.reason = 'skipped', 'synth', str(e)
      continue
    try:
      al = align_lib.align(mel.notes, noteheads, spec.shape[1], params.tempo)
    except align_lib.AlignmentError as e:
      it.status, it.stage, it.reason = 'skipped', 'align', str(e)
      continue
    renderings = all_renderings if it.split in extra_splits else ()
    try:
      extra_keys, extra_specs, extra_onsets, extra_params = (
          _extra_renderings(mel, al, renderings, cache_dir))
    except _RenderingError as e:
      it.status, it.stage, it.reason = 'skipped', e.stage, e.reason
      continue
    it.n_onsets = len(al.onset_frames)
    path = piece_cache.piece_path(cache_dir, mel.name, ekey, akey,
                                  extra_keys)
    if not os.path.exists(path):
      piece_cache.save_piece(path, mel.name, strip, spec, al,
                  onset_bars(mel, al.note_index),
                  [params, *extra_params], extra_specs, extra_onsets)
    it.piece_path = path
  return items


def run_iter(files: dict[str, list[str]], cache_dir: str,
             params: synth_lib.SynthParams = synth_lib.SynthParams(),
             workers: int | None = None, timeout_s: float = 120.0,
             progress: bool = True,
             renderings: Sequence[synth_lib.SynthParams |
                                  performance.Draw] = (),
             extra_splits: Sequence[str] | None = None,
             engraving: str = LILYPOND) -> Iterator[Item]:
  """Prepares every file, yielding one Item per input in input order.

  Items come as soon as their chunk is done, so a consumer (the TFDS writer)
  works while the worker processes go on with later pieces.  A warning line is
  printed for every skipped input.

  Args:
    files: split -> MIDI paths (``list_midi``).
    cache_dir: where stage results are cached.
    params: synthesis parameters of the primary rendering (the one aligned
      to the noteheads).
    workers: processes (default: all cores).
    timeout_s: engraver (LilyPond) / FluidSynth time limit per call.
    progress: show a progress bar on stderr.
    renderings: extra renderings of every piece, each a fixed ``SynthParams``
      (other tempo factors / soundfonts) or a drawn slot
      (``performance.Draw``) with its own tag; a piece one of them fails for
      is skipped (stage 'synth', the reason naming its tag).
    extra_splits: the splits that get the extra renderings (default: all).
    engraving: one of ``ENGRAVINGS``.

  Raises:
    PrepareError: a rendering repeating another's tag, or a held-out
      instrument or soundfont for the train or valid split
      (``check_renderings``), an unknown engraving or a held-out one for
      those splits (``check_engraving``), or its engraver cannot run on this
      machine, e.g. LilyPond cannot engrave one note (nothing is tried then,
      and nothing cached).
  """
  extra_splits = tuple(files) if extra_splits is None else tuple(extra_splits)
  check_renderings(params, (), tuple(files))
  renderings = check_renderings(params, renderings,
                                [s for s in files if s in extra_splits])
  check_engraving(engraving, tuple(files))
  try:
    engraving_lib.engraver_of(engraving).warm_up()
  except engraving_lib.EngraveError as e:
    raise PrepareError(str(e)) from e
  items = [Item(file=f, split=s) for s, fs in files.items() for f in fs]
  chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
  tasks = [(c, cache_dir, params, renderings, extra_splits, timeout_s,
            engraving) for c in chunks]
  workers = workers or os.cpu_count() or 1
  with contextlib.ExitStack() as stack:
    bar = stack.enter_context(_progress(len(items), progress))
    if workers == 1:
      results = map(_process_chunk, tasks)
    else:
      # fork is fastest, but not safe once JAX's threads run in this process
      # (as in a notebook or a test session that trained a model first).
      safe_fork = sys.platform != 'darwin' and 'jax' not in sys.modules
      ctx = multiprocessing.get_context('fork' if safe_fork else 'spawn')
      results = stack.enter_context(ctx.Pool(workers)).imap(_process_chunk,
                                                             tasks)
    for chunk in results:
      bar.update(len(chunk))
      for it in chunk:
        if it.status != 'ok':
          bar.write(f'WARNING: skipped {it.file} [{it.stage}]: {it.reason}',
                    file=sys.stderr)
        yield it


def run(files: dict[str, list[str]], cache_dir: str,
        params: synth_lib.SynthParams = synth_lib.SynthParams(),
        workers: int | None = None, timeout_s: float = 120.0,
        progress: bool = True,
        renderings: Sequence[synth_lib.SynthParams | performance.Draw] = (),
        extra_splits: Sequence[str] | None = None,
        engraving: str = LILYPOND) -> list[Item]:
  """``run_iter`` as a list: one Item per input, in input order."""
  return list(run_iter(files, cache_dir, params, workers, timeout_s,
                       progress, renderings, extra_splits, engraving))


def _progress(total: int, enabled: bool):
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total, desc='pieces', unit='piece',
                   disable=not enabled, file=sys.stderr)


def write_report(items: Sequence[Item], path: str, **extra) -> dict:
  """Writes ``prep_report.json``: counts and every input with its status."""
  skipped = [it for it in items if it.status != 'ok']
  report = {
      'inputs': len(items),
      'ok': len(items) - len(skipped),
      'skipped': len(skipped),
      'skipped_by_stage': _count(it.stage for it in skipped),
      'pieces_with_overlaps': sum(it.n_overlaps > 0 for it in items),
      'notes_changed_by_overlaps': sum(it.n_overlaps for it in items),
      'onsets': _count_sum(items),
      **extra,
      'items': [{k: v for k, v in dataclasses.asdict(it).items()
                 if k != 'piece_path'} for it in items],
  }
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
  return report


def _count(keys) -> dict[str, int]:
  out: dict[str, int] = {}
  for k in keys:
    out[k] = out.get(k, 0) + 1
  return out


def _count_sum(items) -> dict[str, int]:
  out: dict[str, int] = {}
  for it in items:
    out[it.split] = out.get(it.split, 0) + it.n_onsets
  return out
