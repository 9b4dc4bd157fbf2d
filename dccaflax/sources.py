"""The names of data sources: a collection, optionally with an engraving.

A data source is ``'<collection>'`` or ``'<collection>:<engraving>'``:
``'nottingham'`` is the paper's pieces engraved by LilyPond,
``'oneills:verovio_leland'`` O'Neill's engraved by Verovio in Leland
(``data_prep.prepare --collections --engravings``).  These helpers parse,
normalise and name them (``TrainConfig.collections``, the TFDS config names,
the preparation reports); they import nothing, so the settings
(``dccaflax.config``) can check a source without loading the input pipeline.
"""

from __future__ import annotations

from typing import Sequence

NOTTINGHAM = 'nottingham'  # the paper's collection: configs 'pairs', 'pieces'
LILYPOND = 'lilypond'      # the paper's engraving, every collection's default


def split_source(name: str) -> tuple[str, str]:
  """A data source, ``'<collection>'`` or ``'<collection>:<engraving>'``, as
  ``(collection, engraving)``: ``'nottingham:verovio_leland'`` is the
  Nottingham pieces engraved by Verovio in Leland, ``'oneills'`` O'Neill's
  engraved by LilyPond (``data_prep.prepare --engravings``).

  Raises:
    ValueError: an empty part, or more than one ':'.
  """
  parts = name.strip().split(':')
  if len(parts) > 2 or not all(p.strip() for p in parts):
    raise ValueError(f"bad data source {name!r}: expected '<collection>' or "
                     "'<collection>:<engraving>'")
  return parts[0].strip(), (parts[1].strip() if len(parts) == 2 else LILYPOND)


def source_name(collection: str, engraving: str = LILYPOND) -> str:
  """The inverse of ``split_source``: the engraving named unless LilyPond."""
  return collection if engraving == LILYPOND else f'{collection}:{engraving}'


def name_parts(source: str) -> list[str]:
  """The parts that name a data source in config and file names: the
  collection unless Nottingham, the engraving unless LilyPond (so the paper's
  data has none): ``'oneills:verovio_leland'`` -> ``['oneills',
  'verovio_leland']``, ``'nottingham'`` -> ``[]``."""
  coll, engraving = split_source(source)
  return ([] if coll == NOTTINGHAM else [coll]) + (
      [] if engraving == LILYPOND else [engraving])


def config_name(kind: str, collection: str = NOTTINGHAM) -> str:
  """The TFDS config of a data source's ``kind`` ('pairs' or 'pieces').

  ``collection`` is a collection, optionally with an engraving
  (``split_source``).  Nottingham's LilyPond configs are 'pairs' and
  'pieces', another collection's '<collection>_<kind>', another engraving's
  '[<collection>_]<engraving>_<kind>' (e.g. 'verovio_leland_pairs',
  'oneills_verovio_leland_pieces').
  """
  if kind not in ('pairs', 'pieces'):
    raise ValueError(f"kind must be 'pairs' or 'pieces', got {kind!r}")
  return '_'.join(name_parts(collection) + [kind])


def parse_collections(collections: str | Sequence[str]) -> tuple[str, ...]:
  """'nottingham,oneills:verovio_leipzig' (or a sequence) -> a tuple of
  distinct data sources (``split_source``), LilyPond's unnamed.

  Raises:
    ValueError: none, a malformed one, or one named twice.
  """
  if isinstance(collections, str):
    collections = collections.split(',')
  names = tuple(source_name(*split_source(c)) for c in collections
                if c.strip())
  if not names:
    raise ValueError('no collection named')
  twice = sorted({c for c in names if names.count(c) > 1})
  if twice:
    raise ValueError(f'collections named twice: {twice}')
  return names
