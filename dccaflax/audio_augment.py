"""Audio augmentation on the device: what a recording does to a spectrogram.

Each function takes a batch of ``log(1 + m)`` spectrogram excerpts (``m`` a
filterbank magnitude, ``dccaflax.audio``) and a PRNG key and returns the
batch as another recording of the same notes could give it; they run inside
the jitted training step (``steps._step``), drawn per excerpt, and each is a
``TrainConfig`` flag that is off in the paper's recipe:

* ``random_eq`` (``aug_eq_db``): a spectral tilt plus a smooth random
  equaliser curve (the instrument's and the room's colour);
* ``add_noise_floor`` (``aug_noise_db``): a noise floor at a random level
  below the excerpt's loudest frame (hiss, a room, a distant microphone);
* ``shift_bins`` (``aug_tune_bins``): a tuning deviation of a fraction of a
  bin (24 bins per octave: 0.5 bin is a quarter tone);
* ``stretch_time`` (``aug_stretch``): the excerpt played up to +-10 %
  faster or slower around its onset, resampled from a wider window
  (``augment.STRETCH_MARGIN`` frames each side, which ``pieceset.SPEC_GAP``
  leaves room for);
* ``mask`` (``aug_time_mask``, ``aug_freq_mask``): one band of frames and
  one of bins set to silence (SpecAugment's masks).

* ``random_gain`` (``aug_gain_db``, ``aug_gain_curve_db``): a global gain
  and a slow gain curve (``dccaflax.level``).

``dccaflax.augment`` declares each with its settings, limits and key.
Filters act on the magnitude (``e^L - 1``) and log again, so silence stays
silence.
Shapes: ``(N, bins, frames)`` in, the same out, float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dccaflax import level
from dccaflax import snippets

NOISE_SPAN_DB = 30.0  # noise floors are drawn this many dB below the loudest
EQ_TERMS = 3          # cosines of the random EQ curve


def _magnitude(spec):
  return jnp.expm1(jnp.maximum(jnp.asarray(spec, jnp.float32), 0.0))


def random_eq(key: jax.Array, spec: jax.Array, max_db: float) -> jax.Array:
  """A random tilt plus a smooth EQ curve across the bins.

  Gain in dB at bin position ``u`` in [0, 1]: ``tilt * (u - 0.5) + sum_k
  a_k cos(pi k u + phi_k)``, tilt uniform in ``[-max_db, max_db]``, ``a_k``
  uniform in ``[-max_db / 4, max_db / 4]`` for k = 1..3.

  Args:
    key: PRNG key.
    spec: ``(N, bins, frames)`` log spectrograms.
    max_db: scale of the curve (0 returns ``spec``).
  """
  n, bins = spec.shape[0], spec.shape[1]
  k_tilt, k_amp, k_phase = jax.random.split(key, 3)
  u = jnp.linspace(0.0, 1.0, bins)[None, :]                       # (1, bins)
  tilt = jax.random.uniform(k_tilt, (n, 1), minval=-max_db, maxval=max_db)
  amp = jax.random.uniform(k_amp, (n, EQ_TERMS, 1), minval=-max_db / 4,
                           maxval=max_db / 4)
  phase = jax.random.uniform(k_phase, (n, EQ_TERMS, 1), maxval=2 * jnp.pi)
  k = jnp.arange(1, EQ_TERMS + 1, dtype=jnp.float32)[None, :, None]
  db = tilt * (u - 0.5) + jnp.sum(amp * jnp.cos(jnp.pi * k * u[:, None, :]
                                                + phase), axis=1)
  return level.relevel(spec, level.db_to_gain(db)[:, :, None])


def add_noise_floor(key: jax.Array, spec: jax.Array,
                    max_db: float) -> jax.Array:
  """Adds a noise floor ``max_db`` to ``max_db + NOISE_SPAN_DB`` dB below
  the excerpt's loudest frame (``level.statistic`` 'peak'), exponentially
  distributed magnitudes per bin and frame.

  Args:
    key: PRNG key.
    spec: ``(N, bins, frames)`` log spectrograms.
    max_db: the loudest floor, dB below the peak (e.g. 20).
  """
  k_level, k_noise = jax.random.split(key)
  mag = _magnitude(spec)
  peak = level.statistic(mag, level.PEAK)                         # (N, 1, 1)
  db = jax.random.uniform(k_level, peak.shape, minval=max_db,
                          maxval=max_db + NOISE_SPAN_DB)
  noise = jax.random.exponential(k_noise, mag.shape) * peak / level.db_to_gain(
      db)
  return jnp.log1p(mag + noise)


def random_gain(key: jax.Array, spec: jax.Array, max_db: float,
                max_curve_db: float) -> jax.Array:
  """Each excerpt re-levelled by a random global gain (uniform in
  ``+-max_db``) and a slow gain curve of up to ``max_curve_db``
  (``level.random_gains``)."""
  return level.relevel(spec, level.random_gains(
      key, spec.shape[0], spec.shape[-1], max_db, max_curve_db,
      snippets.FPS))


def resample(x: jax.Array, pos: jax.Array) -> jax.Array:
  """``x`` linearly interpolated at fractional positions along its last
  axis, 0 outside.

  Shared by the audio and the sheet augmentations (``sheet_augment``).  As
  a matrix product with hat weights ``max(0, 1 - |pos - i|)`` (a small
  matmul per excerpt, no gather: quick to compile and to run).

  Args:
    x: ``(N, A, L)``.
    pos: ``(N, M)`` positions in ``[0, L)`` units.

  Returns:
    ``(N, A, M)``.
  """
  i = jnp.arange(x.shape[-1], dtype=jnp.float32)
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(pos[:, :, None] - i))  # (N, M, L)
  return jnp.einsum('nal,nml->nam', x, weights,
                    precision=jax.lax.Precision.HIGHEST)


def shift_bins(key: jax.Array, spec: jax.Array, max_bins: float) -> jax.Array:
  """Shifts each excerpt up or down by a uniform ``[-max_bins, max_bins]``
  fraction of bins (a tuning deviation; linear interpolation of the
  magnitude, silence shifted in at the edge)."""
  n, bins, _ = spec.shape
  shift = jax.random.uniform(key, (n, 1), minval=-max_bins, maxval=max_bins)
  pos = jnp.arange(bins, dtype=jnp.float32)[None, :] - shift     # (n, bins)
  mag = jnp.swapaxes(_magnitude(spec), 1, 2)                 # (n, frames, bins)
  return jnp.log1p(jnp.swapaxes(resample(mag, pos), 1, 2))


def stretch_time(key: jax.Array, wide: jax.Array, max_stretch: float,
                 frames: int = snippets.SPEC_FRAMES) -> jax.Array:
  """Excerpts resampled in time by a factor uniform in ``1 +- max_stretch``
  about the window's centre (the onset stays on frame ``frames // 2``).

  Args:
    key: PRNG key.
    wide: ``(N, bins, frames + 2 * margin)`` excerpts cut ``margin`` frames
      wider each side (``input_pipeline.cut_windows(margin=...)``), at
      least ``frames / 2 * max_stretch`` + 1.
    max_stretch: at most ``augment.MAX_STRETCH``; factor > 1 plays faster.
    frames: output frames.

  Returns:
    ``(N, bins, frames)``.
  """
  n, _, width = wide.shape
  margin = (width - frames) // 2
  factor = jax.random.uniform(key, (n, 1), minval=1 - max_stretch,
                              maxval=1 + max_stretch)
  t = jnp.arange(frames, dtype=jnp.float32)[None, :] - frames // 2
  pos = margin + frames // 2 + t * factor                      # (n, frames)
  return jnp.log1p(resample(_magnitude(wide), pos))


def mask(key: jax.Array, spec: jax.Array, max_frames: int,
         max_bins: int) -> jax.Array:
  """Silences one band of up to ``max_frames`` frames and one of up to
  ``max_bins`` bins per excerpt (widths and positions uniform)."""
  n, bins, frames = spec.shape
  keys = jax.random.split(key, 4)

  def band(k_width, k_start, size, most):
    width = jax.random.randint(k_width, (n, 1), 0, most + 1)
    start = jax.random.randint(k_start, (n, 1), 0, size)
    i = jnp.arange(size)[None, :]
    return (i >= start) & (i < start + width)                     # (n, size)

  keep = jnp.ones(spec.shape, bool)
  if max_frames:
    keep &= ~band(keys[0], keys[1], frames, max_frames)[:, None, :]
  if max_bins:
    keep &= ~band(keys[2], keys[3], bins, max_bins)[:, :, None]
  return jnp.where(keep, spec, 0.0)
