"""dccaflax: audio <-> sheet-music snippet retrieval with Deep CCA (JAX/Flax).

Public API (``dccaflax.api``)::

  import dccaflax
  model = dccaflax.load(workdir)                 # a trained run's workdir
  s = dccaflax.embed_sheet(model, sheets)        # (N, 40, 100) -> (N, 32)
  a = dccaflax.embed_audio(model, specs)         # (N, 136, 100) -> (N, 32)
  similarity = a @ s.T                           # cosine similarity

Importing the package imports nothing else: the API's names are re-exported
on first access (PEP 562), so data preparation, which imports
``dccaflax.audio`` / ``snippets`` in many worker processes, never loads JAX,
Flax or orbax, and TFDS loads only when data are read.
"""

from __future__ import annotations

import importlib

__all__ = ['Model', 'load', 'embed_sheet', 'embed_audio']


def __getattr__(name: str):
  if name in __all__:
    return getattr(importlib.import_module('dccaflax.api'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + __all__)
