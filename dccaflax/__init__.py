"""dccaflax: audio <-> sheet-music snippet retrieval with Deep CCA (JAX/Flax).

Public API::

  import dccaflax
  model = dccaflax.load(workdir)                 # a trained run's workdir
  s = dccaflax.embed_sheet(model, sheets)        # (N, 40, 100) -> (N, 32)
  a = dccaflax.embed_audio(model, specs)         # (N, 136, 100) -> (N, 32)
  similarity = a @ s.T                           # cosine similarity

Both embeddings live in the CCA space fitted on training pairs and are
L2-normalised, so a dot product is the cosine similarity of the paper's
Eq. 4.  Importing the package imports only NumPy; JAX, Flax and orbax load on
first use (data preparation imports ``dccaflax.audio`` / ``snippets`` in many
worker processes), and TFDS only when data are read.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import numpy as np

from dccaflax import snippets

__all__ = ['Model', 'load', 'embed_sheet', 'embed_audio']

SHEET_SHAPE = (snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH)
SPEC_SHAPE = (snippets.SPEC_BINS, snippets.SPEC_FRAMES)
EMBED_BATCH = 256           # examples per jitted call (last one padded)


class Model(NamedTuple):
  """A trained retrieval model, everything needed to embed.

  Attributes:
    module: the Flax ``models.DCCAModel`` (towers).
    variables: {'params', 'batch_stats'} of the towers.
    projection: ``cca.Projection`` fitted on training pairs.
    config: the run's ``train_lib.TrainConfig``.
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
    workdir: the ``--workdir`` of ``experiments.train``.
    which: 'best' (best validation R@10; falls back to 'last' when absent)
      or 'last' (the newest checkpoint).

  Returns:
    ``Model``.

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint.
    ValueError: unknown ``which``.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from dccaflax import train_lib  # pylint: disable=g-import-not-at-top
  if which not in ('best', 'last'):
    raise ValueError(f"which must be 'best' or 'last', got {which!r}")
  workdir = os.fspath(workdir)
  config = train_lib.read_config(workdir)
  module = train_lib.model_from_config(config)
  variables = train_lib.init_variables(jax.random.key(0), module)
  k = config.out_dim
  zeros = lambda *shape: jnp.zeros(shape, jnp.float32)
  target = {'params': variables['params'],
            'batch_stats': variables['batch_stats'],
            'projection': {'mean_x': zeros(k), 'mean_y': zeros(k),
                           'U': zeros(k, k), 'V': zeros(k, k),
                           'corr': zeros(k)}}
  directory = os.path.join(workdir, train_lib.BEST_DIR)
  if which == 'last' or train_lib.latest_epoch(directory) is None:
    directory = os.path.join(workdir, train_lib.LAST_DIR)
  restored = train_lib.restore_checkpoint(directory, None, target)
  tree = restored['model']
  return Model(module=module,
               variables={'params': tree['params'],
                          'batch_stats': tree['batch_stats']},
               projection=train_lib.projection_from_tree(tree['projection']),
               config=config, epoch=int(restored['meta']['epoch']))


@functools.cache
def _cores():
  """Jitted embedding cores, built on first use (keeps the import light)."""
  import jax  # pylint: disable=g-import-not-at-top
  from dccaflax import cca  # pylint: disable=g-import-not-at-top
  from dccaflax import retrieval  # pylint: disable=g-import-not-at-top
  normalize = retrieval.l2_normalize

  @functools.partial(jax.jit, static_argnames=('module',))
  def sheet(module, variables, projection, x):
    f = module.apply(variables, x, method=module.embed_sheet)
    return normalize(cca.project_x(projection, f))

  @functools.partial(jax.jit, static_argnames=('module',))
  def audio(module, variables, projection, x):
    g = module.apply(variables, x, method=module.embed_audio)
    return normalize(cca.project_y(projection, g))

  return sheet, audio


def _check(x, shape: tuple[int, int], name: str, allow_uint8: bool
           ) -> np.ndarray:
  """Host array of shape (N,) + shape, uint8 (if allowed) or finite float."""
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
  k = int(model.projection.corr.shape[0])
  out = np.empty((x.shape[0], k), np.float32)
  for start in range(0, x.shape[0], EMBED_BATCH):
    chunk = x[start:start + EMBED_BATCH]
    n = chunk.shape[0]
    if n < EMBED_BATCH:   # one compiled shape for every call
      chunk = np.concatenate(
          [chunk, np.zeros((EMBED_BATCH - n,) + x.shape[1:], x.dtype)])
    out[start:start + n] = np.asarray(
        core(model.module, model.variables, model.projection, chunk))[:n]
  return out


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
  x = _check(sheets, SHEET_SHAPE, 'sheets', allow_uint8=True)
  return _embed(_cores()[0], model, x)


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
  x = _check(specs, SPEC_SHAPE, 'specs', allow_uint8=False)
  return _embed(_cores()[1], model, x)
