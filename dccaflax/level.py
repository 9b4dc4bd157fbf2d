"""Loudness of ``log(1 + x)`` spectrograms: re-levelling, normalisation, gains.

The audio features are ``L = log(1 + m)`` of a filterbank magnitude ``m``
(``dccaflax.audio.spectrogram``).  The magnitude is linear in the waveform, so
the same recording ``g`` times louder has exactly

  ``L' = log(1 + g (e^L - 1)) = relevel(L, g)``.

The paper feeds ``L`` as it is, so every level is another input: measured on
a narrow model, 3 dB quieter loses 80 % of R@10, 6 dB either way is chance.

:func:`normalize` makes an excerpt independent of a global gain by
construction: back to the magnitude, divided by the excerpt's mean magnitude,
brought to ``REF_MAGNITUDE`` (the median of FluidR3 training excerpts at the
pipeline's level, so normalised inputs keep the range the paper's model
sees), and logged again.  ``normalize(relevel(L, g)) == normalize(L)`` up to
float rounding for every ``g > 0``, as long as the excerpt's mean magnitude
is above ``FLOOR`` (77 dB below a typical excerpt; below it an excerpt is
treated as near-silence and scaled as if it were at the floor).  What a global
gain cannot describe (dynamics within the excerpt, another instrument's
spectral balance) is left to augmentation: :func:`random_gains` draws a gain
per excerpt plus a slow gain curve across its frames, applied with
:func:`relevel` inside the training step.

All functions are pure ``jax.numpy`` (NumPy arrays in, JAX arrays out) and
broadcast over leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

REF_MAGNITUDE = 0.7   # median excerpt mean magnitude, FluidR3 at velocity 90
FLOOR = 1e-4          # mean magnitudes below this are not scaled up further
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


def normalize(spec):
  """Each excerpt brought to the reference level (independent of its gain).

  Args:
    spec: ``(..., bins, frames)`` float ``log(1 + magnitude)``, one excerpt
      per leading index.

  Returns:
    ``(..., bins, frames)`` float32: the excerpt's magnitude times
    ``REF_MAGNITUDE / max(mean magnitude, FLOOR)``, as ``log(1 + x)``.  An
    all-silent excerpt stays 0.
  """
  magnitude = jnp.expm1(jnp.maximum(jnp.asarray(spec, jnp.float32), 0.0))
  mean = jnp.mean(magnitude, axis=(-2, -1), keepdims=True)
  return jnp.log1p(magnitude * (REF_MAGNITUDE / jnp.maximum(mean, FLOOR)))


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
