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
from data_prep import synth
from dccaflax import audio
from dccaflax import identify
from dccaflax import snippets

EVAL_TEMPOS = (0.8, 1.0, 1.25)
GAP_S = 2.0            # silence between pieces rendered in one batch
TAIL_S = 1.0           # audio kept after a piece's last note end
MAX_BATCH = 64         # renderings per FluidSynth call


def render_batch(task) -> list[tuple[str, float, np.ndarray]]:
  """Worker: renders (piece, tempo) items in ONE FluidSynth call.

  Loading a compressed (.sf3) soundfont takes seconds, so the items are
  played one after another (``GAP_S`` of silence between), each with its
  note times divided by its tempo factor, and cut apart; each piece keeps
  ``TAIL_S`` after its last note end (the release).

  Args:
    task: ``(items, soundfont)``, items ``[(midi_path, tempo), ...]``.

  Returns:
    ``[(piece, tempo, spec (136, T) float32), ...]`` in item order.
  """
  items, soundfont = task
  notes, spans, offset = [], [], 0.0
  for path, tempo in items:
    mel = melody.read_melody(path)
    end = max(n.end_s for n in mel.notes) / tempo
    notes += synth.at_tempo(mel.notes, tempo, offset)
    spans.append((mel.name, tempo, offset, offset + end))
    offset += end + GAP_S
  wave = synth.synthesize(notes, synth.SynthParams(soundfont=soundfont),
                          name=f'{len(items)} renderings', timeout_s=1200)
  sr = snippets.SAMPLE_RATE
  out = []
  for name, tempo, a, b in spans:
    lo = int(round(a * sr))
    hi = min(len(wave), int(round((b + TAIL_S) * sr)))
    out.append((name, tempo, audio.spectrogram(wave[lo:hi])))
  return out


# Soundfonts for evaluation: none of them is used to prepare training data.
EVAL_SOUNDFONTS = {
    'musescore': ('/usr/share/sounds/sf3/MuseScore_General.sf3',
                  '/usr/share/sounds/sf3/MuseScore_General_Lite.sf3',
                  '/usr/share/sounds/sf2/MuseScore_General.sf2'),
    'fluidr3mono': ('/usr/share/sounds/sf3/FluidR3Mono_GM.sf3',
                    '/usr/share/sounds/sf2/FluidR3Mono_GM.sf2'),
}
_APT = {'musescore': 'musescore-general-soundfont-small',
        'fluidr3mono': 'fluidr3mono-gm-soundfont'}


def eval_soundfont(name: str) -> str:
  """Path of an evaluation soundfont given by key or path.

  Raises:
    FileNotFoundError: not installed, with the Debian package to install.
  """
  if name == 'timgm6mb':     # the small soundfont inside pretty_midi
    return synth.soundfont_path(name)
  if name in EVAL_SOUNDFONTS:
    for path in EVAL_SOUNDFONTS[name]:
      if os.path.isfile(path):
        return path
    raise FileNotFoundError(
        f'soundfont {name!r} not installed (looked for '
        f'{", ".join(EVAL_SOUNDFONTS[name])}); Debian: apt-get install '
        f'{_APT[name]}')
  if not os.path.isfile(name):
    raise FileNotFoundError(f'soundfont {name!r}: no such file (or use one '
                            f'of {", ".join(EVAL_SOUNDFONTS)})')
  return name


def midi_files(midi_dir: str, split: str, pieces: Sequence[str],
               log: Callable[[str], None] = print) -> list[str]:
  """The MIDI file of every piece: ``midi_dir/split/NAME.mid``, else the same
  name in another split folder (with a warning: the prepared data named a
  piece after a file of another split).

  Raises:
    FileNotFoundError: a piece with no file, naming it.
  """
  out = []
  others = [s for s in ('test', 'valid', 'train') if s != split]
  for p in pieces:
    for i, s in enumerate([split] + others):
      path = os.path.join(midi_dir, s, p + '.mid')
      if os.path.exists(path):
        if i:
          log(f'warning: piece {p!r} of the {split} index has no file in '
              f'{split}/; using {path}')
        out.append(path)
        break
    else:
      raise FileNotFoundError(f'no MIDI file for piece {p!r} in '
                              f'{os.path.join(midi_dir, split)}')
  return out


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
  import multiprocessing  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  pieces = index.pieces[:limit] if limit else index.pieces
  files = midi_files(midi_dir, index.split, pieces, log)
  workers = max(1, workers or os.cpu_count() or 1)
  items = [(f, float(t)) for t in tempos for f in files]
  # Few batches (one soundfont load each), but at most MAX_BATCH items
  # (about an hour of audio, a few hundred MB in the worker).
  per_batch = max(1, min(MAX_BATCH, -(-len(items) // (2 * workers))))
  tasks = [(items[i:i + per_batch], soundfont)
           for i in range(0, len(items), per_batch)]
  keys: list[tuple[str, float]] = []

  def specs(results):
    for batch in results:
      for name, tempo, spec in batch:
        keys.append((name, tempo))
        yield spec

  total = len(files) * len(tempos)
  done = [0]

  def progress(n):
    if n >= done[0] + 50 or n == total:
      done[0] = n
      log(f'identified {n}/{total} renderings ({time.time() - t0:.0f} s)')

  # 'spawn': the workers need no JAX, and forking a process that runs JAX
  # threads can deadlock.
  ctx = multiprocessing.get_context('spawn')
  with ctx.Pool(min(workers, len(tasks))) as pool:
    idents = identify.identify_specs(
        model, index, specs(pool.imap(render_batch, tasks)), k, hop,
        progress)
  rows = []
  for (name, tempo), ident in zip(keys, idents):
    rows.append({'piece': name, 'tempo': tempo, 'rank': ident.rank_of(name),
                 'winner': ident.ranking[0][0],
                 'score': float(dict(ident.ranking)[name])})
  summary = {}
  for t in tempos:
    ranks = np.array([r['rank'] for r in rows if r['tempo'] == float(t)])
    summary[f'{float(t):g}'] = {
        'top1': float(100 * np.mean(ranks <= 1)),
        'top5': float(100 * np.mean(ranks <= 5)),
        'MRR': float(np.mean(1.0 / ranks)), 'n': int(len(ranks))}
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
