"""Figures of prepared data: a piece's strip over its spectrogram, with
snippet pairs like the paper's Figure 1."""

from __future__ import annotations

import json
import os

import numpy as np

from data_prep import performance
from dccaflax import audio
from dccaflax import augment
from dccaflax import pieceset
from dccaflax import snippets
from dccaflax import sources as sources_lib


def find_piece(data_dir: str, name: str | None, split: str | None = None,
               config: str = 'pieces'):
  """The ``pieces`` example of a piece (dict of numpy arrays) and its split.

  Args:
    config: which ``pieces`` config (``dccaflax.sources.config_name``).

  Raises:
    KeyError: unknown piece, listing a few known names.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  sources = tfds.data_source(f'nottingham_audio_sheet/{config}',
                             data_dir=data_dir)
  names = []
  for s in ([split] if split else sorted(sources)):
    if s not in sources:
      raise KeyError(f'split {s!r} not prepared in {data_dir} '
                     f'(have {sorted(sources)})')
    src = sources[s]
    for i in range(len(src)):
      ex = src[i]
      piece = ex['piece'].decode()
      if name is None or piece == name:
        return ex, s
      names.append(piece)
  raise KeyError(f'no piece {name!r} in {data_dir}; some known: '
                 f'{", ".join(names[:5])}')


def draw(ex, out: str, start_s: float = 0.0, seconds: float = 10.0,
         n_pairs: int = 6) -> str:
  """Writes the figure for one ``pieces`` example; returns ``out``."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  strip = ex['strip']
  spec = audio.dequantize(ex['spec_codes'], float(ex['spec_scale']))
  frames, xs = ex['onset_frames'], ex['notehead_x']
  f0 = int(start_s * snippets.FPS)
  f1 = min(spec.shape[1], int((start_s + seconds) * snippets.FPS))
  sel = np.flatnonzero((frames >= f0) & (frames < f1))
  if not len(sel):
    raise ValueError(f'no onset between {start_s} s and {start_s + seconds} s')
  x0 = max(0, int(xs[sel[0]]) - 60)
  x1 = min(strip.shape[1], int(xs[sel[-1]]) + 60)
  colors = plt.cm.tab10(np.arange(len(sel)) % 10)

  fig = plt.figure(figsize=(14, 7.5))
  gs = fig.add_gridspec(4, n_pairs, height_ratios=[1.1, 2.2, 0.9, 2.2],
                        hspace=0.7)
  ax = fig.add_subplot(gs[0, :])
  ax.imshow(strip[:, x0:x1], cmap='gray', vmin=0, vmax=255, aspect='auto',
            extent=(x0, x1, strip.shape[0], 0))
  ax.scatter(xs[sel], np.full(len(sel), 1.5), c=colors, marker='v', s=18)
  ax.set_title(f'{ex["piece"].decode()}: unrolled score, noteheads of the '
               f'{len(sel)} onsets in {start_s:g}-{start_s + seconds:g} s',
               fontsize=9)
  ax.set_xlabel('strip x (px)', fontsize=8)
  ax.tick_params(labelsize=7)
  ax = fig.add_subplot(gs[1, :])
  ax.imshow(spec[:, f0:f1], origin='lower', aspect='auto', cmap='magma',
            extent=(f0, f1, 0, spec.shape[0]))
  ax.vlines(frames[sel], 0, spec.shape[0] * 0.06, colors=colors, lw=2)
  ax.vlines(frames[sel], 0, spec.shape[0], colors=colors, lw=0.5, alpha=0.5)
  ax.set_title('log spectrogram (136 log-frequency bins, 31.25 frames/s) '
               'with onset frames', fontsize=9)
  ax.set_xlabel('frame', fontsize=8)
  ax.tick_params(labelsize=7)
  picks = sel[np.linspace(0, len(sel) - 1, min(n_pairs, len(sel)))
              .round().astype(int)]
  for j, i in enumerate(picks):
    a = fig.add_subplot(gs[2, j])
    a.imshow(snippets.sheet_snippet(strip, xs[i]), cmap='gray', vmin=0,
             vmax=255)
    a.axvline(snippets.SHEET_WIDTH // 2, color='r', lw=0.6, alpha=0.6)
    a.set_title(f'onset {i}: x={xs[i]:.0f}', fontsize=7)
    a.axis('off')
    a = fig.add_subplot(gs[3, j])
    a.imshow(snippets.spec_excerpt(spec, frames[i]), origin='lower',
             cmap='magma', aspect='auto')
    a.axvline(snippets.SPEC_FRAMES // 2, color='c', lw=0.6, alpha=0.6)
    a.set_title(f'frame {frames[i]}', fontsize=7)
    a.axis('off')
  fig.savefig(out, dpi=110, bbox_inches='tight')
  plt.close(fig)
  return out


def rendering_spectrograms(ex) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """``[(tag, spec (136, T) float32, onset frames (P,))]`` of every rendering
  of a ``pieces`` example, the primary first."""
  return [(tag, audio.dequantize(codes, scale), frames) for tag, codes, scale,
          frames in pieceset.piece_renderings(ex)]


def rendering_labels(ex) -> list[str]:
  """A label per rendering: its tag, and for a drawn performance the drawn
  instrument, soundfont and tempo factor (``rendering_params``)."""
  tags = [tag for tag, _, _ in rendering_spectrograms(ex)]
  params = json.loads(pieceset.text(ex.get('rendering_params', b'[]')) or
                      '[]')
  names = {**performance.TRAIN_PROGRAMS, **performance.HELDOUT_PROGRAMS}
  out = []
  for k, tag in enumerate(tags):
    p = params[k] if k < len(params) else None
    if p and p.get('slot'):
      sf = os.path.splitext(os.path.basename(p['soundfont']))[0]
      name = names.get(p['program'], f'program {p["program"]}')
      tag = f'{tag}\n{name}\n{sf}, tempo {p["tempo"]:.2f}'
    out.append(tag)
  return out


def draw_renderings(ex, out: str, n_pairs: int = 5) -> str:
  """Writes a figure of the same pairs in every rendering; returns ``out``.

  Top row: ``n_pairs`` evenly spaced sheet snippets; below, one row per
  rendering (tag on the left): the spectrogram excerpt of the same pair at
  that rendering's onset frame.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rends = rendering_spectrograms(ex)
  labels = rendering_labels(ex)
  xs = ex['notehead_x']
  picks = np.linspace(0, len(xs) - 1, min(n_pairs, len(xs))).round().astype(
      int)
  fig, axes = plt.subplots(1 + len(rends), len(picks), squeeze=False,
                           figsize=(2.4 * len(picks), 1.2 + 1.5 * len(rends)))
  for j, i in enumerate(picks):
    a = axes[0, j]
    a.imshow(snippets.sheet_snippet(ex['strip'], xs[i]), cmap='gray', vmin=0,
             vmax=255)
    a.set_title(f'pair {i}', fontsize=8)
    a.axis('off')
    for r, (tag, spec, frames) in enumerate(rends, start=1):
      a = axes[r, j]
      a.imshow(snippets.spec_excerpt(spec, frames[i]), origin='lower',
               cmap='magma', aspect='auto')
      a.axvline(snippets.SPEC_FRAMES // 2, color='c', lw=0.6, alpha=0.6)
      a.set_xticks([])
      a.set_yticks([])
      a.set_title(f'frame {frames[i]}', fontsize=7)
      if j == 0:
        a.set_ylabel(labels[r - 1], fontsize=7)
  fig.suptitle(f'{ex["piece"].decode()}: the same pairs in its '
               f'{len(rends)} renderings', fontsize=10)
  fig.savefig(out, dpi=75, bbox_inches='tight')
  plt.close(fig)
  return out


# One row per audio augmentation (dccaflax.augment.REGISTRY, at the values of
# the robust recipe, experiments/nottingham_robust.flags), then all of them.
AUGMENTATIONS = (('none', {}),) + augment.figure_rows(augment.AUDIO)


def draw_augmentations(ex, out: str, n_pairs: int = 5, seed: int = 0) -> str:
  """Writes a figure of the same excerpts under each audio augmentation
  (``AUGMENTATIONS``, drawn as the training step draws them, from
  ``seed``); returns ``out``.  Columns: ``n_pairs`` evenly spaced pairs of
  the primary rendering."""
  import jax  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  _, spec, frames = rendering_spectrograms(ex)[0]
  picks = np.linspace(0, len(frames) - 1, min(n_pairs, len(frames))).round(
  ).astype(int)
  m = augment.layout_gap(augment.AUDIO)
  half = snippets.SPEC_FRAMES // 2 + m    # the widest window of any
  padded = np.pad(spec, ((0, 0), (half, half)))   # silence, as between pieces
  wide = np.stack([padded[:, frames[i]:frames[i] + 2 * half] for i in picks])
  fig, axes = plt.subplots(len(AUGMENTATIONS), len(picks), squeeze=False,
                           figsize=(2.4 * len(picks),
                                    1.5 * len(AUGMENTATIONS)))
  for r, (label, setting) in enumerate(AUGMENTATIONS):
    aug = augment.AugmentConfig(**setting)
    trim = m - augment.margin(aug, augment.AUDIO)
    got = np.asarray(augment.apply(
        augment.AUDIO, jax.random.fold_in(jax.random.key(seed), r),
        wide[:, :, trim:wide.shape[-1] - trim], aug))
    for j, i in enumerate(picks):
      a = axes[r, j]
      a.imshow(got[j], origin='lower', cmap='magma', aspect='auto', vmin=0,
               vmax=max(float(wide.max()), 1e-3))
      a.axvline(snippets.SPEC_FRAMES // 2, color='c', lw=0.6, alpha=0.6)
      a.set_xticks([])
      a.set_yticks([])
      if r == 0:
        a.set_title(f'pair {i}', fontsize=8)
      if j == 0:
        a.set_ylabel(label, fontsize=8)
  fig.suptitle(f'{ex["piece"].decode()}: the same excerpts under each audio '
               'augmentation (dccaflax.audio_augment)', fontsize=10)
  fig.savefig(out, dpi=75, bbox_inches='tight')
  plt.close(fig)
  return out


def draw_collections(data_dir: str, collections, out: str,
                     split: str = 'test', max_pieces: int | None = 40,
                     scale: float = 1.25) -> str:
  """Writes a figure of each collection's geometry; returns ``out``.

  One row per collection: the histogram of its pieces' px of strip per
  audio frame (``evaluators.collections.px_per_frame``, the first
  ``max_pieces`` of ``split``), then one pair: the sheet snippet, the same snippet rescaled
  by ``1 / scale`` and ``scale`` (``sheet_augment.rescale``, as
  ``aug_sheet_scale`` draws them), and the audio excerpt.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from dccaflax import input_pipeline  # pylint: disable=g-import-not-at-top
  from dccaflax import sheet_augment  # pylint: disable=g-import-not-at-top
  from dccaflax.evaluators import collections as collections_lib  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(len(collections), 5, squeeze=False,
                           figsize=(13, 2.2 * len(collections)),
                           gridspec_kw=dict(width_ratios=[1.6, 1, 1, 1, 1],
                                            hspace=0.55))
  bins = np.linspace(0.0, 4.0, 41)
  m = augment.SHEET_SCALE_MARGIN
  for r, collection in enumerate(collections):
    ps = input_pipeline.load_pieces(data_dir, split, max_pieces,
                                    collections=(collection,))
    ratios = collections_lib.px_per_frame(
        np.asarray(ps.names, object)[ps.piece_id], ps.notehead_x,
        ps.onset_frame)
    a = axes[r, 0]
    a.hist(np.clip(ratios, bins[0], bins[-1]), bins=bins, color='C0')
    a.axvline(np.median(ratios), color='k', lw=1)
    a.set_ylabel(collection, fontsize=9)
    a.set_title(f'px per frame: median {np.median(ratios):.2f} '
                f'({len(ratios)} pieces)', fontsize=8)
    i = len(ps) // 3
    wide, spec = input_pipeline.batch_windows(ps.arrays, jnp.array([i]),
                                              sheet_margin=m)
    panels = [('sheet snippet', np.asarray(wide[0, :, m:-m])),
              (f'x {1 / scale:.2f}', np.asarray(sheet_augment.rescale(
                  wide, jnp.full((1, 1), 1 / scale))[0])),
              (f'x {scale:.2f}', np.asarray(sheet_augment.rescale(
                  wide, jnp.full((1, 1), scale))[0]))]
    for j, (label, img) in enumerate(panels, start=1):
      axes[r, j].imshow(img, cmap='gray', vmin=0, vmax=255)
      axes[r, j].set_title(label, fontsize=8)
      axes[r, j].axis('off')
    a = axes[r, 4]
    a.imshow(np.asarray(spec[0]), origin='lower', cmap='magma',
             aspect='auto')
    a.axvline(snippets.SPEC_FRAMES // 2, color='c', lw=0.6, alpha=0.6)
    a.set_xticks([])
    a.set_yticks([])
    a.set_title('its audio excerpt (3.2 s)', fontsize=8)
  axes[-1, 0].set_xlabel('px of strip per audio frame (per piece)')
  fig.suptitle(f'{split} pieces of each collection: engraving against audio '
               'at 120 qpm, and the sheet scale augmentation', fontsize=10)
  fig.savefig(out, dpi=75, bbox_inches='tight')
  plt.close(fig)
  return out


# One row per sheet augmentation (dccaflax.augment.REGISTRY, the scan-like
# ones at the values of experiments/engravings_scans.flags), then all of them.
SHEET_AUGMENTATIONS = augment.figure_rows(augment.SHEET)


def draw_sheets(data_dir: str, name: str, split: str, sources, out: str,
                n_pairs: int = 6, seed: int = 0) -> str:
  """Writes a figure of the same sheet snippets in each engraving and under
  each scan-like augmentation; returns ``out``.

  Rows: the piece's snippets (``n_pairs`` evenly spaced pairs) in each data
  source of ``sources`` (e.g. 'nottingham', 'nottingham:verovio_leland'),
  then the first one's under each of ``SHEET_AUGMENTATIONS``, drawn as the
  training step draws them (``augment.apply``) from ``seed``.

  Raises:
    KeyError: the piece or split is not prepared in a source.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = []
  for src in sources:
    ex, _ = find_piece(data_dir, name, split,
                       sources_lib.config_name('pieces', src))
    xs = ex['notehead_x']
    picks = np.linspace(0, len(xs) - 1, min(n_pairs, len(xs))).round(
    ).astype(int)
    rows.append((sources_lib.split_source(src)[1],
                 np.stack([snippets.sheet_snippet(ex['strip'], xs[i])
                           for i in picks])))
  base = rows[0][1]
  for r, (label, setting) in enumerate(SHEET_AUGMENTATIONS):
    got = augment.apply(augment.SHEET,
                        jax.random.fold_in(jax.random.key(seed), r), base,
                        augment.AugmentConfig(**setting))
    rows.append((label, np.asarray(got)))
  n = base.shape[0]
  fig, axes = plt.subplots(len(rows), n, squeeze=False,
                           figsize=(1.9 * n, 0.85 * len(rows)))
  for r, (label, sheets) in enumerate(rows):
    for j in range(n):
      a = axes[r, j]
      a.imshow(sheets[j], cmap='gray', vmin=0, vmax=255)
      a.axvline(snippets.SHEET_WIDTH // 2, color='r', lw=0.5, alpha=0.4)
      a.set_xticks([])
      a.set_yticks([])
      if j == 0:
        a.set_ylabel(label, fontsize=7, rotation=0, ha='right', va='center')
  fig.suptitle(f'{name} ({split}): the same snippets in each engraving, then '
               f'{rows[0][0]}\'s under each scan-like augmentation '
               '(dccaflax.sheet_augment.scan)', fontsize=9)
  fig.savefig(out, dpi=90, bbox_inches='tight')
  plt.close(fig)
  return out
