"""Renderings the model never heard, for ``dccaflax.evaluators``.

The evaluators of robustness and identification (``dccaflax.evaluators.
robust`` / ``identification``) take their renderings from a callable, so
the library needs no synthesizer; this module makes them.  Every piece is
rendered afresh from its MIDI file (``midi_files``) by FluidSynth in worker
processes (``render``: one FluidSynth call per batch of pieces) while the
main process embeds.

Held-out conditions are data: ``tempo_conditions`` (the tempo sweep of the
held-out performances: per piece a held-out instrument, drawn dynamics and
timing, in the held-out MuseScore General soundfont) and the named
``CONDITIONS`` beside it (``experiments.eval --conditions``).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence

import numpy as np

from data_prep import align
from data_prep import melody
from data_prep import performance
from data_prep import pipeline
from data_prep import synth
from dccaflax import identify
from dccaflax import input_pipeline
from dccaflax import sources
from dccaflax.evaluators import identification
from dccaflax.evaluators import robust

ROBUST_TEMPOS = (0.67, 0.8, 1.0, 1.25, 1.5)   # the held-out performances'
IDENTIFY_TEMPOS = (0.8, 1.0, 1.25)            # plain renderings' (identify)
MAX_BATCH = 64         # renderings per FluidSynth call

# Named held-out conditions beyond the tempo sweep (--conditions).
CONDITIONS: dict[str, robust.Condition] = {
    # The held-out timbre alone: the training data's piano, as written.
    'musescore_piano': robust.Condition(
        'held-out soundfont alone (MuseScore General piano, tempo 1.0)',
        'musescore', 1.0),
}


def tempo_conditions(tempos: Sequence[float],
                     soundfont: str = performance.HELDOUT_SOUNDFONTS[0]
                     ) -> list[robust.Condition]:
  """Held-out performances in ``soundfont`` at each tempo factor."""
  return [robust.Condition(f'held out, tempo {t:g}', soundfont, float(t),
                           heldout=True) for t in tempos]


def conditions(names: Sequence[str]) -> list[robust.Condition]:
  """``CONDITIONS`` by name; ValueError naming the unknown ones."""
  unknown = [n for n in names if n not in CONDITIONS]
  if unknown:
    raise ValueError(f'--conditions: unknown {unknown}; have '
                     f'{sorted(CONDITIONS)}')
  return [CONDITIONS[n] for n in names]


def eval_soundfont(name: str) -> str:
  """Path of an evaluation soundfont given by key or path.

  Args:
    name: a key of ``synth.EVAL_SOUNDFONTS`` ('musescore', 'fluidr3mono',
      'timgm6mb') or a path to an .sf2/.sf3 file.

  Raises:
    FileNotFoundError: (``synth.SoundfontNotFound``) not installed, with
      how to install it.
  """
  return synth.soundfont_path(name, synth.EVAL_SOUNDFONTS)


def midi_files(midi_dir: str, split: str, pieces: Sequence[str],
               log: Callable[[str], None] = print) -> list[str]:
  """The MIDI file of every piece: ``midi_dir/split/NAME.mid``, else the same
  name in another split folder (with a warning: the prepared data named a
  piece after a file of another split).

  Raises:
    FileNotFoundError: a piece with no file, naming it.
  """
  by_name = {}

  def files_of(s: str) -> dict[str, str]:
    """Piece name -> MIDI file of split ``s`` (none if it has no folder)."""
    if s not in by_name:
      try:
        files = pipeline.list_midi(midi_dir, (s,))[s]
      except pipeline.PrepareError:
        files = []
      by_name[s] = {melody.piece_name(f): f for f in files}
    return by_name[s]

  out = []
  others = [s for s in ('test', 'valid', 'train') if s != split]
  for p in pieces:
    for i, s in enumerate([split] + others):
      path = files_of(s).get(p)
      if path is not None:
        if i:
          log(f'warning: piece {p!r} of the {split} index has no file in '
              f'{split}/; using {path}')
        out.append(path)
        break
    else:
      raise FileNotFoundError(f'no MIDI file for piece {p!r} in '
                              f'{os.path.join(midi_dir, split)}')
  return out


def render(items, soundfont: str, workers: Optional[int] = None):
  """``synth.render_batch`` over worker processes: yields its
  ``(piece, tempo, spec, onsets_s)`` per item, in item order.

  Few batches (one soundfont load each), but at most ``MAX_BATCH`` items
  (about an hour of audio, a few hundred MB in the worker).
  """
  import multiprocessing  # pylint: disable=g-import-not-at-top
  workers = max(1, workers or os.cpu_count() or 1)
  per_batch = max(1, min(MAX_BATCH, -(-len(items) // (2 * workers))))
  tasks = [(items[i:i + per_batch], soundfont)
           for i in range(0, len(items), per_batch)]
  # 'spawn': the workers need no JAX, and forking a process that runs JAX
  # threads can deadlock.
  ctx = multiprocessing.get_context('spawn')
  with ctx.Pool(min(workers, len(tasks))) as pool:
    for batch in pool.imap(synth.render_batch, tasks):
      yield from batch


def pair_rows(pairs: dict, mels: dict) -> dict[str, np.ndarray]:
  """Per piece, which melody note each of its pairs (in ``pairs``) is.

  Raises:
    ValueError: a piece whose pairs are not its melody's onsets (the data
      were prepared from other MIDI files or another tempo), naming it.
  """
  out = {}
  names = pairs['piece']
  for name in dict.fromkeys(names):
    rows = np.flatnonzero(names == name)
    frames, notes = align.pair_notes(mels[name].notes)
    got = pairs['onset_frame'][rows]
    if len(got) > len(frames) or np.any(frames[:len(got)] != got):
      raise ValueError(f'piece {name}: the prepared pairs are not the '
                       'onsets of its MIDI file at tempo factor 1 (prepared '
                       'from other files or with another --tempo?)')
    out[name] = notes[:len(got)]
  return out


def notes_of_pairs(pairs: dict, pair_notes: dict) -> list[tuple[str, int]]:
  """``(piece, note index)`` of every pair, in pair order."""
  seen: dict[str, int] = {}
  out = []
  for name in pairs['piece']:
    j = seen.get(name, 0)
    seen[name] = j + 1
    out.append((name, int(pair_notes[name][j])))
  return out


def robustness(model, index, data_dir: str, midi_dir: str,
               heldout: Sequence[robust.Condition], limit: int, seed: int = 0,
               n_pieces: Optional[int] = None, workers: Optional[int] = None,
               k: int = identify.TOP_K, hop: int = identify.HOP_FRAMES,
               log: Callable[[str], None] = print) -> dict:
  """``dccaflax.evaluators.robust`` on the index's test pieces, rendered here.

  Args:
    model: the trained model.
    index: its index of the test split; every indexed piece is identified,
      and the snippet pairs are its data source's (``index.collection``:
      Nottingham, in any engraving).
    data_dir: the prepared data (the test ``pairs``).
    midi_dir: Nottingham MIDI folder (train/valid/test).
    heldout: the held-out conditions; ``robust.IN_DISTRIBUTION`` comes
      first.
    limit: pairs of the snippet protocol (the first ``limit`` test pairs).
    seed: seeds the per-piece draws (instrument, dynamics, timing).
    n_pieces: identify only the first N indexed pieces (default: all); the
      candidates are always all indexed pieces.  Only the pieces needed
      (these and those of the snippet pairs) are rendered.
    workers: rendering processes (default: all cores).
    k, hop: identification settings (``dccaflax.identify``).
    log: progress lines.

  Returns:
    dict: 'rows' (``robust.run``), 'programs': per held-out condition, the
    instrument of every piece; and the settings (``robust.markdown``).
  """
  t0 = time.time()
  if sources.split_source(index.collection)[0] != (
      sources.NOTTINGHAM):
    raise ValueError(f'an index of {index.collection}: the robustness '
                     'evaluation renders the Nottingham test pieces')
  if n_pieces is not None and n_pieces < 1:
    raise ValueError(f'--pieces must be >= 1, got {n_pieces}')
  if not heldout:
    raise ValueError('no held-out condition: give --tempos or --conditions')
  sf_paths = {c.soundfont: eval_soundfont(c.soundfont) for c in heldout}
  pairs = input_pipeline.load_pairs(data_dir, 'test', limit,
                                    collection=index.collection)
  indexed = list(index.pieces)
  missing = sorted(set(pairs['piece']) - set(indexed))
  if missing:
    raise ValueError(f'test pairs of pieces the index lacks: {missing[:5]}'
                     ' (build the index from the same data)')
  pieces = indexed[:n_pieces]                    # identified
  needed = set(pieces) | set(pairs['piece'])
  rendered_pieces = [p for p in indexed if p in needed]
  files = midi_files(midi_dir, 'test', rendered_pieces, log)
  mels = {melody.piece_name(f): melody.read_melody(f) for f in files}
  pair_notes = notes_of_pairs(pairs, pair_rows(pairs, mels))
  log(f'{len(pairs["sheet"])} test pairs, {len(pieces)} of {len(indexed)} '
      f'pieces identified, {len(files)} rendered ({time.time() - t0:.0f} s)')
  programs = {}

  def rendering(cond: robust.Condition) -> robust.Rendering:
    draw = performance.heldout(cond.tempo, seed) if cond.heldout else None
    params = [draw.params_for(p) if draw else synth.SynthParams(
        tempo=cond.tempo) for p in rendered_pieces]
    if draw:
      programs[cond.name] = {p: performance.HELDOUT_PROGRAMS[q.program]
                             for p, q in zip(rendered_pieces, params)}
    out = list(render(list(zip(files, params)),
                      sf_paths.get(cond.soundfont, cond.soundfont), workers))
    return robust.Rendering({name: spec for name, _, spec, _ in out},
                            {name: on for name, _, _, on in out})

  rows = robust.run(model, index, pairs, pair_notes,
                    [robust.IN_DISTRIBUTION, *heldout], rendering, pieces, k,
                    hop, log)
  soundfonts = sorted(set(sf_paths.values()))
  return {'rows': rows, 'programs': programs, 'pieces': pieces,
          'collection': index.collection,
          'n_candidate_pieces': len(indexed),
          'soundfont': soundfonts[0] if len(soundfonts) == 1 else soundfonts,
          'instruments': list(performance.HELDOUT_PROGRAMS.values()),
          'seed': seed, 'k': k, 'hop': hop,
          'n_pairs': int(len(pairs['sheet'])), 'split': index.split,
          'seconds': round(time.time() - t0, 1)}


def identification_eval(model, index, midi_dir: str, soundfont: str,
                        tempos: Sequence[float] = IDENTIFY_TEMPOS,
                        n_pieces: Optional[int] = None,
                        workers: Optional[int] = None,
                        k: int = identify.TOP_K,
                        hop: int = identify.HOP_FRAMES,
                        log: Callable[[str], None] = print) -> dict:
  """``dccaflax.evaluators.identification`` on fresh renderings.

  Every indexed piece (the first ``n_pieces``) is rendered from its MIDI
  file with ``soundfont`` (a path: ``eval_soundfont``) at each tempo factor
  (worker processes, several pieces per FluidSynth call) and identified
  against ALL indexed pieces.

  Returns:
    dict: 'tempos': {tempo: {'top1', 'top5' (percent), 'MRR', 'n'}},
    'per_piece': [{'piece', 'tempo', 'rank', 'winner', 'score'}, ...], and
    the settings (soundfont, k, hop, n_pieces, n_candidate_pieces, seconds).
  """
  t0 = time.time()
  if n_pieces is not None and n_pieces < 1:
    raise ValueError(f'--pieces must be >= 1, got {n_pieces}')
  pieces = index.pieces[:n_pieces] if n_pieces else index.pieces
  files = midi_files(midi_dir, index.split, pieces, log)
  items = [(f, float(t)) for t in tempos for f in files]
  renderings = ((name, f'{tempo:g}', spec)
                for name, tempo, spec, _ in render(items, soundfont, workers))
  summary, per_piece = identification.run(model, index, renderings,
                                          len(items), k, hop, log)
  for row in per_piece:
    row['tempo'] = float(row.pop('key'))
  return {'tempos': summary, 'soundfont': soundfont, 'k': k, 'hop': hop,
          'n_pieces': len(files), 'n_candidate_pieces': len(index.pieces),
          'n_index_pairs': len(index), 'split': index.split,
          'fingerprint': index.fingerprint,
          'seconds': round(time.time() - t0, 1), 'per_piece': per_piece}
