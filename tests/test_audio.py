import collections

import numpy as np
import pytest

from data_prep import synth
from dccaflax import audio
from dccaflax import snippets


def test_filterbank_has_136_bands_and_unit_peaks():
  fb = audio.log_filterbank()
  assert fb.shape == (1025, 136)
  np.testing.assert_allclose(fb.max(axis=0), 1.0)
  peaks = fb.argmax(axis=0)
  assert np.all(np.diff(peaks) > 0)  # increasing, no duplicate bins
  freqs = np.fft.rfftfreq(2048, 1 / 22050)
  assert 30 < freqs[peaks[0]] < 50 and 7500 < freqs[peaks[-1]] < 8200


def test_frame_timing_is_exact_31_25_fps():
  c = audio.frame_centres(126)
  assert c[0] == 0 and c[5] == 3528 and c[125] == 88200  # 4 s = frame 125
  assert audio.num_frames(22050) == 32  # centres 0 .. 21873.6
  np.testing.assert_array_equal(audio.onset_frame([0, 0.016, 1.0, 2.5]),
                                [0, 1, 31, 78])


def test_sine_lands_in_its_band_and_frame():
  sr = snippets.SAMPLE_RATE
  t = np.arange(2 * sr) / sr
  x = np.where(t >= 1.0, np.sin(2 * np.pi * 440 * t), 0).astype(np.float32)
  s = audio.spectrogram(x)
  assert s.shape == (136, audio.num_frames(len(x))) and s.dtype == np.float32
  band = s[:, 45:].mean(axis=1).argmax()
  peak_hz = np.fft.rfftfreq(2048, 1 / sr)[audio.log_filterbank()[:, band]
                                          .argmax()]
  assert abs(peak_hz - 440) < 15
  # Silent before 1 s (frame 31.25), loud from frame 32 on.
  assert s[:, :28].max() == 0 and s[band, 33] > 1


def test_quantize_roundtrip():
  rng = np.random.default_rng(1)
  spec = rng.uniform(0, 4, (136, 50)).astype(np.float32)
  codes, scale = audio.quantize(spec)
  assert codes.dtype == np.uint8 and codes.max() <= 63
  np.testing.assert_allclose(audio.dequantize(codes, scale), spec,
                             atol=scale / 126 + 1e-6)
  codes, scale = audio.quantize(np.zeros((136, 3), np.float32))
  assert scale == 1.0 and not codes.any()


def test_load_audio_errors(tmp_path):
  with pytest.raises(audio.AudioError, match='no such file'):
    audio.load_audio(tmp_path / 'missing.wav')
  bad = tmp_path / 'bad.wav'
  bad.write_bytes(b'not audio at all')
  with pytest.raises(audio.AudioError, match='bad.wav'):
    audio.load_audio(bad)


Note = collections.namedtuple('Note', 'pitch start_s end_s')


def _attack_times(wave, sr, near_s):
  """Start (s) of the first 1-ms block within 20 ms of each time whose RMS
  exceeds 4x that of the block 20 ms before it (plus a floor)."""
  blk = sr // 1000
  rms = np.sqrt((wave[:len(wave) // blk * blk].reshape(-1, blk) ** 2).mean(1))
  out = []
  for t in near_s:
    lo = int(round(t * 1000)) - 20
    loud = np.flatnonzero(rms[lo:lo + 40] > 4 * rms[lo] + 1e-3)
    out.append((lo + loud[0]) / 1000 if len(loud) else np.nan)
  return np.array(out)


@pytest.mark.parametrize('soundfont', ['fluidr3', 'timgm6mb'])
def test_fluidsynth_renders_notes_at_their_times(soundfont):
  notes = [Note(60 + 2 * i, 0.6 * i + 0.25, 0.6 * i + 0.45) for i in range(5)]
  for tempo in (1.0, 1.25):
    params = synth.SynthParams(soundfont=soundfont, tempo=tempo)
    wave = synth.synthesize(notes, params)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert len(wave) >= notes[-1].end_s / tempo * snippets.SAMPLE_RATE
    want = np.array([n.start_s / tempo for n in notes])
    got = _attack_times(wave, snippets.SAMPLE_RATE, want)
    # Sound is detected 0-20 ms after the note time: FluidSynth renders in
    # 64-sample blocks (2.9 ms), MIDI ticks round times, TimGM6mb attacks
    # ramp up slowly (up to ~16 ms to reach the detector threshold).
    # That is well inside one frame (32 ms).
    assert np.all((got >= want - 0.0015) & (got <= want + 0.02)), (got, want)
    # In the spectrogram, each onset frame holds far more energy than the
    # frame two before it (silence between the notes).
    s = audio.spectrogram(wave)
    for f in audio.onset_frame(want):
      assert s[:, f].sum() > 5 * s[:, f - 2].sum() + 1


def test_synth_errors():
  with pytest.raises(synth.SynthError, match='no notes'):
    synth.synthesize([], synth.SynthParams())
  with pytest.raises(synth.SynthError, match='not found'):
    synth.synthesize([Note(60, 0, 1)], synth.SynthParams(soundfont='/x.sf2'))
