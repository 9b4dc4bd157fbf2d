"""Melody -> audio with FluidSynth.

The melody is written to a one-track MIDI file (General MIDI program 0,
piano, by default) with its note times divided by the tempo factor, and
rendered by the ``fluidsynth`` command-line synthesizer (Debian package
``fluidsynth``) in fast-render mode at 22,050 Hz, reverb and chorus off.  The
stereo output is mixed to mono.

Soundfonts: FluidR3_GM (Debian ``fluid-soundfont-gm``) is the default; the
small TimGM6mb.sf2 shipped inside ``pretty_midi`` and the Csound GM bank
(Debian ``csound-soundfont``) are more timbres for augmentation
(``soundfont_path('timgm6mb')``).  ``EVAL_SOUNDFONTS`` are timbres for
evaluation; MuseScore General is never used for training data
(``data_prep.performance``).

A performance (``performed``): the notes at the tempo factor, with a
velocity per note (a base velocity, a slow curve across the piece and
accents) and small onset deviations, all drawn from the rendering's seed;
with the defaults (no dynamics, no deviations) every note is played as
written at one velocity.

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
    'gmbank': (('/usr/share/sounds/sf2/sf_GMbank.sf2',),
               'Debian: apt-get install csound-soundfont'),
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
# Either kind, by key: for rendering a query or an evaluation.
ALL_SOUNDFONTS = {**EVAL_SOUNDFONTS, **SOUNDFONTS}
GAP_S = 2.0            # render_batch: silence between the items
TAIL_S = 1.0           # render_batch: audio kept after an item's last note


TEMPO_LIMITS = (0.25, 4.0)   # tempo factors a command accepts


def parse_tempo(text: str | float, flag: str = '--tempos') -> float:
  """A tempo factor in ``TEMPO_LIMITS``; ValueError naming the flag if not."""
  try:
    tempo = float(text)
  except ValueError:
    raise ValueError(f'{flag}: {text!r} is not a number') from None
  lo, hi = TEMPO_LIMITS
  if not lo <= tempo <= hi:  # also refuses nan
    raise ValueError(f'{flag}: tempo factor {text} outside [{lo}, {hi}]')
  return tempo


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
    velocity: MIDI velocity of every note (the base of the curve).
    gain: FluidSynth master gain.
    dynamics: amplitude of a slow velocity curve across the piece (one sine
      of period 8-30 s), velocity units; 0 = none.
    accent: s.d. of a random velocity offset per note; 0 = none.
    timing_s: s.d. of a random onset deviation per note, seconds (each
      deviation clipped to a quarter of the gaps to its neighbours); 0 =
      none.
    seed: seeds the per-note draws of ``dynamics``, ``accent``,
      ``timing_s``.
    slot: the tag of a drawn rendering slot (``performance.Draw``); empty
      for a fixed rendering.
  """
  soundfont: str = 'fluidr3'
  tempo: float = 1.0
  program: int = 0
  velocity: int = 90
  gain: float = 1.0
  dynamics: float = 0.0
  accent: float = 0.0
  timing_s: float = 0.0
  seed: int = 0
  slot: str = ''

  @property
  def tag(self) -> str:
    """Short name for file and feature names: the slot, else e.g.
    'fluidr3_t1.00'."""
    if self.slot:
      return self.slot
    sf = os.path.splitext(os.path.basename(self.soundfont))[0].lower()
    return f'{sf}_t{self.tempo:.2f}'

  def to_json(self) -> dict:
    """The parameters as a JSON-able dict (stored with the rendering)."""
    return dataclasses.asdict(self)


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


DYNAMICS_PERIOD_S = (8.0, 30.0)   # range of the velocity curve's period
VELOCITY_LIMITS = (15, 127)


def performed(notes, params: SynthParams,
              offset_s: float = 0.0) -> tuple[list[Note], np.ndarray]:
  """The notes as ``params`` plays them (see the module doc).

  Args:
    notes: sequence with ``.pitch``, ``.start_s``, ``.end_s`` (seconds at
      tempo factor 1), in time order.
    params: tempo factor, velocity, dynamics, accent, timing, seed.
    offset_s: added to every time after scaling.

  Returns:
    ``(notes, velocities)``: the notes at the tempo factor with their onset
    deviations (still in order: a deviation is clipped to a quarter of the
    gap to either neighbour; a note keeps its length but ends no later than
    the next note starts, unless it did as written), and ``(N,)`` int MIDI
    velocities.  Deterministic in ``params``.
  """
  timed = at_tempo(notes, params.tempo)
  n = len(timed)
  rng = np.random.default_rng([params.seed, n])
  starts = np.array([x.start_s for x in timed], np.float64)
  ends = np.array([x.end_s for x in timed], np.float64)
  shift = np.zeros(n)
  if params.timing_s > 0 and n:
    gaps = np.diff(starts)
    room = 0.25 * np.minimum(np.append(gaps, np.inf), np.insert(gaps, 0,
                                                                np.inf))
    shift = np.clip(rng.normal(0.0, params.timing_s, n), -room, room)
    shift[0] = max(shift[0], -starts[0])        # not before time 0
  new_starts = starts + shift
  new_ends = ends + shift
  nxt = np.append(new_starts[1:], np.inf)
  legato = ends <= np.append(starts[1:], np.inf)  # did not overlap as written
  new_ends = np.where(legato, np.minimum(new_ends, nxt), new_ends)
  new_ends = np.maximum(new_ends, new_starts + 1e-3)
  vel = np.full(n, float(params.velocity))
  if params.dynamics > 0:
    period = rng.uniform(*DYNAMICS_PERIOD_S)
    phase = rng.uniform(0, 2 * np.pi)
    vel += params.dynamics * np.sin(2 * np.pi * starts / period + phase)
  if params.accent > 0:
    vel += rng.normal(0.0, params.accent, n)
  vel = np.clip(np.round(vel), *VELOCITY_LIMITS).astype(int)
  out = [Note(x.pitch, float(s) + offset_s, float(e) + offset_s)
         for x, s, e in zip(timed, new_starts, new_ends)]
  return out, vel


