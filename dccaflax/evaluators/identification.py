"""Piece identification on renderings the model never heard.

Recordings of indexed pieces (fresh renderings of their MIDI files, made by
the caller: ``data_prep.heldout``, which holds the synthesizer) are
identified against all indexed scores by sliding-window voting
(``dccaflax.identify``); the rows are top-1 / top-5 accuracy (percent) and
the MRR of the true piece per rendering (e.g. per tempo factor).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable

import numpy as np

from dccaflax import identify

NAME = 'identify_eval'          # its files: identify_eval.md, .json


def rank_summary(ranks) -> dict:
  """Top-1 / top-5 accuracy (percent), MRR and count of 1-based ranks."""
  ranks = np.asarray(ranks)
  return {'top1': float(100 * np.mean(ranks <= 1)),
          'top5': float(100 * np.mean(ranks <= 5)),
          'MRR': float(np.mean(1.0 / ranks)), 'n': int(len(ranks))}


def run(model, index, renderings: Iterable[tuple[str, str, np.ndarray]],
        total: int, k: int = identify.TOP_K, hop: int = identify.HOP_FRAMES,
        log: Callable[[str], None] = print) -> tuple[dict, list[dict]]:
  """Identifies every rendering against all indexed pieces.

  Args:
    model: the index's model (``dccaflax.Model``).
    index: ``dccaflax.index.Index``.
    renderings: ``(piece, key, spec)``, spec (136, T) float32, key the
      rendering's row (e.g. '1.25' for a tempo factor); consumed lazily, so
      they may be rendered while earlier ones are embedded.
    total: how many renderings (for the progress lines).
    k, hop: identification settings (``dccaflax.identify``).
    log: progress lines.

  Returns:
    ``(summary, per_piece)``: {key: ``rank_summary``} in order of first
    appearance, and [{'piece', 'key', 'rank', 'winner', 'score'}, ...].
  """
  t0 = time.time()
  keys: list[tuple[str, str]] = []

  def specs():
    for name, key, spec in renderings:
      keys.append((name, key))
      yield spec

  done = [0]

  def progress(n):
    if n >= done[0] + 50 or n == total:
      done[0] = n
      log(f'identified {n}/{total} renderings ({time.time() - t0:.0f} s)')

  idents = identify.identify_specs(model, index, specs(), k, hop, progress)
  per_piece = [{'piece': name, 'key': key, 'rank': ident.rank_of(name),
                'winner': ident.ranking[0][0],
                'score': float(dict(ident.ranking)[name])}
               for (name, key), ident in zip(keys, idents)]
  summary = {}
  for key in dict.fromkeys(key for _, key in keys):
    summary[key] = rank_summary([r['rank'] for r in per_piece
                                 if r['key'] == key])
  return summary, per_piece


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
