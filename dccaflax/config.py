"""The settings of a training run: one dataclass, one source.

``TrainConfig`` holds every setting of a run with its default and its help
text (field metadata), the augmentation nested as ``augment``, a
``dccaflax.augment.AugmentConfig`` made from the augmentation registry.
Seen flat (``flat_settings``, ``to_json``, ``from_flat``), every setting has
one name, the augmentation's ``aug_<name>``: ``experiments/train.py`` makes
one command-line flag of each, and ``config.json`` in the workdir stores
them (``checkpoints.write_config`` / ``read_config``).  Defaults are the paper's
recipe (full width, Sec. 3.1) but for the audio input, which is
level-normalised (``level_norm='peak'``: measured at no cost in retrieval,
see the README); ``experiments/*.flags`` set the recipe explicitly and say
which settings are the paper's and which are ours.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Optional

from dccaflax import augment as augment_lib
from dccaflax import cca
from dccaflax import level
from dccaflax import objectives
from dccaflax import sources


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
  out_dim: int = _setting(cca.PAPER_DIM, 'Correlation-space size h.',
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
                        'diagonals (every objective and the CCA fit).')
  objective: str = _setting(
      objectives.DEFAULT, 'Training loss of a batch (dccaflax.objectives): ' +
      '; '.join(f'{name}: {spec.help}'
                for name, spec in objectives.REGISTRY.items()) + '.',
      choices=objectives.NAMES)
  rank_margin: float = _setting(
      objectives.DEFAULT_MARGIN, 'cca_ranking: margin of the hinge, in '
      'cosine-similarity units (>= 0).')
  infonce_temperature: float = _setting(
      objectives.DEFAULT_TEMPERATURE, 'infonce: temperature dividing the '
      'cosine similarities (> 0).')
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
  augment: augment_lib.AugmentConfig = dataclasses.field(
      default_factory=augment_lib.AugmentConfig, metadata={
          'help': 'The augmentations, drawn on the device per step '
                  '(dccaflax.augment): one flag and config.json key aug_<name> '
                  'per setting, 0 = off.',
          'prefix': augment_lib.PREFIX})
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
  init_from: str = _setting(
      '', 'Start from the towers of another model (a training workdir or a '
      "shipped model's name; its best checkpoint): its parameters and "
      'BatchNorm statistics, with a fresh optimizer, learning-rate schedule '
      'and step count.  Its width, out_dim, dtype and level_norm must be '
      "this run's.  Empty: random initialisation (seed).  A workdir that "
      'holds a checkpoint resumes from it instead.')

  def __post_init__(self):
    # One spelling of the audio input for everything that reads a config
    # (the model, the index fingerprint, config.json); an unknown one fails
    # here, naming it.
    object.__setattr__(self, 'level_norm',
                       level.check_method(self.level_norm))
    object.__setattr__(self, 'collections', ','.join(
        sources.parse_collections(self.collections)))
    objectives.check_config(self)

  def to_json(self) -> dict:
    """The flat view: every setting by its flag name (``aug_<name>``)."""
    d = dataclasses.asdict(self)
    del d['augment']
    return {**d, **self.augment.flat()}

  @classmethod
  def from_flat(cls, **settings) -> 'TrainConfig':
    """A config from settings by flag name (the ``aug_<name>`` ones into
    ``augment``).

    Raises:
      TypeError: a name that is no setting.
      ValueError: a value out of its range, naming the setting.
    """
    unknown = sorted(set(settings) - {n for n, _, _ in flat_settings(cls)})
    if unknown:
      raise TypeError(f'no such training setting: {", ".join(unknown)} (the '
                      'flags of dccaflax.config.TrainConfig and '
                      'dccaflax.augment.REGISTRY)')
    prefix = augment_lib.PREFIX
    aug = {k[len(prefix):]: settings.pop(k) for k in list(settings)
           if k.startswith(prefix)}
    return cls(**settings, augment=augment_lib.AugmentConfig(**aug))

  @classmethod
  def from_json(cls, d: dict) -> 'TrainConfig':
    """``to_json``'s dict, or an older one (names no longer known are
    dropped; ``level_norm`` absent: 'none', the input then)."""
    names = {name for name, _, _ in flat_settings()}
    d = {k: v for k, v in d.items() if k in names}
    # Runs from before the field existed fed the paper's input.
    d.setdefault('level_norm', level.NONE)
    return cls.from_flat(**d)


def flat_settings(cls=TrainConfig):
  """``(name, field, type)`` of every setting by its flag / config.json name:
  the fields of ``cls``, a nested dataclass's fields (``augment``) under
  their ``prefix``."""
  hints = typing.get_type_hints(cls)
  out = []
  for field in dataclasses.fields(cls):
    if 'prefix' in field.metadata:
      out += [(field.metadata['prefix'] + name, sub, kind)
              for name, sub, kind in flat_settings(hints[field.name])]
    else:
      out.append((field.name, field, hints[field.name]))
  return out


def architecture(config: TrainConfig) -> dict:
  """The settings fixed for a workdir (declared ``architecture=True``)."""
  return {f.name: getattr(config, f.name)
          for f in dataclasses.fields(config)
          if f.metadata.get('architecture')}


def renderings_arg(renderings: str):
  """``TrainConfig.renderings`` -> the ``renderings`` of
  ``input_pipeline.load_pieces`` (None: the primary; 'all'; or tags)."""
  renderings = renderings.strip()
  if renderings in ('', 'primary'):
    return None
  if renderings == 'all':
    return 'all'
  return [t.strip() for t in renderings.split(',') if t.strip()]
