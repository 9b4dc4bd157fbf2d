"""Drawn performances: per piece, an instrument, soundfont, tempo and touch.

An extra rendering of the training data is either a fixed ``SynthParams``
(one soundfont and tempo factor for every piece, ``--soundfonts/--tempos``)
or a ``Draw``: a rendering *slot* whose parameters each piece draws from
distributions, reproducibly from the slot's seed and the piece's name:

* an instrument: a melodic General MIDI program from ``TRAIN_PROGRAMS``
  (keyboards, organs, accordions, guitars, bowed and plucked strings, brass,
  reeds, pipes, voices, synth leads);
* a soundfont from the slot's list (default ``TRAIN_SOUNDFONTS``: FluidR3,
  TimGM6mb and the Csound GM bank);
* a tempo factor, log-uniform in ``tempo_range`` (default 0.6-1.7: a user
  plays at their own tempo, not the files' 120 qpm);
* dynamics: a base velocity, a slow velocity curve (crescendi and
  diminuendi across the piece) and per-note accents;
* timing: small per-note onset deviations (``synth.performed``; each stays
  within a quarter of the gap to its neighbours, so note order and the
  notehead of every onset are kept).

Each slot is synthesized once per piece, as a fixed rendering is, and its
onset frames are recomputed from the performed note times.  The drawn
values are stored with the rendering (``SynthParams.to_json``, the
``pieces`` config's ``rendering_params``).

Held out for evaluation, never in training data: the instruments of
``HELDOUT_PROGRAMS`` (disjoint from ``TRAIN_PROGRAMS``) and the soundfonts
of ``HELDOUT_SOUNDFONTS`` (MuseScore General).  ``Draw`` refuses them, and
``check_training`` refuses any rendering with them for the train and valid
splits.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Sequence

import numpy as np

from data_prep import synth

# General MIDI programs (0-based) a training slot draws from.
TRAIN_PROGRAMS = {
    0: 'Acoustic Grand Piano', 1: 'Bright Acoustic Piano',
    4: 'Electric Piano 1', 6: 'Harpsichord', 8: 'Celesta', 11: 'Vibraphone',
    13: 'Xylophone', 16: 'Drawbar Organ', 19: 'Church Organ',
    20: 'Reed Organ', 21: 'Accordion', 22: 'Harmonica',
    24: 'Acoustic Guitar (nylon)', 25: 'Acoustic Guitar (steel)',
    26: 'Electric Guitar (jazz)', 40: 'Violin', 42: 'Cello',
    45: 'Pizzicato Strings', 46: 'Orchestral Harp', 48: 'String Ensemble 1',
    52: 'Choir Aahs', 56: 'Trumpet', 57: 'Trombone', 60: 'French Horn',
    64: 'Soprano Sax', 66: 'Tenor Sax', 68: 'Oboe', 69: 'English Horn',
    70: 'Bassoon', 71: 'Clarinet', 73: 'Flute', 75: 'Pan Flute',
    78: 'Whistle', 79: 'Ocarina', 80: 'Lead 1 (square)', 105: 'Banjo',
}
# Held out: no training slot draws these (evaluation only).
HELDOUT_PROGRAMS = {
    3: 'Honky-tonk Piano', 23: 'Tango Accordion', 41: 'Viola',
    53: 'Voice Oohs', 65: 'Alto Sax', 72: 'Piccolo', 74: 'Recorder',
    110: 'Fiddle',
}
TRAIN_SOUNDFONTS = ('fluidr3', 'timgm6mb', 'gmbank')
HELDOUT_SOUNDFONTS = ('musescore',)
TEMPO_RANGE = (0.6, 1.7)
VELOCITY_RANGE = (45, 115)     # base velocity
DYNAMICS_MAX = 25.0            # velocity curve amplitude, velocity units
ACCENT_MAX = 10.0              # per-note velocity s.d.
TIMING_MAX_S = 0.02            # per-note onset s.d., seconds


class HeldOutError(ValueError):
  """A held-out instrument or soundfont asked for in training data."""


def _soundfont_file(name: str) -> str:
  """Real path of a soundfont key or path ('' when it is not installed)."""
  for known in (synth.SOUNDFONTS, synth.EVAL_SOUNDFONTS):
    if name in known:
      try:
        return os.path.realpath(synth.soundfont_path(name, known))
      except synth.SoundfontNotFound:
        return ''
  return os.path.realpath(name)


def heldout_files() -> set[str]:
  """Real paths of the installed held-out soundfont files."""
  paths = set()
  for name in HELDOUT_SOUNDFONTS:
    paths.update(os.path.realpath(p) for p in synth.EVAL_SOUNDFONTS[name][0]
                 if os.path.isfile(p))
  return paths


def is_heldout_soundfont(name: str) -> bool:
  """Whether a soundfont key or path is (a file of) a held-out soundfont."""
  return name in HELDOUT_SOUNDFONTS or _soundfont_file(name) in (
      heldout_files() - {''})


def check_training(params: synth.SynthParams, what: str = 'rendering') -> None:
  """HeldOutError if ``params`` uses a held-out instrument or soundfont."""
  if params.program in HELDOUT_PROGRAMS:
    raise HeldOutError(f'{what}: program {params.program} '
                       f'({HELDOUT_PROGRAMS[params.program]}) is held out '
                       'for evaluation and never in training data')
  if is_heldout_soundfont(params.soundfont):
    raise HeldOutError(f'{what}: soundfont {params.soundfont!r} is held out '
                       'for evaluation and never in training data')


def _rng(*parts) -> np.random.Generator:
  """A generator seeded by ints and strings (stable across runs/machines)."""
  return np.random.default_rng(
      [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts])


@dataclasses.dataclass(frozen=True)
class Draw:
  """A rendering slot whose parameters each piece draws (module doc).

  Attributes:
    slot: the slot's number; its tag is ``f'drawn{slot}'``.
    seed: with ``slot`` and the piece name, seeds every draw.
    soundfonts: soundfont keys or paths to draw from.
    programs: General MIDI programs to draw from.
    tempo_range: (low, high) tempo factors, drawn log-uniform.
    heldout: allow held-out instruments and soundfonts (evaluation
      renderings only; ``check_training`` refuses them for training data).
  """
  slot: int
  seed: int = 0
  soundfonts: tuple[str, ...] = TRAIN_SOUNDFONTS
  programs: tuple[int, ...] = tuple(TRAIN_PROGRAMS)
  tempo_range: tuple[float, float] = TEMPO_RANGE
  heldout: bool = False

  def __post_init__(self):
    lo, hi = self.tempo_range
    if not 0.25 <= lo <= hi <= 4.0:
      raise ValueError(f'drawn{self.slot}: tempo range {self.tempo_range} '
                       'must satisfy 0.25 <= low <= high <= 4')
    if not self.soundfonts or not self.programs:
      raise ValueError(f'drawn{self.slot}: no soundfont or no program to '
                       'draw from')
    bad = [p for p in self.programs if not 0 <= p <= 127]
    if bad:
      raise ValueError(f'drawn{self.slot}: programs {bad} outside 0-127')
    if not self.heldout:
      for sf in self.soundfonts:
        check_training(synth.SynthParams(soundfont=sf), f'drawn{self.slot}')
      for p in self.programs:
        check_training(synth.SynthParams(program=p), f'drawn{self.slot}')

  @property
  def tag(self) -> str:
    return f'drawn{self.slot}'

  def params_for(self, piece: str) -> synth.SynthParams:
    """The rendering of ``piece`` in this slot (the same on every call)."""
    rng = _rng(self.seed, self.slot, piece)
    lo, hi = np.log(self.tempo_range)
    return synth.SynthParams(
        soundfont=self.soundfonts[rng.integers(len(self.soundfonts))],
        program=int(self.programs[rng.integers(len(self.programs))]),
        tempo=round(float(np.exp(rng.uniform(lo, hi))), 4),
        velocity=int(rng.integers(VELOCITY_RANGE[0], VELOCITY_RANGE[1] + 1)),
        dynamics=round(float(rng.uniform(0, DYNAMICS_MAX)), 2),
        accent=round(float(rng.uniform(0, ACCENT_MAX)), 2),
        timing_s=round(float(rng.uniform(0, TIMING_MAX_S)), 4),
        seed=int(rng.integers(2**31)), slot=self.tag)


def draws(n: int, seed: int = 0, soundfonts: Sequence[str] = TRAIN_SOUNDFONTS,
          tempo_range: tuple[float, float] = TEMPO_RANGE) -> tuple[Draw, ...]:
  """``n`` training slots ``drawn0 ... drawn{n-1}``."""
  return tuple(Draw(slot=i, seed=seed, soundfonts=tuple(soundfonts),
                    tempo_range=tuple(tempo_range)) for i in range(n))


def heldout(tempo: float, seed: int = 0,
            soundfont: str = HELDOUT_SOUNDFONTS[0]) -> Draw:
  """An evaluation slot: held-out instruments and soundfont, a fixed tempo
  factor, drawn dynamics and timing."""
  return Draw(slot=0, seed=seed, soundfonts=(soundfont,),
              programs=tuple(HELDOUT_PROGRAMS), tempo_range=(tempo, tempo),
              heldout=True)
