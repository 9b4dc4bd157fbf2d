"""How much a recording's loudness matters: retrieval at other audio levels.

The paper's protocol (the first ``limit`` pairs of a split, all of them
candidates; ``paper``) with every audio excerpt re-levelled as if the same
recording were ``g`` times louder (``dccaflax.level.relevel``: exactly what
scaling the waveform by ``g`` gives the ``log(1 + x)`` features), for each
gain, both directions.  Then dynamics, which no global gain describes: at
gain 1, each excerpt under a slow gain curve (a sine of up to ``D`` dB,
period 2-8 s, random phase; ``dccaflax.level.random_gains`` with a fixed
seed) for each ``D``.  ``markdown`` is its table, ``figure`` R@10 against
the gain in dB.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from dccaflax import embedding
from dccaflax import level
from dccaflax import retrieval
from dccaflax import snippets
from dccaflax.evaluators import results

NAME = 'level'                 # its files: level.md, level.json, level.png
GAINS = (0.1, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 5.0, 10.0)
CURVES_DB = (3.0, 6.0, 10.0)
CURVE_SEED = 0


def curve_gains(n: int, curve_db: float) -> np.ndarray:
  """``(n, 1, frames)`` slow gain curves of up to ``curve_db`` dB, one per
  excerpt, the same for every model (seed ``CURVE_SEED``)."""
  return np.asarray(level.random_gains(
      jax.random.key(CURVE_SEED), n, snippets.SPEC_FRAMES, 0.0, curve_db,
      snippets.FPS))


def run(model: embedding.Model, pairs: dict, gains, curves=(),
                log=print) -> list[dict]:
  """Both directions' metrics for each gain, then for each gain curve.

  Args:
    model: from ``dccaflax.load``.
    pairs: ``input_pipeline.load_pairs`` output (sheets and excerpts).
    gains: amplitude factors.
    curves: dB maxima of a slow gain curve within each excerpt, at gain 1.
    log: progress lines.

  Returns:
    One row per gain, then per curve: {'gain', 'db', 'curve_db', 'a2s':
    {...}, 's2a': {...}, 'n'}.
  """
  sheet_emb = embedding.embed_sheet(model, pairs['sheet'])
  n = len(pairs['spec'])
  rows = []
  settings = [(g, 0.0) for g in gains] + [(1.0, c) for c in curves]
  for g, curve_db in settings:
    t0 = time.time()
    gain = np.float32(g)
    if curve_db:
      gain = gain * curve_gains(n, curve_db)
    audio_emb = np.concatenate([
        embedding.embed_audio(model, np.asarray(level.relevel(
            pairs['spec'][i:i + results.CUT_BATCH],
            gain[i:i + results.CUT_BATCH] if gain.ndim else gain)))
        for i in range(0, n, results.CUT_BATCH)])
    m = retrieval.both_directions(sheet_emb, audio_emb)
    rows.append({'gain': g, 'db': float(20 * np.log10(g)),
                 'curve_db': curve_db, **m})
    log(f'gain {g:g} ({rows[-1]["db"]:+.1f} dB), curve <= {curve_db:g} dB: '
        f'A->S R@10 {m["a2s"]["R@10"]:.1f}, S->A R@10 '
        f'{m["s2a"]["R@10"]:.1f} ({time.time() - t0:.0f} s)')
  return rows


def markdown(rows: list[dict], title: str) -> str:
  """One line per gain or curve: A->S and S->A R@1, R@10, MR."""
  lines = [f'### {title}', '',
           '| gain | dB | curve dB | A→S R@1 | R@10 | MR | S→A R@1 | R@10 '
           '| MR |', '|' + '---|' * 9]
  for r in rows:
    curve = r.get('curve_db', 0.0)
    cells = [f'{r["gain"]:g}', f'{r["db"]:+.1f}',
             f'≤ {curve:g}' if curve else '–']
    for d in ('a2s', 's2a'):
      cells += [f'{r[d]["R@1"]:.1f}', f'{r[d]["R@10"]:.1f}',
                f'{r[d]["MR"]:g}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def figure(rows: list[dict], title: str, path: str) -> None:
  """R@10 of both directions against the global gain in dB and, in a
  second panel, against the depth of the gain curve (0 = no curve, gain 1).
  """
  import textwrap  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  flat = [r for r in rows if not r.get('curve_db')]
  curves = [r for r in rows if r.get('curve_db')]
  base = [r for r in flat if r['gain'] == 1.0]
  panels = [('audio gain (dB; 0 = as prepared)', [r['db'] for r in flat],
             flat)]
  if curves:
    panels.append(('gain curve within each excerpt: up to (dB)',
                   [0.0] * len(base) + [r['curve_db'] for r in curves],
                   base + curves))
  fig, axes = plt.subplots(1, len(panels), figsize=(4 + 3 * len(panels), 3.8),
                           sharey=True, squeeze=False,
                           gridspec_kw={'width_ratios': [2, 1][:len(panels)]})
  for ax, (xlabel, x, sel) in zip(axes[0], panels):
    for d, label in (('a2s', 'audio → sheet'), ('s2a', 'sheet → audio')):
      ax.plot(x, [r[d]['R@10'] for r in sel], 'o-', label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
  axes[0][0].axvline(0, color='grey', lw=0.5)
  axes[0][0].set_ylabel('R@10 (%)')
  axes[0][0].legend()
  fig.suptitle(textwrap.fill(title, 110), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
