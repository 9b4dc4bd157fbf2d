"""Robustness: retrieval and identification on held-out performances.

The test pieces are rendered afresh from their MIDI files by performances
no training data holds (``performance.heldout``): per piece a held-out
instrument (``performance.HELDOUT_PROGRAMS``: fiddle, viola, piccolo,
recorder, tango accordion, honky-tonk piano, alto sax, voice), drawn
dynamics and timing, in the held-out MuseScore General soundfont, at each
tempo factor.  For every such rendering:

* **snippet retrieval, the paper's protocol**: the first 16,000 test pairs,
  each sheet snippet paired with the audio excerpt of the held-out
  rendering at the same note (its performed onset), both directions,
  R@1/R@10/MR over all 16,000 candidates;
* **piece identification**: every indexed test piece, as rendered, against
  all indexed scores (``dccaflax.identify``): top-1/top-5 and MRR.

The in-distribution row beside them: the paper's protocol on the prepared
pairs (FluidR3 piano, tempo 1.0) and identification of a fresh FluidR3
piano rendering at tempo 1.0.  The sheet side is the index's: an index of
the test pairs in another engraving (``index.build(collection=
'nottingham:verovio_leland')``) measures held-out performances against a
held-out engraving.  Rendering runs in worker processes (one
FluidSynth call per batch of pieces) while the main process embeds.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence

import numpy as np

from data_prep import align
from data_prep import identify_eval
from data_prep import melody
from data_prep import performance
from data_prep import synth
from dccaflax import api
from dccaflax import audio
from dccaflax import evaluation
from dccaflax import identify
from dccaflax import input_pipeline
from dccaflax import retrieval
from dccaflax import snippets

TEMPOS = (0.67, 0.8, 1.0, 1.25, 1.5)
IN_DISTRIBUTION = 'in distribution (FluidR3 piano, tempo 1.0)'


def _pair_rows(pairs: dict, mels: dict) -> dict[str, np.ndarray]:
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


def evaluate(model: api.Model, index, data_dir: str, midi_dir: str,
             tempos: Sequence[float] = TEMPOS, limit: int =
             evaluation.PAPER_LIMIT, seed: int = 0,
             soundfont: str = performance.HELDOUT_SOUNDFONTS[0],
             n_pieces: Optional[int] = None,
             workers: Optional[int] = None, k: int = identify.TOP_K,
             hop: int = identify.HOP_FRAMES,
             log: Callable[[str], None] = print) -> dict:
  """The robustness evaluation (module doc).

  Args:
    model: the trained model.
    index: its index of the test split (``dccaflax.index``); every indexed
      piece is identified, and the snippet pairs are its data source's
      (``index.collection``: Nottingham, in any engraving).
    data_dir: the prepared data (the test ``pairs``).
    midi_dir: Nottingham MIDI folder (train/valid/test).
    tempos: tempo factors of the held-out renderings.
    limit: pairs of the snippet protocol (the first ``limit`` test pairs).
    seed: seeds the per-piece draws (instrument, dynamics, timing).
    soundfont: the held-out soundfont (key or path).
    n_pieces: identify only the first N indexed pieces (default: all); the
      candidates are always all indexed pieces.  Only the pieces needed
      (these and those of the snippet pairs) are rendered.
    workers: rendering processes (default: all cores).
    k, hop: identification settings (``dccaflax.identify``).
    log: progress lines.

  Returns:
    dict: 'rows': [{'rendering', 'tempo', 'a2s', 's2a' (as
    ``retrieval.both_directions``), 'top1', 'top5', 'MRR', 'n_pieces'}],
    the in-distribution row first; 'programs': per held-out rendering, the
    instrument of every piece; and the settings.
  """
  t0 = time.time()
  sf_path = synth.soundfont_path(soundfont, synth.EVAL_SOUNDFONTS)
  if input_pipeline.split_source(index.collection)[0] != (
      input_pipeline.NOTTINGHAM):
    raise ValueError(f'an index of {index.collection}: the robustness '
                     'evaluation renders the Nottingham test pieces')
  pairs = input_pipeline.load_pairs(data_dir, 'test', limit,
                                    collection=index.collection)
  indexed = list(index.pieces)
  missing = sorted(set(pairs['piece']) - set(indexed))
  if missing:
    raise ValueError(f'test pairs of pieces the index lacks: {missing[:5]}'
                     ' (build the index from the same data)')
  if n_pieces is not None and n_pieces < 1:
    raise ValueError(f'n_pieces must be >= 1, got {n_pieces}')
  pieces = indexed[:n_pieces]                    # identified
  needed = set(pieces) | set(pairs['piece'])
  rendered_pieces = [p for p in indexed if p in needed]
  files = identify_eval.midi_files(midi_dir, 'test', rendered_pieces, log)
  mels = {melody.piece_name(f): melody.read_melody(f) for f in files}
  pair_notes = _pair_rows(pairs, mels)
  sheet_emb = api.embed_sheet(model, pairs['sheet'])
  log(f'{len(pairs["sheet"])} test pairs, {len(pieces)} of {len(indexed)} '
      f'pieces identified, {len(files)} rendered ({time.time() - t0:.0f} s)')
  renderings = [(IN_DISTRIBUTION, 1.0, None)] + [
      (f'held out, tempo {t:g}', float(t), performance.heldout(t, seed))
      for t in tempos]
  rows, programs = [], {}
  for label, tempo, draw in renderings:
    t1 = time.time()
    params = [draw.params_for(p) if draw else synth.SynthParams()
              for p in rendered_pieces]
    if draw:
      programs[label] = {p: performance.HELDOUT_PROGRAMS[q.program]
                         for p, q in zip(rendered_pieces, params)}
    rendered = list(identify_eval.render(list(zip(files, params)),
                                         sf_path if draw else 'fluidr3',
                                         workers))
    specs = {name: spec for name, _, spec, _ in rendered}
    if draw:
      onsets = {name: on for name, _, _, on in rendered}
      excerpts = np.stack([
          snippets.spec_excerpt(specs[name], int(audio.onset_frame(
              onsets[name][note])))
          for name, note in _notes_of_pairs(pairs, pair_notes)])
      metrics = retrieval.both_directions(sheet_emb,
                                          api.embed_audio(model, excerpts))
      del excerpts
    else:   # the paper's protocol on the prepared pairs
      metrics = retrieval.both_directions(
          sheet_emb, api.embed_audio(model, pairs['spec']))
    idents = identify.identify_specs(model, index, [specs[p] for p in pieces],
                                     k, hop)
    ranks = np.array([ident.rank_of(p) for p, ident in zip(pieces, idents)])
    summary = identify_eval.rank_summary(ranks)
    summary['n_pieces'] = summary.pop('n')
    rows.append({'rendering': label, 'tempo': tempo, **metrics,
                 **summary, 'ranks': ranks.tolist()})
    log(f'{label}: A->S R@10 {metrics["a2s"]["R@10"]:.1f}, top-1 '
        f'{rows[-1]["top1"]:.1f} % ({time.time() - t1:.0f} s)')
  return {'rows': rows, 'programs': programs, 'pieces': pieces,
          'collection': index.collection,
          'n_candidate_pieces': len(indexed),
          'soundfont': sf_path, 'seed': seed, 'k': k, 'hop': hop,
          'n_pairs': int(len(pairs['sheet'])), 'split': index.split,
          'seconds': round(time.time() - t0, 1)}


def _notes_of_pairs(pairs: dict, pair_notes: dict):
  """``(piece, note index)`` of every pair, in pair order."""
  seen: dict[str, int] = {}
  for name in pairs['piece']:
    j = seen.get(name, 0)
    seen[name] = j + 1
    yield name, pair_notes[name][j]


def markdown(result: dict, title: str = 'Robustness') -> str:
  """The evaluation as one Markdown table, the in-distribution row first."""
  _, engraving = input_pipeline.split_source(
      result.get('collection', input_pipeline.NOTTINGHAM))
  lines = [f'### {title}', '',
           f'Test split ({engraving}\'s sheet snippets): the first '
           f'{result["n_pairs"]:,} pairs (snippets, '
           'both directions, all of them candidates) and '
           f'{len(result["pieces"])} pieces (identification, against all '
           f'{result["n_candidate_pieces"]} indexed scores). Held out: '
           'per piece one of '
           + ', '.join(performance.HELDOUT_PROGRAMS.values())
           + f', in `{os.path.basename(result["soundfont"])}`, with drawn '
           f'dynamics and timing (seed {result["seed"]}).', '',
           '| rendering | A→S R@1 | A→S R@10 | A→S MR | S→A R@1 | S→A R@10 '
           '| S→A MR | top-1 % | top-5 % | MRR |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in result['rows']:
    a, s = r['a2s'], r['s2a']
    lines.append(
        f'| {r["rendering"]} | {a["R@1"]:.1f} | {a["R@10"]:.1f} | '
        f'{a["MR"]:g} | {s["R@1"]:.1f} | {s["R@10"]:.1f} | {s["MR"]:g} | '
        f'{r["top1"]:.1f} | {r["top5"]:.1f} | {r["MRR"]:.3f} |')
  return '\n'.join(lines) + '\n'
