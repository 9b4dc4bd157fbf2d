"""Trained models in memory and their embeddings (what ``dccaflax.api``
exports, and what the library's own modules embed with).

``load`` reads a workdir through ``dccaflax.checkpoints`` alone: neither the
trainer nor any data-preparation code is imported.  ``embed_sheet`` /
``embed_audio`` check their input (shape, dtype, finite values; each message
says what to do) and return L2-normalised CCA-space vectors, so a dot
product is the cosine similarity of the paper's Eq. 4.  Modules inside the
library (index, identify, evaluation) import this module, never the public
facade ``dccaflax.api``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import numpy as np

from dccaflax import batching
from dccaflax import cca
from dccaflax import checkpoints
from dccaflax import models
from dccaflax import retrieval
from dccaflax import snippets

SHEET_SHAPE = (snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH)
SPEC_SHAPE = (snippets.SPEC_BINS, snippets.SPEC_FRAMES)
EMBED_BATCH = 256           # examples per jitted call (last one padded)


class Model(NamedTuple):
  """A trained retrieval model, everything needed to embed.

  Attributes:
    module: the Flax ``models.DCCAModel`` (towers).
    variables: {'params', 'batch_stats'} of the towers.
    projection: ``cca.Projection`` fitted on training pairs.
    config: the run's ``config.TrainConfig``.
    epoch: the epoch of the restored checkpoint.
  """
  module: Any
  variables: Any
  projection: Any
  config: Any
  epoch: int


def load(workdir: str | os.PathLike, which: str = 'best') -> Model:
  """Rebuilds a trained model from a training workdir alone.

  Args:
    workdir: the ``--workdir`` of ``experiments.train``, or the name of a
      model shipped in the repository's ``models/`` (e.g.
      ``'nottingham_paper'``; ``checkpoints.shipped_models()``).
    which: 'best' (best validation R@10; falls back to 'last' when absent)
      or 'last' (the newest checkpoint).

  Returns:
    ``Model``.

  Raises:
    FileNotFoundError: no such folder or shipped model, no
      ``config.json`` or no checkpoint.
    ValueError: unknown ``which``.
  """
  config, variables, projection, epoch = checkpoints.restore_model(
      checkpoints.resolve(workdir), which)
  return Model(module=models.from_config(config),
               variables=variables, projection=projection, config=config,
               epoch=epoch)


@functools.partial(jax.jit, static_argnames=('module',))
def _sheet_core(module, variables, projection, x):
  f = module.apply(variables, x, method=module.embed_sheet)
  return retrieval.l2_normalize(cca.project_x(projection, f))


@functools.partial(jax.jit, static_argnames=('module',))
def _audio_core(module, variables, projection, x):
  g = module.apply(variables, x, method=module.embed_audio)
  return retrieval.l2_normalize(cca.project_y(projection, g))


def check_batch(x, shape: tuple[int, int], name: str, allow_uint8: bool
                ) -> np.ndarray:
  """Host array of shape (N,) + shape, uint8 (if allowed) or finite float32.

  Raises:
    ValueError: wrong shape (with a hint for a missing batch axis), dtype,
      or a NaN / inf value.
  """
  x = np.asarray(x)
  if x.ndim != 3 or x.shape[1:] != shape:
    hint = ' (add a batch axis: x[None])' if x.shape == shape else ''
    raise ValueError(f'{name} must have shape (N, {shape[0]}, {shape[1]}), '
                     f'got {x.shape}{hint}')
  if x.dtype == np.uint8 and allow_uint8:
    return x
  if not np.issubdtype(x.dtype, np.floating):
    allowed = 'uint8 or float' if allow_uint8 else 'float'
    raise ValueError(f'{name} must be {allowed}, got dtype {x.dtype}')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{name} contains {np.sum(~np.isfinite(x))} non-finite '
                     'values (NaN or inf)')
  return x.astype(np.float32, copy=False)


def _embed(core, model: Model, x: np.ndarray) -> np.ndarray:
  return batching.map_batches(
      lambda chunk: core(model.module, model.variables, model.projection,
                         chunk), [x], EMBED_BATCH)


def embed_sheet(model: Model, sheets) -> np.ndarray:
  """Sheet snippets -> unit-length CCA-space vectors.

  Args:
    model: from ``load``.
    sheets: (N, 40, 100) uint8 or float pixels, 255 = white paper (the
      ``snippets.sheet_snippet`` convention).

  Returns:
    (N, k) float32, k = 32 for the paper's model, each row of L2 norm 1
    (cosine similarity = dot product with ``embed_audio`` rows).

  Raises:
    ValueError: wrong shape, dtype, or a NaN / inf pixel.
  """
  x = check_batch(sheets, SHEET_SHAPE, 'sheets', allow_uint8=True)
  return _embed(_sheet_core, model, x)


def embed_audio(model: Model, specs) -> np.ndarray:
  """Spectrogram excerpts -> unit-length CCA-space vectors.

  Args:
    model: from ``load``.
    specs: (N, 136, 100) float, log(1 + filterbank magnitude) at 31.25
      frames/s (``dccaflax.audio.spectrogram`` excerpts).

  Returns:
    (N, k) float32, rows of L2 norm 1.

  Raises:
    ValueError: wrong shape, dtype, or a NaN / inf value.
  """
  x = check_batch(specs, SPEC_SHAPE, 'specs', allow_uint8=False)
  return _embed(_audio_core, model, x)
