"""The settings of a training run: one dataclass, one source.

``TrainConfig`` holds every setting of a run with its default and its help
text (field metadata); ``experiments/train.py`` makes one command-line flag of
each field, and ``config.json`` in the workdir stores it
(``checkpoints.write_config`` / ``read_config``).  Defaults are the paper's
recipe (full width, Sec. 3.1) but for the audio input, which is
level-normalised (``level_norm='peak'``: measured at no cost in retrieval,
see the README); ``experiments/*.flags`` set the recipe explicitly and say
which settings are the paper's and which are ours.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax.numpy as jnp

from dccaflax import cca
from dccaflax import input_pipeline
from dccaflax import level
from dccaflax import models


def _setting(default, help_text: str, choices=None, required=False,
             architecture=False):
  """A ``TrainConfig`` field with its command-line help (and choices).

  ``architecture``: the setting shapes the weights or what they were trained
  to see, so it is fixed for a workdir (``checkpoints.write_config``).
  """
  return dataclasses.field(default=default, metadata={
      'help': help_text, 'choices': choices, 'required': required,
      'architecture': architecture})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every setting of a run; stored as ``config.json`` in the workdir."""
  data_dir: str = _setting(
      '', 'Prepared TFDS data (data_prep.prepare --data_dir).', required=True)
  width: float = _setting(
      1.0, "Tower width multiplier: 1 = the paper's 16/32/64/64 feature maps, "
      '0.25 = 4/8/16/16.', architecture=True)
  out_dim: int = _setting(models.PAPER_OUT_DIM, 'Correlation-space size h.',
                          architecture=True)
  dtype: str = _setting(
      'float32', 'Convolution compute dtype (BatchNorm and DCCA stay '
      'float32).', choices=('float32', 'bfloat16'), architecture=True)
  epochs: int = _setting(100, 'Epochs (passes over all training pairs, last '
                         'partial batch dropped; see epoch_pairs).')
  epoch_pairs: int = _setting(
      0, 'Pairs per epoch: 0 = one pass over all training pairs; N = '
      'N // batch_size steps of the stream of passes, so that evaluations, '
      'checkpoints, time-budget stops and lr_halve_every come that often '
      '(on a CPU a full-width pass takes over an hour).')
  batch_size: int = _setting(100, 'Pairs per SGD step.')
  learning_rate: float = _setting(0.1, 'Initial learning rate.')
  momentum: float = _setting(0.9, 'SGD momentum.')
  lr_halve_every: int = _setting(25, 'Halve the learning rate every this '
                                 'many epochs.')
  reg: float = _setting(cca.DEFAULT_REG, 'Ridge added to the covariance '
                        'diagonals (DCCA loss and CCA fit).')
  seed: int = _setting(0, 'Initialisation, data order and augmentation '
                       'seed.')
  collections: str = _setting(
      'nottingham', 'Collections to train and validate on, comma-separated '
      "(prepared with data_prep.prepare --collections): nottingham (the "
      "paper's data), oneills, airds, each optionally with an engraving "
      "(data_prep.prepare --engravings), e.g. nottingham:verovio_bravura; "
      'default LilyPond. Their pairs are pooled.')
  max_train_pieces: Optional[int] = _setting(
      None, 'Use only the first N training pieces of each collection '
      '(default: all).')
  max_val_pieces: Optional[int] = _setting(
      None, 'Use only the first N validation pieces of each collection '
      '(default: all).')
  val_subset: int = _setting(2000, 'Evenly spaced validation pairs for the '
                             'per-epoch R@k and correlation.')
  fit_pairs: int = _setting(25000, 'Training pairs for the CCA fit (all if '
                            'fewer).')
  eval_every: int = _setting(1, 'Epochs between evaluations and checkpoints '
                             '(and after the last).')
  eval_batch_size: int = _setting(500, 'Pairs per embedding call in '
                                  'evaluation.')
  aug_dx: int = _setting(0, 'Max random horizontal sheet shift (px, 0 = '
                         'off).')
  aug_dy: int = _setting(0, 'Max random vertical sheet shift (px, 0 = off).')
  aug_dframe: int = _setting(0, 'Max random onset jitter (frames, 0 = off).')
  aug_gain_db: float = _setting(0.0, 'Max random global gain of an audio '
                                'excerpt (+-dB, 0 = off).')
  aug_gain_curve_db: float = _setting(0.0, 'Max slow random gain curve '
                                      'within an audio excerpt (dB, 0 = off).')
  aug_eq_db: float = _setting(0.0, 'Scale of a random spectral tilt and '
                              'smooth EQ curve per audio excerpt (dB, 0 = '
                              'off; dccaflax.audio_augment).')
  aug_noise_db: float = _setting(0.0, 'Loudest random noise floor, dB below '
                                 "the excerpt's loudest frame (drawn down to "
                                 '30 dB lower; 0 = off).')
  aug_tune_bins: float = _setting(0.0, 'Max random tuning deviation, '
                                  'fractions of a bin (24 per octave; <= 1; '
                                  '0 = off).')
  aug_stretch: float = _setting(0.0, 'Max random time stretch of an audio '
                                'excerpt about its onset (0.1 = +-10 %, the '
                                'most; 0 = off).')
  aug_time_mask: int = _setting(0, 'Widest band of frames silenced per '
                                'excerpt (0 = off).')
  aug_freq_mask: int = _setting(0, 'Widest band of bins silenced per excerpt '
                                '(0 = off).')
  aug_sheet_scale: float = _setting(
      0.0, 'Max random horizontal scale of a sheet snippet about its '
      'notehead, log-uniform in [1/(1+s), 1+s] (0.3 the most; 0 = off; '
      'dccaflax.sheet_augment).')
  aug_sheet_rotate: float = _setting(
      0.0, 'Max random rotation of a sheet snippet about its notehead, '
      'degrees (3 the most; 0 = off; dccaflax.sheet_augment.scan).')
  aug_sheet_zoom: float = _setting(
      0.0, 'Max random isotropic zoom of a sheet snippet, log-uniform in '
      '[1/(1+z), 1+z] (0.2 the most; 0 = off).')
  aug_sheet_stroke: float = _setting(
      0.0, 'Max strength of random stroke thickening or thinning (grey '
      'dilation / erosion; 1 the most; 0 = off).')
  aug_sheet_blur: float = _setting(
      0.0, 'Max random Gaussian blur sigma of a sheet snippet, px (1.5 the '
      'most; 0 = off).')
  aug_sheet_contrast: float = _setting(
      0.0, 'Random contrast: fainter ink, grey paper, sometimes a hard '
      'threshold (1 the most; 0 = off).')
  aug_sheet_noise: float = _setting(
      0.0, 'Random scan noise: Gaussian grain and speckles (1 the most; '
      '0 = off).')
  # In an older config.json a bool is read by level.check_method (true was
  # 'mean'), and no field at all means 'none' (see from_json).
  level_norm: str = _setting(
      level.PEAK, 'Bring every audio excerpt to a reference level before the '
      "audio tower, so a recording's loudness does not matter: peak (its "
      'loudest frame), mean (its mean magnitude) or none (the paper\'s '
      'input); see dccaflax.level.', choices=level.METHODS,
      architecture=True)
  renderings: str = _setting(
      'primary', 'Audio renderings to train on, one drawn at random per pair '
      "and step: primary (the paper's data), all (every one prepared with "
      'data_prep.prepare --soundfonts/--tempos), or tags such as '
      'fluidr3_t0.90,timgm6mb_t1.00.  Validation uses the primary.')
  log_every: int = _setting(100, 'Steps between progress lines.')
  steps_per_dispatch: int = _setting(
      1, "SGD steps fused into one jitted call (a loop on the device over "
      "the epoch's batch order); 1 = one call per step.  Same parameters "
      'either way (up to float rounding); larger values save dispatch '
      'overhead on accelerators.')
  max_consecutive_skips: int = _setting(10, 'Stop after this many non-finite '
                                        'steps in a row.')

  def __post_init__(self):
    # One spelling of the audio input for everything that reads a config
    # (the model, the index fingerprint, config.json); an unknown one fails
    # here, naming it.
    object.__setattr__(self, 'level_norm',
                       level.check_method(self.level_norm))
    object.__setattr__(self, 'collections', ','.join(
        input_pipeline.parse_collections(self.collections)))

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> 'TrainConfig':
    names = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k in names}
    # Runs from before the field existed fed the paper's input.
    d.setdefault('level_norm', level.NONE)
    return cls(**d)


def architecture(config: TrainConfig) -> dict:
  """The settings fixed for a workdir (declared ``architecture=True``)."""
  return {f.name: getattr(config, f.name)
          for f in dataclasses.fields(config) if f.metadata['architecture']}


def renderings_arg(renderings: str):
  """``TrainConfig.renderings`` -> the ``renderings`` of
  ``input_pipeline.load_pieces`` (None: the primary; 'all'; or tags)."""
  renderings = renderings.strip()
  if renderings in ('', 'primary'):
    return None
  if renderings == 'all':
    return 'all'
  return [t.strip() for t in renderings.split(',') if t.strip()]


def model_from_config(config: TrainConfig) -> models.DCCAModel:
  """The towers a config describes."""
  return models.create_model(width=config.width, out_dim=config.out_dim,
                             dtype=jnp.dtype(config.dtype),
                             level_norm=config.level_norm)
