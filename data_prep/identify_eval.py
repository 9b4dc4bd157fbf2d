"""Piece identification on fresh renderings of MIDI files.

Every indexed piece is rendered from its MIDI file with a soundfont (and at
tempo factors) the model did not train on, and identified against all
indexed scores by ``dccaflax.identify``; the result is top-1 / top-5
accuracy and MRR of the true piece per tempo factor.  Rendering needs the
melody reader and FluidSynth, so this lives here with the rest of the
rendering code, and ``dccaflax`` (inference) needs neither;
``experiments.identify_eval`` is its command line.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence

import numpy as np

from data_prep import melody
from data_prep import pipeline
from data_prep import synth
from dccaflax import identify

EVAL_TEMPOS = (0.8, 1.0, 1.25)
MAX_BATCH = 64         # renderings per FluidSynth call


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


def rank_summary(ranks) -> dict:
  """Top-1 / top-5 accuracy (percent), MRR and count of 1-based ranks."""
  ranks = np.asarray(ranks)
  return {'top1': float(100 * np.mean(ranks <= 1)),
          'top5': float(100 * np.mean(ranks <= 5)),
          'MRR': float(np.mean(1.0 / ranks)), 'n': int(len(ranks))}


def evaluate(model, index, midi_dir: str, soundfont: str,
             tempos: Sequence[float] = EVAL_TEMPOS,
             limit: Optional[int] = None, workers: Optional[int] = None,
             k: int = identify.TOP_K, hop: int = identify.HOP_FRAMES,
             log: Callable[[str], None] = print) -> dict:
  """Identification accuracy on fresh renderings of the indexed pieces.

  Every indexed piece (the first ``limit``) is rendered from its MIDI file
  with ``soundfont`` at each tempo factor (worker processes, several pieces
  per FluidSynth call) and identified against ALL indexed pieces.

  Returns:
    dict: 'tempos': {tempo: {'top1', 'top5' (percent), 'MRR', 'n'}},
    'per_piece': [{'piece', 'tempo', 'rank', 'winner'}, ...], and the
    settings (soundfont, k, hop, n_pieces, n_candidate_pieces, seconds).
  """
  t0 = time.time()
  pieces = index.pieces[:limit] if limit else index.pieces
  files = midi_files(midi_dir, index.split, pieces, log)
  items = [(f, float(t)) for t in tempos for f in files]
  keys: list[tuple[str, float]] = []

  def specs(results):
    for name, tempo, spec, _ in results:
      keys.append((name, tempo))
      yield spec

  total = len(files) * len(tempos)
  done = [0]

  def progress(n):
    if n >= done[0] + 50 or n == total:
      done[0] = n
      log(f'identified {n}/{total} renderings ({time.time() - t0:.0f} s)')

  idents = identify.identify_specs(
      model, index, specs(render(items, soundfont, workers)), k, hop,
      progress)
  rows = []
  for (name, tempo), ident in zip(keys, idents):
    rows.append({'piece': name, 'tempo': tempo, 'rank': ident.rank_of(name),
                 'winner': ident.ranking[0][0],
                 'score': float(dict(ident.ranking)[name])})
  summary = {}
  for t in tempos:
    summary[f'{float(t):g}'] = rank_summary(
        [r['rank'] for r in rows if r['tempo'] == float(t)])
  return {'tempos': summary, 'soundfont': soundfont, 'k': k, 'hop': hop,
          'n_pieces': len(files), 'n_candidate_pieces': len(index.pieces),
          'n_index_pairs': len(index), 'split': index.split,
          'fingerprint': index.fingerprint,
          'seconds': round(time.time() - t0, 1), 'per_piece': rows}


def markdown(result: dict, title: str = '') -> str:
  """The evaluation as a Markdown table (one row per tempo factor)."""
  lines = [f'### {title or "Piece identification"}', '',
           f'{result["n_pieces"]} {result["split"]} pieces rendered with '
           f'`{os.path.basename(result["soundfont"])}`'
           + (' (the training soundfont!)' if 'FluidR3_GM' in
              result['soundfont'] else ' (not a training soundfont)')
           + f' queried against all {result["n_candidate_pieces"]} '
           f'indexed scores ({result["n_index_pairs"]:,} sheet snippets); '
           f'windows of 3.2 s every {result["hop"]} frames, top-'
           f'{result["k"]} snippets vote 1/rank.', '',
           '| tempo factor | top-1 (%) | top-5 (%) | MRR | pieces |',
           '|---:|---:|---:|---:|---:|']
  for t, m in result['tempos'].items():
    lines.append(f'| {t} | {m["top1"]:.1f} | {m["top5"]:.1f} | '
                 f'{m["MRR"]:.3f} | {m["n"]} |')
  return '\n'.join(lines) + '\n'
