"""Presentation: text tables and figures of training, rankings, identifications.

Figures are written as PNG with matplotlib's Agg backend (imported on first
use, so the library's computing modules never pull in matplotlib).
"""

from __future__ import annotations


def _pyplot():
  """matplotlib.pyplot on the Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_history(history: list[dict], path: str, title: str = '') -> None:
  """Training curve: loss (left) and validation R@10 (right) vs epoch, PNG.

  Args:
    history: rows of ``history.jsonl`` ('epoch', 'train/loss', 'val/corr',
      'val/a2s_R@10', 'val/s2a_R@10', optionally 'val/n_pairs').
    path: PNG to write.
    title: figure title.
  """
  plt = _pyplot()
  epochs = [r['epoch'] for r in history]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
  ax1.plot(epochs, [r['train/loss'] for r in history], 'o-', label='train')
  ax1.plot(epochs, [-r['val/corr'] for r in history], 's--',
           label='valid (-held-out corr.)')
  ax1.set_xlabel('epoch')
  ax1.set_ylabel('loss = -total correlation')
  ax1.legend()
  ax1.grid(alpha=0.3)
  ax2.plot(epochs, [r['val/a2s_R@10'] for r in history], 'o-',
           label='audio -> sheet')
  ax2.plot(epochs, [r['val/s2a_R@10'] for r in history], 's-',
           label='sheet -> audio')
  ax2.set_xlabel('epoch')
  n_val = history[-1].get('val/n_pairs')
  ax2.set_ylabel('validation R@10 (%)' + (
      f', {n_val:.0f} candidates' if n_val else ''))
  ax2.set_ylim(0, 100)
  ax2.legend()
  ax2.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
