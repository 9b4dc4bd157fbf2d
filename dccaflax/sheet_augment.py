"""Sheet augmentation on the device: other engravings of the same notes.

A collection's engraving may spend more or fewer px of strip on a second of
music than the training data's (O'Neill's tunes, written in shorter note
values, about 1.6 times Nottingham's px per audio frame at the same tempo).
``scale_width`` (``TrainConfig.aug_sheet_scale``) draws, per snippet, a
horizontal scale factor log-uniform in ``[1 / (1 + s), 1 + s]`` and
resamples the window about its centre (the notehead stays on column
``SHEET_WIDTH // 2``) from a window cut ``MARGIN`` px wider each side, which
``pieceset.SHEET_GAP`` leaves room for.  Factor > 1 shows more music in the
100 px (a tighter engraving); < 1 shows less.  Off in the paper's recipe.

Shapes: ``(N, 40, 100 + 2 * MARGIN)`` uint8 in, ``(N, 40, 100)`` uint8 out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dccaflax import audio_augment
from dccaflax import pieceset
from dccaflax import snippets

MAX_SCALE = pieceset.MAX_SHEET_SCALE   # largest scale deviation (1.3x)
MARGIN = pieceset.SHEET_SCALE_MARGIN   # px each side a scale of 1.3 reads


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
    wide: ``(N, H, width + 2 * MARGIN)`` uint8 snippets cut ``MARGIN`` px
      wider each side (``input_pipeline.cut_windows(sheet_margin=MARGIN)``).
    max_scale: at most ``MAX_SCALE``.
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
