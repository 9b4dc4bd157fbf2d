"""Loudness of ``log(1 + x)`` spectrograms: re-levelling, normalisation, gains.

The audio features are ``L = log(1 + m)`` of a filterbank magnitude ``m``
(``dccaflax.audio.spectrogram``).  The magnitude is linear in the waveform, so
the same recording ``g`` times louder has exactly

  ``L' = log(1 + g (e^L - 1)) = relevel(L, g)``.

The paper feeds ``L`` as it is, so every level is another input: measured on
a narrow model, 3 dB quieter loses 80 % of R@10, 6 dB either way is chance.

:func:`normalize` makes an excerpt independent of a global gain by
construction: back to the magnitude, divided by a level statistic of the
excerpt that scales with the gain, brought to that statistic's reference
(about its median over FluidR3 training excerpts at the pipeline's level, so
normalised inputs keep the range the paper's model sees), and logged again.
``normalize(relevel(L, g)) == normalize(L)`` up to float rounding for every
``g > 0``, as long as the statistic is above its floor (77 dB below the
reference; below it an excerpt is treated as near-silence and scaled as if
it were at the floor).  Two statistics (``method``):

* ``'peak'``: the loudest frame's mean magnitude.  The default.  Over the
  first 20,000 training excerpts (FluidR3, velocity 90) it spreads by 2.3 dB
  (5th to 95th percentile), so an in-distribution excerpt is scaled by about
  +-1 dB and the tower sees nearly the paper's input; a note's attack lands
  at the reference whatever the recording's level.
* ``'mean'``: the excerpt's mean magnitude.  It spreads by 7.2 dB over the
  same excerpts (it counts how many notes sound and how long, not how loud
  they are), so normalising by it moves sparse and dense excerpts apart in
  the ``log(1 + x)`` curve; kept for models trained with it.

What a global gain cannot describe (dynamics within the excerpt, another
instrument's spectral balance) is left to augmentation: :func:`random_gains`
draws a gain per excerpt plus a slow gain curve across its frames, applied
with :func:`relevel` inside the training step.

All functions are pure ``jax.numpy`` (NumPy arrays in, JAX arrays out) and
broadcast over leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NONE = 'none'   # no normalisation: the paper's input
PEAK = 'peak'   # the loudest frame's mean magnitude to the reference
MEAN = 'mean'   # the excerpt's mean magnitude to the reference
METHODS = (NONE, PEAK, MEAN)
# The level each statistic is brought to.  'peak': its median over the first
# 20,000 training excerpts (FluidR3, velocity 90; 'mean' has 0.96 there, but
# keeps the 0.7 its models were trained with).
REFERENCE = {PEAK: 2.6, MEAN: 0.7}
FLOOR_DB = 77.0   # statistics this far below the reference are not raised
CURVE_PERIOD_S = (2.0, 8.0)   # range of the gain curve's period (one sine)


def db_to_gain(db):
  """Amplitude gain of ``db`` decibels (``10 ** (db / 20)``)."""
  return 10.0 ** (jnp.asarray(db, jnp.float32) / 20.0)


def relevel(spec, gain):
  """The features of the same audio ``gain`` times louder.

  Args:
    spec: ``(..., bins, frames)`` float, ``log(1 + magnitude)``.
    gain: amplitude factor(s) > 0, broadcastable to ``spec`` (e.g. a scalar,
      ``(N, 1, 1)`` per excerpt or ``(N, 1, frames)`` per frame).

  Returns:
    ``(..., bins, frames)`` float32 ``log(1 + gain * (e^spec - 1))``.
  """
  spec = jnp.asarray(spec, jnp.float32)
  return jnp.log1p(jnp.asarray(gain, jnp.float32) * jnp.expm1(spec))


def check_method(method) -> str:
  """A normalisation method name, checked.

  Args:
    method: one of ``METHODS``; a bool is read as written by models trained
      before there was a choice (True: ``'mean'``, False: ``'none'``).

  Raises:
    ValueError: an unknown method.
  """
  if isinstance(method, bool):
    return MEAN if method else NONE
  if method not in METHODS:
    raise ValueError(f'unknown level normalisation {method!r}; expected one '
                     f'of {", ".join(METHODS)}')
  return method


def floor(method: str) -> float:
  """The smallest statistic ``normalize`` scales to the reference."""
  return REFERENCE[method] * 10.0 ** (-FLOOR_DB / 20.0)


def statistic(magnitude, method: str = PEAK):
  """An excerpt's level statistic, proportional to a global gain.

  Args:
    magnitude: ``(..., bins, frames)`` float, the filterbank magnitude
      ``e^L - 1``.
    method: ``'peak'`` (the loudest frame's mean over bins) or ``'mean'``.

  Returns:
    ``(..., 1, 1)`` float32.
  """
  magnitude = jnp.asarray(magnitude, jnp.float32)
  if method == PEAK:
    frames = jnp.mean(magnitude, axis=-2, keepdims=True)
    return jnp.max(frames, axis=-1, keepdims=True)
  if method == MEAN:
    return jnp.mean(magnitude, axis=(-2, -1), keepdims=True)
  raise ValueError(f'no level statistic for {method!r}')


def normalize(spec, method: str = PEAK):
  """Each excerpt brought to the reference level (independent of its gain).

  Args:
    spec: ``(..., bins, frames)`` float ``log(1 + magnitude)``, one excerpt
      per leading index.
    method: the level statistic, ``'peak'`` or ``'mean'`` (see the module
      docstring); ``'none'`` returns ``spec`` as float32.

  Returns:
    ``(..., bins, frames)`` float32: the excerpt's magnitude times
    ``REFERENCE[method] / max(statistic, floor(method))``, as
    ``log(1 + x)``.  An all-silent excerpt stays 0.
  """
  method = check_method(method)
  spec = jnp.asarray(spec, jnp.float32)
  if method == NONE:
    return spec
  magnitude = jnp.expm1(jnp.maximum(spec, 0.0))
  stat = jnp.maximum(statistic(magnitude, method), floor(method))
  return jnp.log1p(magnitude * (REFERENCE[method] / stat))


def random_gains(key: jax.Array, n: int, frames: int, gain_db: float,
                 curve_db: float, fps: float) -> jax.Array:
  """Random amplitude gains for ``n`` excerpts of ``frames`` frames.

  Args:
    key: PRNG key.
    n: excerpts.
    frames: frames per excerpt.
    gain_db: a global gain per excerpt, uniform in ``[-gain_db, gain_db]`` dB.
    curve_db: plus a slow gain curve within the excerpt: a sine of amplitude
      uniform in ``[0, curve_db]`` dB, period uniform in ``CURVE_PERIOD_S``,
      random phase (a crescendo or diminuendo over a 3.2 s excerpt).
    fps: frames per second.

  Returns:
    ``(n, 1, frames)`` float32 gains > 0, for :func:`relevel`.
  """
  k_gain, k_amp, k_period, k_phase = jax.random.split(key, 4)
  db = jax.random.uniform(k_gain, (n, 1, 1), minval=-gain_db, maxval=gain_db)
  amp = jax.random.uniform(k_amp, (n, 1, 1), maxval=curve_db)
  period = jax.random.uniform(k_period, (n, 1, 1), minval=CURVE_PERIOD_S[0],
                              maxval=CURVE_PERIOD_S[1])
  phase = jax.random.uniform(k_phase, (n, 1, 1), maxval=2 * jnp.pi)
  t = jnp.arange(frames, dtype=jnp.float32) / fps
  curve = amp * jnp.sin(2 * jnp.pi * t / period + phase)
  return db_to_gain(db + curve)
