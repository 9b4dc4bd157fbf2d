"""Search index: the CCA-space embeddings of every pair of a prepared split.

An index is built once per (model, split) and answers every query by exact
cosine top-k (``retrieval.top_k``, chunked, on whatever device JAX has).  Row
``i`` of an index is pair ``i`` of the split in the TFDS ``pairs`` config, in
stored order (piece name, onset), so a row can be re-read from the data for
figures (``read_rows``) without storing any pixels in the index.

File format (``.npz``, no pickles)::

  sheet_emb    (N, k) float32   unit-norm sheet-snippet embeddings
  audio_emb    (N, k) float32   unit-norm audio-excerpt embeddings
  piece_names  (P,)   str       piece names (file stems), sorted
  piece_id     (N,)   int32     each pair's piece, into piece_names
  notehead_x   (N,)   float32   notehead centre, px in the piece's strip
  onset_frame  (N,)   int32     onset frame in the piece (31.25 frames/s)
  bar          (N,)   int32     1-based bar number (pickup bar 0)
  split        ()     str       'train' | 'valid' | 'test'
  data_dir     ()     str       absolute path of the prepared data
  fingerprint  ()     str       ``model_fingerprint`` of the embedding model
  workdir      ()     str       the model's workdir (for messages only)
  collection   ()     str       the data source of the pairs
                                (``sources.split_source``, e.g.
                                'nottingham:verovio_leland': the same pairs
                                with Verovio's snippets); an index written
                                without it holds 'nottingham'
  version      ()     int       ``FORMAT_VERSION``

A page index (``dccaflax.page_index``) holds the sheet snippets of score
pages in the same format, with one more array, ``page_xy``.

Size: 8k + 16 bytes per pair, e.g. about 9 MB for the ~30,000 pairs of the
Nottingham test split at k = 32.

An index only makes sense with the model that built it: ``Index.check_model``
compares fingerprints (a SHA-256 of the towers' parameters, BatchNorm
statistics, CCA projection and model config) and raises
``ModelMismatchError`` otherwise.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import time
from typing import Callable, Optional

import jax
import numpy as np

from dccaflax import batching
from dccaflax import embedding
from dccaflax import input_pipeline
from dccaflax import level
from dccaflax import pieceset
from dccaflax import retrieval
from dccaflax import snippets
from dccaflax import sources

FORMAT_VERSION = 1
READ_CHUNK = 1024   # pairs read and embedded per step while building
_QUERY_BUCKET = 256  # queries are padded to a multiple (few compiled shapes)


class IndexFileError(ValueError):
  """A missing, unreadable or malformed index file (message names it)."""


class ModelMismatchError(ValueError):
  """An index used with a model other than the one that built it."""


def model_fingerprint(model) -> str:
  """Identifies a trained model's weights: 16 hex digits.

  SHA-256 over the model config's architecture fields (width, out_dim,
  dtype, and the level normalisation where there is one: the fingerprints of
  models without it stay as they were, and ``'mean'`` keeps the tag it had
  when it was the only method) and every array of the towers' parameters,
  BatchNorm statistics and the CCA projection (path, shape, dtype, bytes),
  in a fixed order.

  Args:
    model: a ``dccaflax.Model`` (from ``dccaflax.load``).
  """
  h = hashlib.sha256()
  cfg = model.config
  arch = (float(cfg.width), int(cfg.out_dim), str(cfg.dtype))
  if cfg.level_norm == level.MEAN:
    arch += ('level_norm',)
  elif cfg.level_norm != level.NONE:
    arch += (f'level_norm:{cfg.level_norm}',)
  h.update(repr(arch).encode())
  tree = {'variables': model.variables,
          'projection': dict(model.projection._asdict())}
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in sorted(leaves, key=lambda pl: jax.tree_util.keystr(pl[0])):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Index:
  """Embeddings and metadata of the N pairs of one split (see module doc)."""
  sheet_emb: np.ndarray
  audio_emb: np.ndarray
  piece: np.ndarray
  notehead_x: np.ndarray
  onset_frame: np.ndarray
  bar: np.ndarray
  split: str
  data_dir: str
  fingerprint: str
  workdir: str = ''
  page_xy: Optional[np.ndarray] = None    # a page index's (page_index)
  collection: str = sources.NOTTINGHAM   # the pairs' data source

  @property
  def is_pages(self) -> bool:
    """A page index: sheet snippets of score pages, no audio."""
    return self.page_xy is not None

  def __len__(self) -> int:
    return int(self.piece.shape[0])

  @property
  def pieces(self) -> list[str]:
    """Piece names in index order (sorted, as stored)."""
    _, first = np.unique(self.piece, return_index=True)
    return [str(self.piece[i]) for i in sorted(first)]

  def time_s(self, rows) -> np.ndarray:
    """Onset time in seconds (at the indexed tempo) of ``rows``."""
    return self.onset_frame[np.asarray(rows)] / snippets.FPS

  def rows_of(self, piece: str) -> np.ndarray:
    """Rows of a piece in onset order.

    Raises:
      KeyError: unknown piece; the message lists the closest known names.
    """
    rows = np.flatnonzero(self.piece == piece)
    if rows.size == 0:
      names = self.pieces
      close = difflib.get_close_matches(piece, names, n=3, cutoff=0.5)
      hint = (f'did you mean {", ".join(close)}?' if close else
              f'known pieces include {", ".join(names[:3])}')
      raise KeyError(f'unknown piece {piece!r}: not among the {len(names)} '
                     f'pieces of this index ({self.split} split); {hint}')
    return rows

  def check_model(self, model) -> None:
    """Raises ``ModelMismatchError`` unless ``model`` built this index."""
    fp = model_fingerprint(model)
    if fp != self.fingerprint:
      built = f' (workdir {self.workdir})' if self.workdir else ''
      raise ModelMismatchError(
          f'this index was built by another model{built}: fingerprint '
          f'{self.fingerprint} != {fp} of the given model; rebuild it with '
          'python -m experiments.index --workdir <this model> ...')

  def search_sheets(self, audio_queries, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Audio -> sheet: ``(Q, k)`` scores and rows of the best sheet snippets.

    Args:
      audio_queries: ``(Q, k_emb)`` ``embed_audio`` vectors.
      k: results per query (at most ``len(self)``).
    """
    return search(audio_queries, self.sheet_emb, k)

  def search_audio(self, sheet_queries, k: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Sheet -> audio: ``(Q, k)`` scores and rows of the best excerpts.

    Raises:
      ValueError: a page index (it holds no audio).
    """
    if self.is_pages:
      raise ValueError('a page index holds sheet snippets only: query it '
                       'with audio')
    return search(sheet_queries, self.audio_emb, k)


def search(queries, candidates: np.ndarray, k: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """Exact cosine top-k (``retrieval.top_k``) with few compiled shapes.

  Queries are zero-padded (``batching.pad_rows``) to a multiple of 256 rows
  so that a process answering many queries of varying counts compiles only a
  few shapes.

  Returns:
    ``(scores, rows)``: ``(Q, k')`` float32 descending and ``(Q, k')`` int64,
    ``k' = min(k, C)``.
  """
  q = np.asarray(queries, np.float32)
  if q.ndim != 2:
    raise ValueError(f'queries must be (Q, d), got {q.shape}')
  n = q.shape[0]
  padded = batching.round_up(n, _QUERY_BUCKET)
  q = batching.pad_rows(q, padded)
  k = min(int(k), candidates.shape[0])
  scores, rows = retrieval.top_k(q, candidates, k=k,
                                 query_chunk_size=min(padded, 4096))
  return scores[:n], rows[:n].astype(np.int64)


# --------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------


def build(model, data_dir: str, split: str = 'test',
          limit: Optional[int] = None, workdir: str = '',
          progress: Optional[Callable[[int, int, float], None]] = None,
          collection: str = sources.NOTTINGHAM) -> Index:
  """Embeds every sheet snippet and audio excerpt of a split.

  Streams the ``pairs`` config in chunks of ``READ_CHUNK`` (memory stays
  about 60 MB whatever the split size).

  Args:
    model: ``dccaflax.Model``.
    data_dir: the ``--data_dir`` of ``data_prep.prepare``.
    split: which split.
    limit: only the first N pairs (None: all).
    workdir: the model's workdir, recorded for messages.
    progress: called as ``progress(done, total, seconds)`` after each chunk.
    collection: whose pairs: a collection, optionally with an engraving
      (``sources.split_source``; 'nottingham:verovio_leland' indexes
      the Nottingham pairs with Verovio's Leland snippets).

  Returns:
    ``Index``.

  Raises:
    FileNotFoundError: no prepared data; ValueError: unknown split or an
    empty split.
  """
  data_dir = os.path.abspath(os.fspath(data_dir))
  collection = sources.source_name(*sources.split_source(collection))
  source = input_pipeline.data_source(
      data_dir, sources.config_name('pairs', collection), split)
  n = len(source) if limit is None else min(int(limit), len(source))
  if n == 0:
    raise ValueError(f'split {split!r} of {data_dir} holds no pairs')
  k = int(model.projection.corr.shape[0])
  sheet_emb = np.empty((n, k), np.float32)
  audio_emb = np.empty((n, k), np.float32)
  piece = np.empty((n,), object)
  notehead_x = np.empty((n,), np.float32)
  onset_frame = np.empty((n,), np.int32)
  bar = np.empty((n,), np.int32)
  t0 = time.time()
  for start in range(0, n, READ_CHUNK):
    stop = min(start + READ_CHUNK, n)
    exs = source.__getitems__(range(start, stop))
    sheet_emb[start:stop] = embedding.embed_sheet(
        model, np.stack([ex['sheet'] for ex in exs]))
    audio_emb[start:stop] = embedding.embed_audio(
        model, np.stack([ex['spec'] for ex in exs]))
    for i, ex in enumerate(exs, start):
      piece[i] = pieceset.text(ex['piece'])
      notehead_x[i] = ex['notehead_x']
      onset_frame[i] = ex['onset_frame']
      bar[i] = ex['bar']
    if progress is not None:
      progress(stop, n, time.time() - t0)
  return Index(sheet_emb=sheet_emb, audio_emb=audio_emb,
               piece=piece.astype(str), notehead_x=notehead_x,
               onset_frame=onset_frame, bar=bar, split=split,
               data_dir=data_dir, fingerprint=model_fingerprint(model),
               workdir=os.path.abspath(os.fspath(workdir)) if workdir else '',
               collection=collection)


def read_rows(index: Index, rows, data_dir: Optional[str] = None
              ) -> dict[str, np.ndarray]:
  """Re-reads indexed pairs from the prepared data (for figures).

  Args:
    index: the index.
    rows: ``(R,)`` row numbers.
    data_dir: where the data live now (default: ``index.data_dir``).

  Returns:
    dict: 'sheet' (R, 40, 100) uint8, 'spec' (R, 136, 100) float32.

  Raises:
    FileNotFoundError: the data are gone; IndexFileError: the data no longer
    match the index (a different preparation); ValueError: a page index
    (``page_index.read_rows`` re-cuts its snippets).
  """
  rows = [int(r) for r in np.asarray(rows).reshape(-1)]
  if index.is_pages:
    raise ValueError('a page index holds no pairs: its snippets are re-cut '
                     'from the pages by dccaflax.page_index.read_rows')
  source = input_pipeline.data_source(
      data_dir or index.data_dir,
      sources.config_name('pairs', index.collection), index.split)
  if len(source) < len(index):
    raise IndexFileError(f'{data_dir or index.data_dir} holds {len(source)} '
                         f'{index.split} pairs, the index {len(index)}: '
                         'the data changed since the index was built')
  exs = source.__getitems__(rows) if rows else []
  for r, ex in zip(rows, exs):
    if (pieceset.text(ex['piece']) != index.piece[r]
        or int(ex['onset_frame']) != int(index.onset_frame[r])):
      raise IndexFileError(
          f'row {r} of the data is {pieceset.text(ex["piece"])}@'
          f'{ex["onset_frame"]}, the index says {index.piece[r]}@'
          f'{index.onset_frame[r]}: the data changed since the index was '
          'built')
  return {
      'sheet': np.stack([ex['sheet'] for ex in exs]) if exs else np.zeros(
          (0, snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH), np.uint8),
      'spec': np.stack([ex['spec'] for ex in exs]) if exs else np.zeros(
          (0, snippets.SPEC_BINS, snippets.SPEC_FRAMES), np.float32)}


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def save(index: Index, path: str | os.PathLike) -> str:
  """Writes an index as ``.npz`` (atomically); returns the path."""
  path = os.fspath(path)
  if not path.endswith('.npz'):
    raise ValueError(f'index path must end in .npz, got {path}')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path[:-4] + f'.tmp{os.getpid()}.npz'
  names, piece_id = np.unique(np.asarray(index.piece, str),
                              return_inverse=True)
  np.savez(tmp, sheet_emb=index.sheet_emb, audio_emb=index.audio_emb,
           piece_names=names, piece_id=piece_id.astype(np.int32),
           notehead_x=index.notehead_x, onset_frame=index.onset_frame,
           bar=index.bar, split=np.array(index.split),
           data_dir=np.array(index.data_dir),
           fingerprint=np.array(index.fingerprint),
           workdir=np.array(index.workdir),
           collection=np.array(index.collection),
           version=np.array(FORMAT_VERSION),
           **({} if index.page_xy is None else {'page_xy': index.page_xy}))
  os.replace(tmp, path)
  return path


_ARRAYS = ('sheet_emb', 'audio_emb', 'piece_id', 'notehead_x', 'onset_frame',
           'bar')
_SCALARS = ('split', 'data_dir', 'fingerprint', 'workdir')


def load(path: str | os.PathLike) -> Index:
  """Reads an index written by ``save``.

  Raises:
    IndexFileError: missing, unreadable, or not an index of this version.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise IndexFileError(f'{path}: no such index file (build one with '
                         'python -m experiments.index)')
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = [k for k in _ARRAYS + _SCALARS + ('version', 'piece_names')
                 if k not in z]
      if missing:
        raise IndexFileError(f'{path}: not a dccaflax index (missing '
                             f'{", ".join(missing)})')
      version = int(z['version'])
      if version != FORMAT_VERSION:
        raise IndexFileError(f'{path}: index format {version}, this code '
                             f'reads {FORMAT_VERSION}; rebuild it')
      fields = {k: z[k] for k in _ARRAYS}
      fields.update({k: str(z[k]) for k in _SCALARS})
      names, piece_id = z['piece_names'], fields.pop('piece_id')
      if piece_id.size and (piece_id.min() < 0 or
                            piece_id.max() >= len(names)):
        raise IndexFileError(f'{path}: piece ids out of range')
      fields['piece'] = names[piece_id]
      if 'page_xy' in z:
        fields['page_xy'] = z['page_xy']
      if 'collection' in z:     # indexes written before it: Nottingham's
        fields['collection'] = str(z['collection'])
  except IndexFileError:
    raise
  except Exception as e:  # zip / npy errors come in many types
    raise IndexFileError(f'{path}: cannot read index ({type(e).__name__}: '
                         f'{e})') from e
  n = fields['piece'].shape[0]
  for k in _ARRAYS[:2] + _ARRAYS[3:]:
    if fields[k].shape[0] != n:
      raise IndexFileError(f'{path}: {k} has {fields[k].shape[0]} rows, '
                           f'piece {n}')
  return Index(**fields)
