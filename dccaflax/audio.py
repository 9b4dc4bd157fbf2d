"""Audio front end: load, STFT, log-frequency filterbank, log(1+x).

One implementation, used by data preparation and by queries on user
recordings, so a query goes through exactly what the model was trained on.

Frame timing: the paper's 31.25 frames/s at 22,050 Hz is a hop of 705.6
samples.  It is realised exactly: frame ``k`` is the 2048-sample Hann window
centred on sample ``round(k * 705.6)`` (zero padding beyond the signal), so the
time of frame ``k`` is ``k / 31.25`` s up to half a sample (23 us), and an
onset at ``t`` seconds falls in frame ``onset_frame(t) = round(t * 31.25)``.
librosa does the I/O (any format, any rate, mono mix, resampling); its STFT
needs an integer hop, so the framing is done here with NumPy's FFT.

Filterbank: triangular filters on a logarithmic frequency axis, 24 bands per
octave (referenced to 440 Hz) between 30 Hz and 8 kHz, each log frequency
mapped to its nearest FFT bin and duplicate bins merged (as in madmom's
``LogarithmicFilterbank``): 193 log frequencies -> 138 distinct bins -> 136
filters, each spanning three consecutive distinct bins.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from dccaflax import snippets

N_FFT = 2048
BANDS_PER_OCTAVE = 24
FMIN = 30.0
FMAX = 8000.0
FREF = 440.0
_BLOCK = 1024  # frames per FFT block, bounds memory on long recordings


class AudioError(ValueError):
  """An audio file that cannot be used; the message names the file."""


def log_frequencies(bands_per_octave: int = BANDS_PER_OCTAVE,
                    fmin: float = FMIN, fmax: float = FMAX,
                    fref: float = FREF) -> np.ndarray:
  """Frequencies (Hz) spaced ``bands_per_octave`` per octave around fref."""
  left = np.floor(np.log2(fmin / fref) * bands_per_octave)
  right = np.ceil(np.log2(fmax / fref) * bands_per_octave)
  freqs = fref * 2.0 ** (np.arange(left, right) / bands_per_octave)
  freqs = freqs[np.searchsorted(freqs, fmin):]
  return freqs[:np.searchsorted(freqs, fmax, 'right')]


@functools.lru_cache(maxsize=8)
def log_filterbank(sample_rate: int = snippets.SAMPLE_RATE,
                   n_fft: int = N_FFT) -> np.ndarray:
  """Triangular log-frequency filterbank, ``(n_fft // 2 + 1, 136)`` float32.

  Filter ``i`` rises from distinct bin ``b[i]`` to ``b[i+1]`` and falls to
  ``b[i+2]``, peak 1.  The returned array is read-only and shared.
  """
  bin_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
  nearest = np.abs(bin_freqs[:, None] - log_frequencies()[None]).argmin(0)
  bins = np.unique(nearest)
  fb = np.zeros((len(bin_freqs), len(bins) - 2), np.float32)
  for i, (lo, mid, hi) in enumerate(zip(bins[:-2], bins[1:-1], bins[2:])):
    fb[lo:mid + 1, i] = np.linspace(0, 1, mid - lo + 1)
    fb[mid:hi + 1, i] = np.linspace(1, 0, hi - mid + 1)
  fb.flags.writeable = False
  return fb


def hop(sample_rate: int = snippets.SAMPLE_RATE,
        fps: float = snippets.FPS) -> float:
  """Hop in samples (705.6 at the defaults; not an integer)."""
  return sample_rate / fps


def num_frames(num_samples: int, sample_rate: int = snippets.SAMPLE_RATE,
               fps: float = snippets.FPS) -> int:
  """Frames whose centre lies inside a signal of ``num_samples`` samples."""
  if num_samples <= 0:
    return 0
  return int(np.floor((num_samples - 1) / hop(sample_rate, fps))) + 1


def frame_centres(n_frames: int, sample_rate: int = snippets.SAMPLE_RATE,
                  fps: float = snippets.FPS) -> np.ndarray:
  """Centre sample of each frame, ``(n_frames,)`` int64: round(k * hop)."""
  return snippets.round_half_up(np.arange(n_frames) * hop(sample_rate, fps))


def onset_frame(times_s, fps: float = snippets.FPS) -> np.ndarray:
  """Frame index of event times (s): round(t * fps), the frame-time rule."""
  return snippets.round_half_up(np.asarray(times_s, np.float64) * fps)


def spectrogram(audio: np.ndarray, sample_rate: int = snippets.SAMPLE_RATE,
                fps: float = snippets.FPS) -> np.ndarray:
  """Log-frequency spectrogram of a mono signal.

  Args:
    audio: ``(num_samples,)`` float mono signal in [-1, 1] at ``sample_rate``.
    sample_rate: Hz; must be 22,050 for the model's filterbank.
    fps: frames per second.

  Returns:
    ``(136, T)`` float32, ``log(1 + |STFT| @ filterbank)``, where
    ``T = num_frames(len(audio))``.
  """
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1:
    raise ValueError(f'audio must be mono (num_samples,), got {audio.shape}')
  fb = log_filterbank(sample_rate, N_FFT)
  window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
  n = num_frames(len(audio), sample_rate, fps)
  padded = np.pad(audio, (N_FFT // 2, N_FFT // 2))
  offsets = np.arange(N_FFT)
  out = np.empty((fb.shape[1], n), np.float32)
  # Frame k covers original samples [c_k - N_FFT/2, c_k + N_FFT/2), which
  # starts at index c_k of the padded signal.
  centres = frame_centres(n, sample_rate, fps)
  for b in range(0, n, _BLOCK):
    starts = centres[b:b + _BLOCK]
    frames = padded[starts[:, None] + offsets[None]] * window
    mag = np.abs(np.fft.rfft(frames, axis=1)).astype(np.float32)
    out[:, b:b + len(starts)] = np.log1p(mag @ fb).T
  return out


def load_audio(path: str | os.PathLike, sample_rate: int = snippets.SAMPLE_RATE,
               offset: float = 0.0, duration: float | None = None
               ) -> np.ndarray:
  """Reads any file librosa can read as a mono float32 signal.

  Args:
    path: wav, flac, ogg, mp3, ... at any sample rate, mono or stereo.
    sample_rate: output rate in Hz (resampled if needed).
    offset: start in seconds.
    duration: seconds to read (None: to the end).

  Returns:
    ``(num_samples,)`` float32.

  Raises:
    AudioError: the file is missing, unreadable or empty.
  """
  import librosa  # pylint: disable=g-import-not-at-top  (slow import)
  if not os.path.exists(path):
    raise AudioError(f'{path}: no such file')
  try:
    audio, _ = librosa.load(path, sr=sample_rate, mono=True, offset=offset,
                            duration=duration)
  except Exception as e:  # librosa raises many types for unreadable input
    why = f'{type(e).__name__}: {e}' if str(e) else type(e).__name__
    raise AudioError(f'{path}: cannot read audio ({why}): is it an audio '
                     'file (wav, flac, ogg, mp3, ...)?') from e
  if audio.size == 0:
    raise AudioError(f'{path}: no audio samples (empty file or offset past '
                     'the end)')
  return audio.astype(np.float32, copy=False)


QUANT_LEVELS = 63  # 6-bit codes: ~45 bytes/frame after zlib on Nottingham


def quantize(spec: np.ndarray) -> tuple[np.ndarray, float]:
  """Stores a log spectrogram compactly: 6-bit codes in uint8 and a scale.

  Returns ``(codes, scale)`` with ``codes = round(spec / scale * 63)`` and
  ``scale = max(spec)`` (1 for an all-zero input); ``dequantize`` inverts it
  to within ``scale / 126`` (about 0.03 in log(1+x) units, i.e. 3 % in
  magnitude, for Nottingham's maximum of about 4).  64 levels rather than
  256 because zlib then stores a frame in about 45 bytes instead of 80.
  """
  scale = float(spec.max()) if spec.size and spec.max() > 0 else 1.0
  codes = np.clip(np.rint(spec / scale * QUANT_LEVELS), 0, QUANT_LEVELS)
  return codes.astype(np.uint8), scale


def dequantize(codes: np.ndarray, scale: float) -> np.ndarray:
  """Inverse of ``quantize``: ``(136, T)`` float32 log spectrogram."""
  return codes.astype(np.float32) * np.float32(scale / QUANT_LEVELS)
