"""Melody -> audio with FluidSynth.

The melody is written to a one-track MIDI file (General MIDI program 0,
piano, by default) with its note times divided by the tempo factor, and
rendered by the ``fluidsynth`` command-line synthesizer (Debian package
``fluidsynth``) in fast-render mode at 22,050 Hz, reverb and chorus off.  The
stereo output is mixed to mono.

Soundfonts: FluidR3_GM (Debian ``fluid-soundfont-gm``) is the default; the
small TimGM6mb.sf2 shipped inside ``pretty_midi`` is a second timbre for
augmentation (``soundfont_path('timgm6mb')``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile

import numpy as np

from dccaflax import snippets

SOUNDFONTS = {
    'fluidr3': ('/usr/share/sounds/sf2/FluidR3_GM.sf2',),
    'timgm6mb': (),  # inside pretty_midi, resolved at run time
}


class SynthError(RuntimeError):
  """FluidSynth is missing or failed; the message says which piece and why."""


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


def soundfont_path(name: str) -> str:
  """Path of a soundfont given by key or path; SynthError if not there."""
  if name == 'timgm6mb':
    import pretty_midi  # pylint: disable=g-import-not-at-top
    path = os.path.join(os.path.dirname(pretty_midi.__file__), 'TimGM6mb.sf2')
  elif name in SOUNDFONTS:
    path = SOUNDFONTS[name][0]
  else:
    path = name
  if not os.path.isfile(path):
    raise SynthError(f'soundfont {name!r} not found at {path} '
                     '(Debian: apt-get install fluid-soundfont-gm)')
  return path


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
