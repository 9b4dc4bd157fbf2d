"""Melody -> audio with FluidSynth.

The melody is written to a one-track MIDI file (General MIDI program 0,
piano, by default) with its note times divided by the tempo factor, and
rendered by the ``fluidsynth`` command-line synthesizer (Debian package
``fluidsynth``) in fast-render mode at 22,050 Hz, reverb and chorus off.  The
stereo output is mixed to mono.

Soundfonts: FluidR3_GM (Debian ``fluid-soundfont-gm``) is the default; the
small TimGM6mb.sf2 shipped inside ``pretty_midi`` is a second timbre for
augmentation (``soundfont_path('timgm6mb')``).  ``EVAL_SOUNDFONTS`` are
timbres no training data is prepared with, for evaluation.

``render_spectrograms`` takes notes through FluidSynth to log spectrograms
(of the whole rendering, or of parts of it); ``render_batch`` is the worker
that renders many (MIDI file, tempo) items in one FluidSynth call.  This
module needs no JAX, so worker processes stay light.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from typing import Mapping, Sequence

import numpy as np

from data_prep import melody
from dccaflax import audio
from dccaflax import snippets

# Soundfonts by key: (candidate paths, the first that exists is used; how to
# install them).  No candidates: the TimGM6mb.sf2 inside pretty_midi.
_TIMGM6MB = ((), 'pip install pretty_midi')
SOUNDFONTS = {  # for training data
    'fluidr3': (('/usr/share/sounds/sf2/FluidR3_GM.sf2',),
                'Debian: apt-get install fluid-soundfont-gm'),
    'timgm6mb': _TIMGM6MB,
}
EVAL_SOUNDFONTS = {  # for evaluation: none is used to prepare training data
    'musescore': (('/usr/share/sounds/sf3/MuseScore_General.sf3',
                   '/usr/share/sounds/sf3/MuseScore_General_Lite.sf3',
                   '/usr/share/sounds/sf2/MuseScore_General.sf2'),
                  'Debian: apt-get install musescore-general-soundfont-small'),
    'fluidr3mono': (('/usr/share/sounds/sf3/FluidR3Mono_GM.sf3',
                     '/usr/share/sounds/sf2/FluidR3Mono_GM.sf2'),
                    'Debian: apt-get install fluidr3mono-gm-soundfont'),
    'timgm6mb': _TIMGM6MB,
}
GAP_S = 2.0            # render_batch: silence between the items
TAIL_S = 1.0           # render_batch: audio kept after an item's last note


class SynthError(RuntimeError):
  """FluidSynth is missing or failed; the message says which piece and why."""


class SoundfontNotFound(SynthError, FileNotFoundError):
  """A soundfont that is not there; the message says where it was looked for
  and how to install it."""


@dataclasses.dataclass(frozen=True)
class SynthParams:
  """What makes one rendering of a melody.

  Attributes:
    soundfont: a key of SOUNDFONTS or a path to an .sf2 file.
    tempo: tempo factor; 1.1 plays 10% faster (note times divided by 1.1).
    program: General MIDI program (0 = acoustic grand piano).
    velocity: MIDI velocity of every note.
    gain: FluidSynth master gain.
  """
  soundfont: str = 'fluidr3'
  tempo: float = 1.0
  program: int = 0
  velocity: int = 90
  gain: float = 1.0

  @property
  def tag(self) -> str:
    """Short name for file and feature names, e.g. 'fluidr3_t1.00'."""
    sf = os.path.splitext(os.path.basename(self.soundfont))[0].lower()
    return f'{sf}_t{self.tempo:.2f}'


def soundfont_path(name: str,
                   known: Mapping[str, tuple[Sequence[str], str]] = SOUNDFONTS
                   ) -> str:
  """Path of a soundfont given by a key of ``known`` or by a path.

  Args:
    name: a key of ``known`` (``SOUNDFONTS`` or ``EVAL_SOUNDFONTS``) or a
      path to an .sf2/.sf3 file.
    known: key -> (candidate paths, install hint); the first candidate that
      exists is used; none: the TimGM6mb.sf2 inside pretty_midi.

  Raises:
    SoundfontNotFound: (a ``SynthError`` and a ``FileNotFoundError``) no
      such file, naming where it was looked for and how to install it.
  """
  if name not in known:
    if not os.path.isfile(name):
      raise SoundfontNotFound(f'soundfont {name!r} not found at {name} (no '
                              f'such file, nor one of {", ".join(known)})')
    return name
  paths, install = known[name]
  if not paths:
    import pretty_midi  # pylint: disable=g-import-not-at-top
    paths = (os.path.join(os.path.dirname(pretty_midi.__file__),
                          'TimGM6mb.sf2'),)
  for path in paths:
    if os.path.isfile(path):
      return path
  raise SoundfontNotFound(f'soundfont {name!r} not found at '
                          f'{", ".join(paths)} ({install})')


def fluidsynth_binary() -> str:
  path = shutil.which('fluidsynth')
  if path is None:
    raise SynthError('the fluidsynth program is not installed '
                     '(Debian: apt-get install fluidsynth)')
  return path


@dataclasses.dataclass(frozen=True)
class Note:
  """A note to synthesize: MIDI pitch, start and end in seconds."""
  pitch: int
  start_s: float
  end_s: float


def at_tempo(notes, tempo: float, offset_s: float = 0.0) -> list[Note]:
  """The notes played ``tempo`` times faster (times divided by ``tempo``),
  then shifted by ``offset_s`` seconds.

  Args:
    notes: sequence with ``.pitch``, ``.start_s``, ``.end_s`` (seconds at
      tempo factor 1).
    tempo: tempo factor; 1.1 plays 10% faster.
    offset_s: added to every time after scaling.
  """
  return [Note(int(n.pitch), n.start_s / tempo + offset_s,
               n.end_s / tempo + offset_s) for n in notes]


def melody_midi(notes, params: SynthParams):
  """A ``pretty_midi.PrettyMIDI`` of the notes at the given tempo factor.

  Args:
    notes: sequence with ``.pitch``, ``.start_s``, ``.end_s`` (seconds).
    params: synthesis parameters.
  """
  import pretty_midi  # pylint: disable=g-import-not-at-top
  pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
  inst = pretty_midi.Instrument(program=params.program)
  for n in at_tempo(notes, params.tempo):
    inst.notes.append(pretty_midi.Note(velocity=params.velocity,
                                       pitch=n.pitch, start=n.start_s,
                                       end=n.end_s))
  pm.instruments.append(inst)
  return pm


def synthesize(notes, params: SynthParams = SynthParams(), *,
               name: str = 'melody', timeout_s: float = 120.0) -> np.ndarray:
  """Renders notes with FluidSynth.

  Args:
    notes: sequence with ``.pitch``, ``.start_s``, ``.end_s`` (seconds at
      tempo factor 1).
    params: soundfont, tempo factor, program, velocity, gain.
    name: piece name for error messages.
    timeout_s: FluidSynth time limit.

  Returns:
    ``(num_samples,)`` float32 mono signal at 22,050 Hz; its length covers the
    last note's end (silence appended if FluidSynth stopped earlier).
  """
  import soundfile  # pylint: disable=g-import-not-at-top  (librosa's I/O)
  binary, sf2 = fluidsynth_binary(), soundfont_path(params.soundfont)
  if not notes:
    raise SynthError(f'{name}: no notes to synthesize')
  with tempfile.TemporaryDirectory(prefix='dccaflax_synth_') as tmp:
    mid, wav = os.path.join(tmp, 'm.mid'), os.path.join(tmp, 'm.wav')
    melody_midi(notes, params).write(mid)
    cmd = [binary, '-ni', '-q', '-R', '0', '-C', '0',
           '-g', str(params.gain), '-r', str(snippets.SAMPLE_RATE),
           '-T', 'wav', '-O', 's16', '-F', wav, sf2, mid]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True,
                            timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
      raise SynthError(f'{name}: fluidsynth timed out after {timeout_s} s'
                       ) from e
    if proc.returncode != 0 or not os.path.exists(wav):
      raise SynthError(f'{name}: fluidsynth failed ({proc.returncode}): '
                       f'{(proc.stderr or proc.stdout)[-500:]}')
    audio, sr = soundfile.read(wav, dtype='float32', always_2d=True)
  if sr != snippets.SAMPLE_RATE:
    raise SynthError(f'{name}: fluidsynth wrote {sr} Hz, expected '
                     f'{snippets.SAMPLE_RATE}')
  audio = audio.mean(axis=1)
  want = int(np.ceil(max(n.end_s for n in notes) / params.tempo
                     * snippets.SAMPLE_RATE))
  if len(audio) < want:
    audio = np.pad(audio, (0, want - len(audio)))
  return audio.astype(np.float32, copy=False)


WHOLE = ((0.0, float('inf')),)  # render_spectrograms: the whole rendering


def render_spectrograms(notes, params: SynthParams = SynthParams(),
                        spans: Sequence[tuple[float, float]] = WHOLE, *,
                        name: str = 'melody', timeout_s: float = 120.0
                        ) -> list[np.ndarray]:
  """Renders notes with FluidSynth (``synthesize``) and takes spectrograms.

  Args:
    notes: sequence with ``.pitch``, ``.start_s``, ``.end_s`` (seconds at
      tempo factor 1).
    params: soundfont, tempo factor, program, velocity, gain.
    spans: ``[(start_s, end_s), ...]`` parts of the rendering (seconds in
      it, the end clipped to its length); default: the whole.
    name: piece name for error messages.
    timeout_s: FluidSynth time limit.

  Returns:
    One ``(136, T_i)`` float32 log spectrogram (``audio.spectrogram``) per
    span, in span order.
  """
  wave = synthesize(notes, params, name=name, timeout_s=timeout_s)
  sr = snippets.SAMPLE_RATE
  out = []
  for start_s, end_s in spans:
    hi = len(wave) if end_s * sr >= len(wave) else int(round(end_s * sr))
    out.append(audio.spectrogram(wave[int(round(start_s * sr)):hi]))
  return out


def render_batch(task) -> list[tuple[str, float, np.ndarray]]:
  """Worker: renders (MIDI file, tempo) items in ONE FluidSynth call.

  Loading a compressed (.sf3) soundfont takes seconds, so the items are
  played one after another (``GAP_S`` of silence between), each with its
  note times divided by its tempo factor, and cut apart; each piece keeps
  ``TAIL_S`` after its last note end (the release).

  Args:
    task: ``(items, soundfont)``, items ``[(midi_path, tempo), ...]``,
      soundfont a key of ``SOUNDFONTS`` or a path.

  Returns:
    ``[(piece, tempo, spec (136, T) float32), ...]`` in item order.
  """
  items, soundfont = task
  notes, keys, spans, offset = [], [], [], 0.0
  for path, tempo in items:
    mel = melody.read_melody(path)
    length = max(n.end_s for n in mel.notes) / tempo
    notes += at_tempo(mel.notes, tempo, offset)
    keys.append((mel.name, tempo))
    spans.append((offset, offset + length + TAIL_S))
    offset += length + GAP_S
  specs = render_spectrograms(notes, SynthParams(soundfont=soundfont), spans,
                              name=f'{len(items)} renderings', timeout_s=1200)
  return [(name, tempo, spec) for (name, tempo), spec in zip(keys, specs)]
