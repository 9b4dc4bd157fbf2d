"""Sheet augmentation on the device: other engravings of the same notes.

A collection's engraving may spend more or fewer px of strip on a second of
music than the training data's (O'Neill's tunes, written in shorter note
values, about 1.6 times Nottingham's px per audio frame at the same tempo).
``scale_width`` (``TrainConfig.aug_sheet_scale``) draws, per snippet, a
horizontal scale factor log-uniform in ``[1 / (1 + s), 1 + s]`` and
resamples the window about its centre (the notehead stays on column
``SHEET_WIDTH // 2``) from a window cut ``augment.SHEET_SCALE_MARGIN`` px
wider each side, which ``pieceset.SHEET_GAP`` leaves room for.  Factor > 1
shows more music in the 100 px (a tighter engraving); < 1 shows less.  Off
in the paper's recipe.

Shapes: ``(N, 40, 100 + 2 * margin)`` uint8 in, ``(N, 40, 100)`` uint8 out.

Scans (``scan``; ``TrainConfig.aug_sheet_*``): a score another engraver set
and a scanner digitised differs in more than spacing.  Per snippet, each
drawn independently, in the order a page goes through: a rotation (the page
lies askew) and an isotropic zoom (another staff size) about the notehead,
thicker or thinner strokes (grey dilation or erosion over the 4-neighbours,
another pen or toner), a Gaussian blur (focus), contrast (faint ink, grey
paper, and sometimes a hard threshold, as a bilevel scan), and noise
(Gaussian grain and speckles).  Ink (255 - grey) is what is resampled and
blurred, so paper stays paper at the edges.  Each setting at 0 is off and
traces no op; all are off in the paper's recipe.  Shapes: ``(N, 40, 100)``
uint8 in and out.  ``dccaflax.augment`` declares the settings and limits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dccaflax import audio_augment
from dccaflax import snippets

_BLUR_RADIUS = 4                 # px each side of the blur kernel


def scale_factors(key: jax.Array, n: int, max_scale: float) -> jax.Array:
  """``(n, 1)`` factors log-uniform in ``[1 / (1 + max_scale), 1 +
  max_scale]``."""
  top = jnp.log1p(jnp.float32(max_scale))
  return jnp.exp(jax.random.uniform(key, (n, 1), minval=-top, maxval=top))


def scale_width(key: jax.Array, wide: jax.Array, max_scale: float,
                width: int = snippets.SHEET_WIDTH) -> jax.Array:
  """Snippets rescaled horizontally about their centre by random factors
  (``scale_factors``; see the module doc).

  Args:
    key: PRNG key.
    wide: ``(N, H, width + 2 * margin)`` uint8 snippets cut ``margin`` px
      wider each side (``input_pipeline.cut_windows(sheet_margin=...)``), at
      least ``width / 2 * max_scale`` + 1.
    max_scale: at most ``augment.MAX_SHEET_SCALE``.
    width: output width.

  Returns:
    ``(N, H, width)`` uint8, 255 = paper.
  """
  return rescale(wide, scale_factors(key, wide.shape[0], max_scale), width)


def rescale(wide: jax.Array, factor: jax.Array,
            width: int = snippets.SHEET_WIDTH) -> jax.Array:
  """Snippets rescaled horizontally about their centre by given factors.

  Args:
    wide: ``(N, H, width + 2 * margin)`` uint8, cut ``margin`` px wider each
      side; a factor reads ``width / 2 * factor`` px each side of the centre,
      which must be at most ``width / 2 + margin - 1``.
    factor: ``(N, 1)`` (or broadcastable) factors, > 1 shows more music.
    width: output width.

  Returns:
    ``(N, H, width)`` uint8, 255 = paper.
  """
  margin = (wide.shape[-1] - width) // 2
  factor = jnp.asarray(factor, jnp.float32)
  t = jnp.arange(width, dtype=jnp.float32)[None, :] - width // 2
  pos = jnp.broadcast_to(margin + width // 2 + t * factor,
                         (wide.shape[0], width))                # (n, width)
  # ink (0 = paper) is resampled, so paper stays paper at any position
  ink = snippets.PAPER - wide.astype(jnp.float32)
  out = snippets.PAPER - audio_augment.resample(ink, pos)
  return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)


def _uniform(key, n, lo, hi):
  return jax.random.uniform(key, (n, 1, 1), minval=lo, maxval=hi)


def rotate_zoom(ink: jax.Array, angle_deg: jax.Array,
                zoom: jax.Array) -> jax.Array:
  """Ink rotated and zoomed about the snippet's centre (bilinear, 0 outside).

  Args:
    ink: ``(N, H, W)`` float32, 0 = paper.
    angle_deg: ``(N,)`` rotation, degrees, clockwise as seen (rows down).
    zoom: ``(N,)`` scale, > 1 enlarges (shows less music).

  Returns:
    ``(N, H, W)`` float32; at angle 0 and zoom 1 the input exactly.
  """
  n, h, w = ink.shape
  cy, cx = h // 2, w // 2
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy,
                        jnp.arange(w, dtype=jnp.float32) - cx, indexing='ij')
  theta = jnp.deg2rad(angle_deg)[:, None, None]
  z = zoom[:, None, None]
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  # output pixel -> source pixel: the inverse rotation, divided by the zoom
  src_y = cy + (cos * yy - sin * xx) / z
  src_x = cx + (sin * yy + cos * xx) / z

  def one(img, sy, sx):
    return jax.scipy.ndimage.map_coordinates(img, [sy, sx], order=1,
                                             mode='constant', cval=0.0)
  return jax.vmap(one)(ink, src_y, src_x)


def stroke(ink: jax.Array, amount: jax.Array) -> jax.Array:
  """Strokes thickened (``amount`` > 0) or thinned (< 0): a blend, by
  ``|amount|`` in [0, 1], towards the grey dilation or erosion over each
  pixel and its 4 neighbours.  ``ink`` ``(N, H, W)``, ``amount``
  ``(N, 1, 1)``."""
  p = jnp.pad(ink, ((0, 0), (1, 1), (1, 1)))
  h, w = ink.shape[1:]
  nbrs = jnp.stack([p[:, 1:h + 1, 1:w + 1], p[:, :h, 1:w + 1],
                    p[:, 2:, 1:w + 1], p[:, 1:h + 1, :w], p[:, 1:h + 1, 2:]])
  grow = jnp.maximum(amount, 0.0) * (nbrs.max(axis=0) - ink)
  shrink = jnp.maximum(-amount, 0.0) * (nbrs.min(axis=0) - ink)
  return ink + grow + shrink


def blur(ink: jax.Array, sigma: jax.Array) -> jax.Array:
  """Separable Gaussian blur of per-snippet ``sigma`` ``(N, 1, 1)`` px (0 =
  none), ``_BLUR_RADIUS`` px each side, 0 beyond the edges."""
  r = _BLUR_RADIUS
  k = jnp.arange(-r, r + 1, dtype=jnp.float32)[None, :]          # (1, K)
  s = jnp.maximum(sigma[:, 0], 1e-3)                             # (N, 1)
  weights = jnp.exp(-0.5 * (k / s) ** 2)
  weights = weights / weights.sum(axis=1, keepdims=True)         # (N, K)
  h, w = ink.shape[1:]
  p = jnp.pad(ink, ((0, 0), (0, 0), (r, r)))
  ink = sum(weights[:, i, None, None] * p[:, :, i:i + w]
            for i in range(2 * r + 1))
  p = jnp.pad(ink, ((0, 0), (r, r), (0, 0)))
  return sum(weights[:, i, None, None] * p[:, i:i + h, :]
             for i in range(2 * r + 1))


def scan(key: jax.Array, sheets: jax.Array, rotate: float = 0.0,
         zoom: float = 0.0, stroke_amount: float = 0.0, blur_sigma: float = 0.0,
         contrast: float = 0.0, noise: float = 0.0) -> jax.Array:
  """Snippets as another engraver and a scanner might give them (see the
  module doc).  Each maximum is static; 0 skips its op.

  Args:
    key: PRNG key.
    sheets: ``(N, H, W)`` uint8, 255 = paper.
    rotate: rotation uniform in ``[-rotate, rotate]`` degrees.
    zoom: isotropic scale log-uniform in ``[1 / (1 + zoom), 1 + zoom]``.
    stroke_amount: stroke change uniform in ``[-stroke, stroke]``
      (``stroke``; > 0 thicker).
    blur_sigma: Gaussian sigma uniform in ``[0, blur]`` px.
    contrast: ink kept at a factor in ``[1 - contrast / 2, 1]``, paper
      greyed by up to ``contrast * 64`` levels, and with probability
      ``contrast / 2`` a hard threshold uniform in ``[0.3, 0.7]`` of full
      ink.
    noise: Gaussian grain of sd up to ``noise * 40`` levels and speckles
      (pixels set to ink or paper) on up to ``noise * 2 %`` of pixels.

  Returns:
    ``(N, H, W)`` uint8.
  """
  n = sheets.shape[0]
  keys = jax.random.split(key, 11)
  ink = snippets.PAPER - sheets.astype(jnp.float32)
  if rotate or zoom:
    angle = jax.random.uniform(keys[0], (n,), minval=-rotate, maxval=rotate)
    top = jnp.log1p(jnp.float32(zoom))
    scale = jnp.exp(jax.random.uniform(keys[1], (n,), minval=-top,
                                       maxval=top))
    ink = rotate_zoom(ink, angle, scale)
  if stroke_amount:
    ink = stroke(ink, _uniform(keys[2], n, -stroke_amount, stroke_amount))
  if blur_sigma:
    ink = blur(ink, _uniform(keys[3], n, 0.0, blur_sigma))
  if contrast:
    ink = ink * _uniform(keys[4], n, 1.0 - contrast / 2, 1.0)
    grey = _uniform(keys[5], n, 0.0, contrast * 64.0)
    ink = grey + (1.0 - grey / snippets.PAPER) * ink
    level = _uniform(keys[6], n, 0.3, 0.7) * snippets.PAPER
    hard = jax.random.bernoulli(keys[10], contrast / 2, (n, 1, 1))
    ink = jnp.where(hard, jnp.where(ink > level, float(snippets.PAPER), 0.0),
                    ink)
  if noise:
    sd = _uniform(keys[7], n, 0.0, noise * 40.0)
    ink = ink + sd * jax.random.normal(keys[8], ink.shape)
    u = jax.random.uniform(keys[9], ink.shape + (2,))
    rate = _uniform(jax.random.fold_in(keys[9], 1), n, 0.0, noise * 0.02)
    speck = u[..., 0] < rate
    ink = jnp.where(speck, jnp.where(u[..., 1] < 0.5, float(snippets.PAPER),
                                     0.0), ink)
  out = snippets.PAPER - ink
  return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)


def erase_columns(key: jax.Array, sheets: jax.Array,
                  max_px: int) -> jax.Array:
  """One band of up to ``max_px`` columns per snippet painted over with
  paper, width and position uniform (a smudge, a fold, a torn edge):
  ``audio_augment.mask`` on the ink.  ``(N, H, W)`` uint8 in and out."""
  ink = snippets.PAPER - sheets.astype(jnp.float32)
  ink = audio_augment.mask(key, ink, max_px, 0)
  return (snippets.PAPER - ink).astype(jnp.uint8)