def performance_midi(parts):
  """A ``pretty_midi.PrettyMIDI`` of performed notes, one instrument (MIDI
  channel) per program.

  Args:
    parts: ``[(notes, velocities, program), ...]`` (``performed`` output and
      a General MIDI program); parts of one program share an instrument.

  Raises:
    SynthError: more than 15 programs (one channel each, 9 is drums).
  """
  import pretty_midi  # pylint: disable=g-import-not-at-top
  pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
  insts = {}
  for notes, velocities, program in parts:
    if program not in insts:
      if len(insts) == 15:
        raise SynthError('more than 15 programs in one FluidSynth call')
      insts[program] = pretty_midi.Instrument(program=int(program))
      pm.instruments.append(insts[program])
    for n, v in zip(notes, velocities):
      insts[program].notes.append(pretty_midi.Note(
          velocity=int(v), pitch=n.pitch, start=n.start_s, end=n.end_s))
  return pm


def melody_midi(notes, params: SynthParams):
  """A ``pretty_midi.PrettyMIDI`` of the notes as ``params`` plays them
  (``performed``).

  Args:
    notes: sequence with ``.pitch``, ``.start_s``, ``.end_s`` (seconds).
    params: synthesis parameters.
  """
  return performance_midi([(*performed(notes, params), params.program)])


def _fluidsynth(pm, soundfont: str, gain: float, end_s: float, name: str,
                timeout_s: float) -> np.ndarray:
  """Renders a PrettyMIDI; mono float32 at 22,050 Hz, at least ``end_s``."""
  import soundfile  # pylint: disable=g-import-not-at-top  (librosa's I/O)
  binary, sf2 = fluidsynth_binary(), soundfont_path(soundfont)
  with tempfile.TemporaryDirectory(prefix='dccaflax_synth_') as tmp:
    mid, wav = os.path.join(tmp, 'm.mid'), os.path.join(tmp, 'm.wav')
    pm.write(mid)
    cmd = [binary, '-ni', '-q', '-R', '0', '-C', '0',
           '-g', str(gain), '-r', str(snippets.SAMPLE_RATE),
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
  want = int(np.ceil(end_s * snippets.SAMPLE_RATE))
  if len(audio) < want:
    audio = np.pad(audio, (0, want - len(audio)))
  return audio.astype(np.float32, copy=False)


def synthesize(notes, params: SynthParams = SynthParams(), *,
               name: str = 'melody', timeout_s: float = 120.0) -> np.ndarray:
  """Renders notes with FluidSynth, as ``params`` performs them.

  Args:
    notes: sequence with ``.pitch``, ``.start_s``, ``.end_s`` (seconds at
      tempo factor 1).
    params: soundfont, tempo factor, program, velocity, gain, dynamics,
      timing.
    name: piece name for error messages.
    timeout_s: FluidSynth time limit.

  Returns:
    ``(num_samples,)`` float32 mono signal at 22,050 Hz; its length covers the
    last performed note's end (silence appended if FluidSynth stopped
    earlier).
  """
  if not notes:
    raise SynthError(f'{name}: no notes to synthesize')
  played, velocities = performed(notes, params)
  return _fluidsynth(performance_midi([(played, velocities, params.program)]),
                     params.soundfont, params.gain,
                     max(n.end_s for n in played), name, timeout_s)


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


def render_batch(task) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
  """Worker: renders (MIDI file, performance) items in ONE FluidSynth call.

  Loading a compressed (.sf3) soundfont takes seconds, so the items are
  played one after another (``GAP_S`` of silence between), each performed
  as its ``SynthParams`` says (tempo factor, program, dynamics, timing;
  up to 15 programs in a call), and cut apart; each piece keeps ``TAIL_S``
  after its last note end (the release).

  Args:
    task: ``(items, soundfont)``, items ``[(midi_path, tempo or
      SynthParams), ...]``: a tempo factor plays the notes as written on
      piano; every item is rendered with ``soundfont`` (a key of
      ``SOUNDFONTS`` or ``EVAL_SOUNDFONTS``, or a path).

  Returns:
    ``[(piece, tempo, spec (136, T) float32, onsets_s (N,)), ...]`` in item
    order; ``onsets_s`` the performed start of each melody note, seconds
    from the start of ``spec``.
  """
  items, soundfont = task
  parts, keys, spans, offset = [], [], [], 0.0
  for path, how in items:
    params = (how if isinstance(how, SynthParams)
              else SynthParams(tempo=float(how)))
    mel = melody.read_melody(path)
    played, velocities = performed(mel.notes, params, offset)
    parts.append((played, velocities, params.program))
    end = max(n.end_s for n in played)
    keys.append((mel.name, params.tempo,
                 np.array([n.start_s - offset for n in played])))
    spans.append((offset, end + TAIL_S))
    offset = end + GAP_S
  path = soundfont_path(soundfont, ALL_SOUNDFONTS if soundfont in
                        ALL_SOUNDFONTS else SOUNDFONTS)
  wave = _fluidsynth(performance_midi(parts), path, 1.0, offset,
                     f'{len(items)} renderings', 1200)
  sr = snippets.SAMPLE_RATE
  return [(name, tempo,
           audio.spectrogram(wave[int(round(a * sr)):int(round(b * sr))]),
           onsets) for (name, tempo, onsets), (a, b) in zip(keys, spans)]
