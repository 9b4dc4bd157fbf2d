"""The training augmentations: one registry, each declared once.

An ``Augmentation`` in ``REGISTRY`` is everything about one augmentation:
its settings (``Setting``: each is the ``TrainConfig`` flag and
``config.json`` key ``aug_<name>``, 0 = off, with its largest value and its
help), the function the training step applies on the device, the PRNG key
it draws from, the px of strip or frames of spectrogram it may read beyond
a window (the piece layout leaves them as gap: ``pieceset.SHEET_GAP``,
``SPEC_GAP``) and the rows it shows in the figures
(``data_prep.show --augment_out / --sheets_out``).

``AugmentConfig`` is a frozen dataclass with one field per setting, made
from the registry and checked against the limits when built; it is
``TrainConfig.augment`` and the static ``augment`` argument of the jitted
steps (``dccaflax.steps``) as it is.  A step runs three stages, each in
registry order: the window offsets (``offsets``, drawn before the windows
are cut), then the audio and the sheet augmentations of the cut windows
(``apply``).

Adding an augmentation is its function (``dccaflax.audio_augment`` or
``dccaflax.sheet_augment``), one ``Augmentation`` below and one test.  It
draws from a key of its own (``fold`` with a number no other entry of its
stage uses), so the others draw exactly what they drew before.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dccaflax import audio_augment
from dccaflax import sheet_augment
from dccaflax import snippets

SHEET = 'sheet'    # the modality an augmentation reads and changes
AUDIO = 'audio'
OFFSET = 'offset'  # stages: a window offset drawn before the cut ...
WINDOW = 'window'  # ... or a change of the cut window
PREFIX = 'aug_'    # of each setting's flag and config.json key


@dataclasses.dataclass(frozen=True)
class Setting:
  """One setting of an augmentation: flag and config.json key
  ``aug_<name>``, 0 = off, valid in ``[0, limit]``."""
  name: str
  kind: type      # int or float
  limit: float
  help: str


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """One augmentation (see the module doc).

  Attributes:
    name: what it is called.
    modality: ``SHEET`` or ``AUDIO``.
    stage: ``OFFSET``: ``fn(key, batch_size, value) -> (B,) int32`` is the
      ``input_pipeline.batch_windows`` argument of its setting's name;
      ``WINDOW``: ``fn(key, windows, *values) -> windows`` (traced, values
      static, in the order of ``settings``).
    fn: the function.
    settings: its settings; it runs when any is not 0.
    key: ``('same',)``, ``('split', n, i)`` or ``('fold', i)``: its key from
      the stage's (the step's key for offsets; ``fold_in`` of it with 2 for
      the audio windows, 3 for the sheets).
    gap: px (sheets) or frames (audio) each side of a window it may read at
      its limits; the piece layout leaves their sum as gap.
    widen: the window is cut ``gap`` wider each side for it, and it returns
      the plain window (a stage's first augmentation only).
    figure: ``(label, {setting: value})`` rows of its figure.
  """
  name: str
  modality: str
  stage: str
  fn: Callable
  settings: tuple[Setting, ...]
  key: tuple
  gap: int = 0
  widen: bool = False
  figure: tuple = ()


def _reach(width: int, most: float) -> int:
  """Px or frames each side of a ``width`` window that a scale of ``1 +
  most`` about its centre reads (one more for the interpolation)."""
  return int(np.ceil(width / 2 * most)) + 1


def draw_offset(key: jax.Array, batch_size: int, most: int) -> jax.Array:
  """(B,) int32 uniform in ``[-most, most]``."""
  return jax.random.randint(key, (batch_size,), -most, most + 1, jnp.int32)


def _offset(name, limit, help_text):
  return (Setting(name, int, limit, help_text),)


MAX_DX = 10      # px, horizontal sheet shift
MAX_DFRAME = 2   # frames, onset jitter
MAX_STRETCH = 0.1
MAX_SHEET_SCALE = 0.3
# Px / frames each side of a window that a stretch or scale at its limit
# reads (audio_augment.stretch_time, sheet_augment.scale_width).
STRETCH_MARGIN = _reach(snippets.SPEC_FRAMES, MAX_STRETCH)      # 6 frames
SHEET_SCALE_MARGIN = _reach(snippets.SHEET_WIDTH, MAX_SHEET_SCALE)  # 16 px

# Applied in this order within a stage.  The keys are the ones the step has
# always used, so a run replays as before.
REGISTRY = (
    Augmentation('sheet shift', SHEET, OFFSET, draw_offset, _offset(
        'dx', MAX_DX, 'Max random horizontal sheet shift (px, 0 = off).'),
                 key=('split', 3, 0), gap=MAX_DX),
    Augmentation('vertical sheet shift', SHEET, OFFSET, draw_offset, _offset(
        'dy', snippets.STRIP_MARGIN, 'Max random vertical sheet shift (px, '
        '0 = off).'), key=('split', 3, 1)),   # within the strip's margin
    Augmentation('onset jitter', AUDIO, OFFSET, draw_offset, _offset(
        'dframe', MAX_DFRAME, 'Max random onset jitter (frames, 0 = off).'),
                 key=('split', 3, 2), gap=MAX_DFRAME),
    Augmentation('time stretch', AUDIO, WINDOW, audio_augment.stretch_time, (
        Setting('stretch', float, MAX_STRETCH, 'Max random time stretch of '
                'an audio excerpt about its onset (0.1 = +-10 %, the most; '
                '0 = off).'),), key=('split', 6, 0), gap=STRETCH_MARGIN,
                 widen=True, figure=(('stretch +-10 %', {'stretch': 0.1}),)),
    Augmentation('tuning', AUDIO, WINDOW, audio_augment.shift_bins, (
        Setting('tune_bins', float, 1.0, 'Max random tuning deviation, '
                'fractions of a bin (24 per octave; <= 1; 0 = off).'),),
                 key=('split', 6, 1),
                 figure=(('tuning +-0.5 bin', {'tune_bins': 0.5}),)),
    Augmentation('equaliser', AUDIO, WINDOW, audio_augment.random_eq, (
        Setting('eq_db', float, float('inf'), 'Scale of a random spectral '
                'tilt and smooth EQ curve per audio excerpt (dB, 0 = off; '
                'dccaflax.audio_augment).'),), key=('split', 6, 2),
                 figure=(('tilt / EQ 6 dB', {'eq_db': 6.0}),)),
    # The step's audio key itself: the gains were its first augmentation.
    Augmentation('gain', AUDIO, WINDOW, audio_augment.random_gain, (
        Setting('gain_db', float, float('inf'), 'Max random global gain of '
                'an audio excerpt (+-dB, 0 = off).'),
        Setting('gain_curve_db', float, float('inf'), 'Max slow random gain '
                'curve within an audio excerpt (dB, 0 = off).')),
                 key=('same',),
                 figure=(('gain curve 6 dB', {'gain_curve_db': 6.0}),)),
    Augmentation('noise floor', AUDIO, WINDOW, audio_augment.add_noise_floor, (
        Setting('noise_db', float, float('inf'), 'Loudest random noise '
                "floor, dB below the excerpt's loudest frame (drawn down to "
                '30 dB lower; 0 = off).'),), key=('split', 6, 4),
                 figure=(('noise floor 25 dB', {'noise_db': 25.0}),)),
    Augmentation('masks', AUDIO, WINDOW, audio_augment.mask, (
        Setting('time_mask', int, snippets.SPEC_FRAMES, 'Widest band of '
                'frames silenced per excerpt (0 = off).'),
        Setting('freq_mask', int, snippets.SPEC_BINS, 'Widest band of bins '
                'silenced per excerpt (0 = off).')), key=('split', 6, 5),
                 figure=(('masks 8 frames, 6 bins',
                          {'time_mask': 8, 'freq_mask': 6}),)),
    # Its figure is data_prep.show --collections_out.
    Augmentation('sheet scale', SHEET, WINDOW, sheet_augment.scale_width, (
        Setting('sheet_scale', float, MAX_SHEET_SCALE, 'Max random '
                'horizontal scale of a sheet snippet about its notehead, '
                'log-uniform in [1/(1+s), 1+s] (0.3 the most; 0 = off; '
                'dccaflax.sheet_augment).'),), key=('same',),
                 gap=SHEET_SCALE_MARGIN, widen=True),
    Augmentation('scan', SHEET, WINDOW, sheet_augment.scan, (
        Setting('sheet_rotate', float, 3.0, 'Max random rotation of a sheet '
                'snippet about its notehead, degrees (3 the most; 0 = off; '
                'dccaflax.sheet_augment.scan).'),
        Setting('sheet_zoom', float, 0.2, 'Max random isotropic zoom of a '
                'sheet snippet, log-uniform in [1/(1+z), 1+z] (0.2 the most; '
                '0 = off).'),
        Setting('sheet_stroke', float, 1.0, 'Max strength of random stroke '
                'thickening or thinning (grey dilation / erosion; 1 the '
                'most; 0 = off).'),
        Setting('sheet_blur', float, 1.5, 'Max random Gaussian blur sigma of '
                'a sheet snippet, px (1.5 the most; 0 = off).'),
        Setting('sheet_contrast', float, 1.0, 'Random contrast: fainter '
                'ink, grey paper, sometimes a hard threshold (1 the most; 0 '
                '= off).'),
        Setting('sheet_noise', float, 1.0, 'Random scan noise: Gaussian '
                'grain and speckles (1 the most; 0 = off).')),
                 key=('fold', 1),
                 figure=(('rotate 1 deg', {'sheet_rotate': 1.0}),
                         ('zoom 15 %', {'sheet_zoom': 0.15}),
                         ('strokes 0.5', {'sheet_stroke': 0.5}),
                         ('blur 0.8 px', {'sheet_blur': 0.8}),
                         ('contrast 0.5', {'sheet_contrast': 0.5}),
                         ('noise 0.3', {'sheet_noise': 0.3}))),
    Augmentation('erasure', SHEET, WINDOW, sheet_augment.erase_columns, (
        Setting('sheet_erase', int, snippets.SHEET_WIDTH // 4, 'Widest band '
                'of columns of a sheet snippet painted over with paper (px, '
                '25 the most; 0 = off).'),), key=('fold', 2),
                 figure=(('erase 20 px', {'sheet_erase': 20}),)),
)
SETTINGS = {s.name: s for a in REGISTRY for s in a.settings}


def _check_registry() -> None:
  """AssertionError where two entries would share a setting or a key, or a
  widened window would not be its stage's first."""
  names = [s.name for a in REGISTRY for s in a.settings]
  assert len(names) == len(SETTINGS), f'a setting twice in {names}'
  for modality in (SHEET, AUDIO):
    for stage in (OFFSET, WINDOW):
      entries = [a for a in REGISTRY
                 if a.modality == modality and a.stage == stage]
      keys = [a.key for a in entries]
      assert len(set(keys)) == len(keys), f'a key twice in {keys}'
      assert all(not a.widen for a in entries[1:]), (
          f'{modality}: only the first augmentation may widen the window')


_check_registry()


def _coerce(setting: Setting, value):
  kind = setting.kind
  if kind is int and not float(value).is_integer():
    raise ValueError(f'{PREFIX}{setting.name} must be a whole number, got '
                     f'{value}')
  value = kind(value)
  if not 0 <= value <= setting.limit:   # also refuses nan
    raise ValueError(f'{PREFIX}{setting.name} must be in [0, '
                     f'{setting.limit}], got {value}')
  return value


def _post_init(self) -> None:
  for name, setting in SETTINGS.items():
    object.__setattr__(self, name, _coerce(setting, getattr(self, name)))


def _flat(self) -> dict:
  """The settings by flag / config.json name (``aug_<name>``)."""
  return {PREFIX + f.name: getattr(self, f.name)
          for f in dataclasses.fields(self)}


AugmentConfig = dataclasses.make_dataclass(
    'AugmentConfig',
    [(s.name, s.kind, dataclasses.field(
        default=s.kind(0), metadata={'help': s.help, 'limit': s.limit}))
     for s in SETTINGS.values()],
    frozen=True, namespace={
        '__module__': __name__, '__post_init__': _post_init, 'flat': _flat,
        '__doc__': (
        'The augmentation of a run: one field per ``Setting`` of '
        '``REGISTRY`` (0 = off), checked against its limit when built '
        '(ValueError naming the flag).  Frozen and hashable: the static '
        '``augment`` argument of the jitted steps.')})


def is_on(entry: Augmentation, config) -> bool:
  return any(getattr(config, s.name) for s in entry.settings)


def _key(entry: Augmentation, stage_key: jax.Array) -> jax.Array:
  how, *args = entry.key
  if how == 'same':
    return stage_key
  if how == 'split':
    return jax.random.split(stage_key, args[0])[args[1]]
  return jax.random.fold_in(stage_key, args[0])


def margin(config, modality: str) -> int:
  """Static px / frames each side to cut the ``modality``'s windows wider
  for ``config`` (0 where no augmentation that widens is on)."""
  return sum(a.gap for a in REGISTRY if a.widen and a.modality == modality
             and is_on(a, config))


def layout_gap(modality: str) -> int:
  """Px / frames each side of a window that all augmentations of the
  ``modality`` together may read at their limits (``pieceset``)."""
  return sum(a.gap for a in REGISTRY if a.modality == modality)


def offsets(key: jax.Array, batch_size: int, config) -> dict:
  """The window offsets of a batch: ``{setting name: (B,) int32}`` for each
  offset that is on (``input_pipeline.batch_windows`` keyword arguments)."""
  out = {}
  for a in REGISTRY:
    if a.stage == OFFSET and is_on(a, config):
      (setting,) = a.settings
      out[setting.name] = a.fn(_key(a, key), batch_size,
                               getattr(config, setting.name))
  return out


def apply(modality: str, key: jax.Array, windows: jax.Array,
          config) -> jax.Array:
  """The ``modality``'s window augmentations that are on, in registry order
  (traced; those that are off trace no op).

  Args:
    modality: ``AUDIO`` (``(B, 136, 100 + 2 * margin)`` float32 excerpts)
      or ``SHEET`` (``(B, 40, 100 + 2 * margin)`` uint8 snippets), cut
      ``margin(config, modality)`` wider each side.
    key: the stage's PRNG key.
    windows: the batch's windows.
    config: the static ``AugmentConfig``.

  Returns:
    The plain-width windows, augmented, same dtype.
  """
  for a in REGISTRY:
    if a.modality == modality and a.stage == WINDOW and is_on(a, config):
      windows = a.fn(_key(a, key), windows,
                     *(getattr(config, s.name) for s in a.settings))
  return windows


def figure_rows(modality: str) -> tuple:
  """``(label, {setting: value})`` rows of the ``modality``'s figure: each
  augmentation's, then all of them together."""
  rows = tuple(row for a in REGISTRY if a.modality == modality
               for row in a.figure)
  together = {k: v for _, setting in rows for k, v in setting.items()}
  return rows + (('all of them', together),)
