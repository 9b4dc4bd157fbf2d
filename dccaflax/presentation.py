"""Presentation: text tables and figures of training, rankings, identifications.

Figures are written as PNG with matplotlib's Agg backend (imported on first
use, so the library's computing modules never pull in matplotlib).
"""

from __future__ import annotations

import numpy as np

from dccaflax import identify
from dccaflax import ranking as ranking_lib
from dccaflax import snippets


def _pyplot():
  """matplotlib.pyplot on the Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(plt, fig, path: str, title: str) -> None:
  """Titles, lays out, writes (PNG, 100 dpi) and closes a figure."""
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_history(history, path: str, title: str = '') -> None:
  """Training curve: loss (left) and validation R@10 (right) vs epoch, PNG.

  Args:
    history: rows of ``history.jsonl`` ('epoch', 'train/loss', 'val/corr',
      'val/a2s_R@10', 'val/s2a_R@10', optionally 'val/n_pairs'), or
      ``{label: rows}`` for several models in one figure (e.g. seeds).
    path: PNG to write.
    title: figure title.
  """
  plt = _pyplot()
  histories = history if isinstance(history, dict) else {'': history}
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
  for n, (label, rows) in enumerate(histories.items()):
    epochs = [r['epoch'] for r in rows]
    name = f'{label}: ' if label else ''
    ax1.plot(epochs, [r['train/loss'] for r in rows], 'o-', color=f'C{n}',
             label=f'{name}train')
    ax1.plot(epochs, [-r['val/corr'] for r in rows], 's--', color=f'C{n}',
             label=f'{name}valid (-held-out corr.)')
    ax2.plot(epochs, [r['val/a2s_R@10'] for r in rows], 'o-', color=f'C{n}',
             label=f'{name}audio -> sheet')
    ax2.plot(epochs, [r['val/s2a_R@10'] for r in rows], 's:', color=f'C{n}',
             label=f'{name}sheet -> audio')
  ax1.set_xlabel('epoch')
  ax1.set_ylabel('loss = -total correlation')
  ax1.legend(fontsize=7)
  ax1.grid(alpha=0.3)
  ax2.set_xlabel('epoch')
  n_val = list(histories.values())[-1][-1].get('val/n_pairs')
  ax2.set_ylabel('validation R@10 (%)' + (
      f', {n_val:.0f} candidates' if n_val else ''))
  ax2.set_ylim(0, 100)
  ax2.legend(fontsize=7)
  ax2.grid(alpha=0.3)
  _save(plt, fig, path, title)


def learning_curves(histories: dict, batch_size: int) -> dict:
  """Validation R@10 against pairs seen and training hours, per model.

  Args:
    histories: ``{label: rows of history.jsonl}`` ('step', 'train/pairs_per_s',
      'val/a2s_R@10', 'val/s2a_R@10').
    batch_size: pairs per step (the runs' ``TrainConfig.batch_size``).

  Returns:
    ``{label: {'pairs': (E,), 'hours': (E,), 'a2s': (E,), 's2a': (E,)}}``:
    pairs seen after each evaluated epoch; the training hours up to it, the
    sum over epochs of the pairs of the epoch over its measured pairs/s
    (validation excluded; a machine shared with other work shows here);
    validation R@10 (%) in both directions.
  """
  curves = {}
  for label, rows in histories.items():
    pairs = np.array([r['step'] * batch_size for r in rows], np.float64)
    per_epoch = np.diff(pairs, prepend=0.0)
    speed = np.array([r['train/pairs_per_s'] for r in rows], np.float64)
    curves[label] = {
        'pairs': pairs, 'hours': np.cumsum(per_epoch / speed) / 3600,
        'a2s': np.array([r['val/a2s_R@10'] for r in rows]),
        's2a': np.array([r['val/s2a_R@10'] for r in rows])}
  return curves


def plot_learning_curves(curves: dict, path: str, title: str = '',
                         n_val: int | None = None) -> None:
  """Validation R@10 (audio -> sheet) vs pairs seen (left) and vs training
  hours (right), one line per model (``learning_curves``), PNG."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
  for n, (label, c) in enumerate(curves.items()):
    for ax, x in zip(axes, (c['pairs'] / 1000, c['hours'])):
      ax.plot(x, c['a2s'], 'o-', color=f'C{n}', label=label)
  axes[0].set_xlabel('training pairs seen (thousands)')
  axes[1].set_xlabel('training hours, as the runs measured them')
  axes[0].set_ylabel('val. R@10, audio -> sheet (%)' + (
      f'\n{n_val} candidates' if n_val else ''))
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  _save(plt, fig, path, title)


def format_learning_curves(curves: dict) -> str:
  """Markdown: per model, its validation R@10 (A->S / S->A) after each
  epoch with the pairs seen and hours so far (``learning_curves``)."""
  lines = ['| model | pairs seen | training h | val A->S R@10 | val S->A R@10 |',
           '|---|---|---|---|---|']
  for label, c in curves.items():
    for i in range(len(c['pairs'])):
      lines.append(f"| {label} | {c['pairs'][i]:,.0f} | {c['hours'][i]:.2f} "
                   f"| {c['a2s'][i]:.1f} | {c['s2a'][i]:.1f} |")
  return '\n'.join(lines) + '\n'


def format_ranking(ranking: ranking_lib.Ranking, index) -> str:
  """The ranked list as a text table (one line per result)."""
  what = ('sheet snippets' if ranking.direction == 'audio->sheet'
          else 'audio excerpts')
  lines = [f'{ranking.direction}: top {len(ranking.results)} of '
           f'{ranking.n_candidates:,} {what} ({index.split} split)']
  if getattr(index, 'is_pages', False):
    lines.append(f'{"rank":>4}  {"score":>6}  {"page":<32} {"system":>6} '
                 f'{"x_px":>6} {"y_px":>6}')
    for r in ranking.results:
      x, y = index.page_xy[r.row]
      lines.append(f'{r.rank:>4}  {r.score:6.3f}  {r.piece:<32} {r.bar:>6} '
                   f'{x:6.0f} {y:6.0f}')
    return '\n'.join(lines)
  lines.append(f'{"rank":>4}  {"score":>6}  {"piece":<32} {"bar":>4} '
               f'{"onset":>5} {"time_s":>7}')
  for r in ranking.results:
    mark = '  <- true' if r.row == ranking.true_row else ''
    lines.append(f'{r.rank:>4}  {r.score:6.3f}  {r.piece:<32} {r.bar:>4} '
                 f'{r.onset:>5} {r.time_s:7.2f}{mark}')
  if ranking.true_row is not None:
    t = ranking.true_row
    onset = ranking_lib.onset_number(index, t)
    lines.append(f'true: {index.piece[t]} bar {index.bar[t]} onset {onset} '
                 f'at {index.time_s(t):.2f} s, rank {ranking.true_rank} of '
                 f'{ranking.n_candidates:,}')
  return '\n'.join(lines)


def figure(ranking: ranking_lib.Ranking, query: np.ndarray,
           candidates: np.ndarray, out: str, title: str = '',
           ncols: int = 5) -> str:
  """Draws a query above its ranked results, like the paper's Figure 3.

  Args:
    ranking: from ``ranking.rank``.
    query: ``(136, 100)`` spectrogram excerpt (audio->sheet) or ``(40, 100)``
      sheet snippet (sheet->audio).
    candidates: the results' snippets (audio->sheet: ``(R, 40, 100)``) or
      excerpts (sheet->audio: ``(R, 136, 100)``), in rank order.
    out: PNG path.
    title: figure title.
    ncols: results per row.

  The number above the query is the rank of the correct result (when known);
  the numbers above the results are their ranks (1 = best), the correct one
  framed in green.
  """
  plt = _pyplot()
  res = ranking.results
  ncols = max(1, min(ncols, len(res)))
  nrows = -(-len(res) // ncols)
  a2s = ranking.direction == 'audio->sheet'
  cell_h = 1.2 if a2s else 2.0
  fig = plt.figure(figsize=(2.4 * ncols, 2.6 + cell_h * nrows))
  gs = fig.add_gridspec(1 + nrows, ncols,
                        height_ratios=[2.2 if a2s else 1.3] + [cell_h] * nrows,
                        hspace=0.55, wspace=0.08)
  ax = fig.add_subplot(gs[0, max(0, ncols // 2 - 1):ncols // 2 + 1 + (
      ncols > 2)])
  if a2s:
    ax.imshow(query, origin='lower', aspect='auto', cmap='magma')
  else:
    ax.imshow(query, cmap='gray', vmin=0, vmax=255)
  head = 'query: ' + ('audio excerpt (3.2 s)' if a2s else 'sheet snippet')
  if ranking.true_rank is not None:
    head = f'{ranking.true_rank}\n' + head + (
        f' - correct result at rank {ranking.true_rank} of '
        f'{ranking.n_candidates:,}')
  ax.set_title(head, fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  for i, r in enumerate(res):
    a = fig.add_subplot(gs[1 + i // ncols, i % ncols])
    if a2s:
      a.imshow(candidates[i], cmap='gray', vmin=0, vmax=255)
    else:
      a.imshow(candidates[i], origin='lower', aspect='auto', cmap='magma')
    true = r.row == ranking.true_row
    a.set_title(f'{r.rank}' + (' (correct)' if true else '')
                + f'\n{r.piece[:30]}\nbar {r.bar}, {r.score:.2f}', fontsize=6.5,
                color='green' if true else 'black')
    a.set_xticks([])
    a.set_yticks([])
    for spine in a.spines.values():
      spine.set_color('green' if true else '0.6')
      spine.set_linewidth(3 if true else 0.8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.savefig(out, dpi=110, bbox_inches='tight')
  plt.close(fig)
  return out


def _ranked_pieces(ranking: list[tuple[str, float]], top: int) -> list[str]:
  """The ``top`` pieces of an identification's ranking, a line each."""
  return [f'{"rank":>4}  {"score":>6}  piece'] + [
      f'{i:>4}  {s:6.3f}  {p}' for i, (p, s) in enumerate(ranking[:top], 1)]


def format_page_identification(ident: identify.PageIdentification,
                               top: int = 5, timeline: bool = True) -> str:
  """Ranked pieces and the winning piece's bar along the page, as text."""
  lines = [f'{len(ident.system)} snippets along {int(ident.system.max()) + 1}'
           ' systems; score = votes (1/rank of each top-k hit) per snippet']
  lines += _ranked_pieces(ident.ranking, top)
  if timeline:
    best = ident.ranking[0][0]
    lines.append(f'best-matching position in {best} along the page:')
    lines.append(f'{"system":>6}  {"x_px":>6}  {"bar":>4}  {"hit_rank":>8}  '
                 f'{"time_s":>7}')
    for k, (x, _), b, r, t in zip(ident.system, ident.page_xy,
                                  ident.best_bar, ident.best_rank,
                                  ident.best_time_s):
      if b < 0:
        lines.append(f'{k + 1:>6}  {x:6.0f}  {"-":>4}  {"-":>8}')
      else:
        lines.append(f'{k + 1:>6}  {x:6.0f}  {b:>4}  {r:>8}  {t:7.2f}')
  return '\n'.join(lines)


def format_identification(ident: identify.Identification, top: int = 5,
                          timeline: bool = True) -> str:
  """Ranked pieces and the winning piece's bar over time, as text."""
  n_vote = int(ident.voting.sum())
  hop_s = (float(np.diff(ident.centre_s[:2])[0]) if len(ident.centre_s) > 1
           else identify.HOP_FRAMES / snippets.FPS)
  lines = [f'{len(ident.centre_s)} windows of 3.2 s every '
           f'{hop_s:.2f} s, {n_vote} voting; '
           'score = votes (1/rank of each top-k hit) per voting window']
  lines += _ranked_pieces(ident.ranking, top)
  if timeline:
    best = ident.ranking[0][0]
    lines.append(f'best-matching position in {best} over time:')
    lines.append(f'{"time_s":>8}  {"bar":>4}  {"hit_rank":>8}  {"score_s":>7}')
    for t, v, b, r, st in zip(ident.centre_s, ident.voting, ident.best_bar,
                              ident.best_rank, ident.best_time_s):
      if not v:
        lines.append(f'{t:8.2f}  {"":>4}  {"(quiet)":>8}')
      elif b < 0:
        lines.append(f'{t:8.2f}  {"-":>4}  {"-":>8}')
      else:
        lines.append(f'{t:8.2f}  {b:>4}  {r:>8}  {st:7.2f}')
  return '\n'.join(lines)
