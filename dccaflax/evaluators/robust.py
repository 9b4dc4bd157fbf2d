"""Robustness: retrieval and identification on held-out performances.

The test pieces are rendered afresh under each of a list of named
conditions (``Condition``: data, not code), by a callable that the caller
passes in (``data_prep.heldout`` holds the synthesizer and the held-out
performances; this library needs neither).  For every condition:

* **snippet retrieval, the paper's protocol**: the first ``limit`` test
  pairs, each sheet snippet paired with the audio excerpt of the condition's
  rendering at the same note (its performed onset), both directions,
  R@1/R@10/MR over all of them as candidates;
* **piece identification**: every identified piece, as rendered, against
  all indexed scores (``dccaflax.identify``): top-1/top-5 and MRR.

The in-distribution condition (``IN_DISTRIBUTION``: FluidR3 piano, tempo
1.0, the prepared data's own rendering) takes its excerpts from the
prepared pairs: its snippet row is the paper's protocol.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, NamedTuple, Sequence

import numpy as np

from dccaflax import audio
from dccaflax import embedding
from dccaflax import identify
from dccaflax import retrieval
from dccaflax import snippets
from dccaflax import sources
from dccaflax.evaluators import identification

NAME = 'robust_eval'      # its files: robust_eval[_<engraving>].md, .json


@dataclasses.dataclass(frozen=True)
class Condition:
  """How the test pieces are rendered for one row of the table.

  Attributes:
    name: the row's label.
    soundfont: a soundfont key of ``data_prep.synth`` or a path.
    tempo: tempo factor (1.25 = 25 % faster).
    heldout: per piece a held-out instrument with drawn dynamics and timing
      (``data_prep.performance.heldout``); else the melody on piano as
      written.
  """
  name: str
  soundfont: str = 'fluidr3'
  tempo: float = 1.0
  heldout: bool = False

  @property
  def as_prepared(self) -> bool:
    """Whether this is the prepared data's own rendering (its snippet row is
    then the paper's protocol on the prepared pairs)."""
    return (self.soundfont, self.tempo, self.heldout) == ('fluidr3', 1.0,
                                                          False)


IN_DISTRIBUTION = Condition('in distribution (FluidR3 piano, tempo 1.0)')


class Rendering(NamedTuple):
  """What a renderer returns for one condition, per rendered piece."""
  specs: dict          # piece -> (136, T) float32 log spectrogram
  onsets_s: dict       # piece -> (notes,) performed onset of each note, s


def run(model: embedding.Model, index, pairs: dict,
        pair_notes: Sequence[tuple[str, int]],
        conditions: Sequence[Condition],
        render: Callable[[Condition], Rendering], pieces: Sequence[str],
        k: int = identify.TOP_K, hop: int = identify.HOP_FRAMES,
        log: Callable[[str], None] = print) -> list[dict]:
  """The robustness evaluation (module doc), one row per condition.

  Args:
    model: the trained model.
    index: its index of the test split (``dccaflax.index``): the candidates
      of identification.
    pairs: the test pairs (``input_pipeline.load_pairs``): sheet snippets
      and, for ``IN_DISTRIBUTION``, the prepared excerpts.
    pair_notes: ``(piece, note index)`` of every pair, in pair order: where
      a rendering's excerpt of the pair is cut.
    conditions: the rows, in table order.
    render: renders the needed pieces (those of ``pieces`` and of the pairs)
      under a condition.
    pieces: the pieces identified.
    k, hop: identification settings (``dccaflax.identify``).
    log: progress lines.

  Returns:
    [{'rendering' (the condition's name), 'tempo', 'a2s', 's2a' (as
    ``retrieval.both_directions``), 'top1', 'top5', 'MRR', 'n_pieces',
    'ranks'}], one per condition.
  """
  sheet_emb = embedding.embed_sheet(model, pairs['sheet'])
  rows = []
  for cond in conditions:
    t1 = time.time()
    rendering = render(cond)
    specs = rendering.specs
    if cond.as_prepared:   # the paper's protocol on the prepared pairs
      excerpts = pairs['spec']
    else:
      excerpts = np.stack([
          snippets.spec_excerpt(specs[name], int(audio.onset_frame(
              rendering.onsets_s[name][note])))
          for name, note in pair_notes])
    metrics = retrieval.both_directions(sheet_emb,
                                        embedding.embed_audio(model, excerpts))
    del excerpts
    idents = identify.identify_specs(model, index, [specs[p] for p in pieces],
                                     k, hop)
    ranks = np.array([ident.rank_of(p) for p, ident in zip(pieces, idents)])
    summary = identification.rank_summary(ranks)
    summary['n_pieces'] = summary.pop('n')
    rows.append({'rendering': cond.name, 'tempo': cond.tempo, **metrics,
                 **summary, 'ranks': ranks.tolist()})
    log(f'{cond.name}: A->S R@10 {metrics["a2s"]["R@10"]:.1f}, top-1 '
        f'{rows[-1]["top1"]:.1f} % ({time.time() - t1:.0f} s)')
  return rows


def markdown(result: dict, title: str = 'Robustness') -> str:
  """The evaluation as one Markdown table, the in-distribution row first.

  Args:
    result: 'rows' (``run``), 'collection', 'n_pairs', 'pieces',
      'n_candidate_pieces', 'instruments' (the held-out ones drawn from),
      'soundfont' (the held-out one's path, or a list of paths) and 'seed'.
    title: the table's heading.
  """
  _, engraving = sources.split_source(
      result.get('collection', sources.NOTTINGHAM))
  lines = [f'### {title}', '',
           f'Test split ({engraving}\'s sheet snippets): the first '
           f'{result["n_pairs"]:,} pairs (snippets, '
           'both directions, all of them candidates) and '
           f'{len(result["pieces"])} pieces (identification, against all '
           f'{result["n_candidate_pieces"]} indexed scores). Held out: '
           'per piece one of ' + ', '.join(result['instruments'])
           + ', in ' + ', '.join(f'`{os.path.basename(sf)}`' for sf in (
               [result['soundfont']] if isinstance(result['soundfont'], str)
               else result['soundfont'])) + ', with drawn '
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
