"""Engravers by name: melody -> unrolled score strip with notehead x.

Modules: ``notation`` (the engraver-neutral layout of a melody: spelling,
note values, metre, bars of tokens), ``strip`` (a rendered page -> the
strip: staves, unrolling; ``Engraving``, ``EngraveError``), and one module
per engraver: ``lilypond`` (with ``lilypond_source``, its source and
style) and ``verovio``.

Each engraver gives one or more engravings, which data sources name
('lilypond', 'lilypond_drawn', 'verovio_leland', ...; ``ENGRAVINGS``).
Callers ask this registry (:func:`get`, :func:`engraver_of`) rather than
branch on the names.  Adding an engraver is one module with an object
that has :class:`Engraver`'s attributes, and one line in ``ENGRAVERS``.
"""

from __future__ import annotations

import types
from typing import Any, Protocol, Sequence

from data_prep.engraving import lilypond
from data_prep.engraving import verovio
from data_prep.engraving.strip import EngraveError, Engraving
from data_prep.melody import Melody


class Engraver(Protocol):
  """What an engraver gives the data pipeline.

  Attributes:
    name: the engraver's name ('lilypond'), in each piece's report item.
    engravings: the engravings it gives, as data sources name them.
    heldout_engravings: those of them held out for evaluation: they never
      reach the train and valid splits.
    uncached_errors: ``EngraveError`` types that are failures of the
      machine, not of the piece: never cached, so the next run tries again.
    modules: the modules whose code computes its engravings (their source
      is part of the cache key).
  """
  name: str
  engravings: tuple[str, ...]
  heldout_engravings: tuple[str, ...]
  uncached_errors: tuple[type[EngraveError], ...]
  modules: tuple[types.ModuleType, ...]

  def settings(self, engraving: str, piece: str) -> Any:
    """What ``engraving`` gives a piece (a LilyPond style, a font)."""

  def params(self, settings: Any) -> dict:
    """``settings`` as JSON, for the piece's report item."""

  def source(self, melody: Melody, settings: Any) -> str:
    """The engraver's input for a melody (with the settings, the cache key).

    Raises:
      ValueError, EngraveError: the melody cannot be written.
    """

  def version(self) -> str:
    """The engraver program's version (part of the cache key)."""

  def warm_up(self) -> None:
    """Prepares the machine once, before parallel runs start.

    Raises:
      EngraveError: the engraver cannot run on this machine, with why.
    """

  def engrave_many(self, melodies: Sequence[Melody], settings: Sequence[Any],
                   timeout_s: float = 120.0) -> list:
    """One :class:`Engraving` or ``EngraveError`` per melody, in order."""

  def page_png(self, melody: Melody, out_path: str, settings: Any,
               title: str = '') -> str:
    """A titled page, as a user would have it, written as a PNG."""


ENGRAVERS: dict[str, Engraver] = {
    e.name: e for e in (lilypond.ENGRAVER, verovio.ENGRAVER)}
ENGRAVINGS = tuple(g for e in ENGRAVERS.values() for g in e.engravings)
HELDOUT_ENGRAVINGS = tuple(g for e in ENGRAVERS.values()
                           for g in e.heldout_engravings)

__all__ = ['ENGRAVERS', 'ENGRAVINGS', 'HELDOUT_ENGRAVINGS', 'EngraveError',
           'Engraver', 'Engraving', 'engraver_of', 'get']


def get(name: str) -> Engraver:
  """The engraver called ``name`` ('lilypond', 'verovio').

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  if name not in ENGRAVERS:
    raise ValueError(f'unknown engraver {name!r}; known: '
                     f'{", ".join(ENGRAVERS)}')
  return ENGRAVERS[name]


def engraver_of(engraving: str) -> Engraver:
  """The engraver that gives ``engraving`` (e.g. 'verovio_leland').

  Raises:
    ValueError: an unknown engraving (the message lists the known ones).
  """
  for e in ENGRAVERS.values():
    if engraving in e.engravings:
      return e
  raise ValueError(f'unknown engraving {engraving!r}; known: '
                   f'{", ".join(ENGRAVINGS)}')
