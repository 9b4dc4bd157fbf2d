"""Ranking an index for one query: the top results and the truth's rank.

A query embedding (from ``api.embed_audio`` or ``api.embed_sheet``, or an
indexed row's own) is ranked against the other modality of an
``index.Index`` by exact cosine top-k (``Index.search_sheets`` /
``search_audio``).  When the correct answer is known (an indexed pair, or a
recording of an indexed piece), its rank among all candidates follows the
tie rule of ``retrieval.partner_ranks`` (``rank_of_score``).

NumPy only (no JAX at import): ``identify``, imported by the rendering
workers of ``data_prep.heldout``, ranks its pieces with
``rank_of_score`` too.

Index rows are addressed the way a user names them: a piece and the 0-based
number of a notehead (onset) in it (``indexed_row``), or a piece and a time
at the indexed tempo (``row_at_time``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

DIRECTIONS = ('audio->sheet', 'sheet->audio')


class RowError(ValueError):
  """A piece or notehead the index does not hold; the message says which."""


@dataclasses.dataclass(frozen=True)
class Result:
  """One ranked candidate of the index."""
  rank: int          # 1-based
  row: int           # index row
  score: float       # cosine similarity
  piece: str
  bar: int
  onset: int         # 0-based onset (note) number within the piece
  time_s: float      # onset time at the indexed tempo


@dataclasses.dataclass(frozen=True)
class Ranking:
  """Top-k results of a query and, when known, where the truth landed."""
  direction: str                 # 'audio->sheet' or 'sheet->audio'
  results: tuple[Result, ...]
  n_candidates: int
  true_row: Optional[int] = None
  true_rank: Optional[int] = None


def rank_of_score(scores, score) -> int:
  """1-based rank of ``score`` among ``scores``; ties count against it.

  The tie rule of ``retrieval.partner_ranks`` for a single query: every
  entry not below ``score`` is ranked ahead of it (ties and NaN), so with
  ``score = scores[i]`` the rank is ``1 + #{j != i : not scores[j] < score}``,
  and a NaN ``score`` ranks last.

  Args:
    scores: ``(C,)`` scores of all candidates, the scored one included.
    score: the score to rank.

  Returns:
    int in ``[1, C]`` when ``score`` is one of ``scores``.
  """
  return int(np.sum(~(np.asarray(scores) < score)))


def onset_number(index, row: int) -> int:
  """0-based number of an index row's onset within its piece."""
  rows = index.rows_of(str(index.piece[row]))
  return int(np.searchsorted(rows, row))


def rank(index, query_emb: np.ndarray, direction: str, k: int = 10,
         true_row: Optional[int] = None) -> Ranking:
  """Ranks the index's other modality for one query embedding.

  Args:
    index: ``dccaflax.index.Index``.
    query_emb: ``(d,)`` or ``(1, d)`` unit-norm embedding.
    direction: 'audio->sheet' (an ``embed_audio`` query against the sheet
      embeddings) or 'sheet->audio'.
    k: results.
    true_row: the row of the correct answer, if known.

  Returns:
    ``Ranking``.

  Raises:
    ValueError: an unknown direction or ``k < 1``.
  """
  if direction not in DIRECTIONS:
    raise ValueError(f'unknown direction {direction!r}')
  if k < 1:
    raise ValueError(f'k must be >= 1, got {k}')
  q = np.asarray(query_emb, np.float32).reshape(1, -1)
  a2s = direction == 'audio->sheet'
  cands = index.sheet_emb if a2s else index.audio_emb
  search = index.search_sheets if a2s else index.search_audio
  scores, rows = search(q, k)
  results = []
  for r, (s, row) in enumerate(zip(scores[0], rows[0]), 1):
    row = int(row)
    results.append(Result(rank=r, row=row, score=float(s),
                          piece=str(index.piece[row]),
                          bar=int(index.bar[row]),
                          onset=onset_number(index, row),
                          time_s=float(index.time_s(row))))
  t_rank = None
  if true_row is not None:
    sims = cands @ q[0]
    t_rank = rank_of_score(sims, sims[int(true_row)])
  return Ranking(direction=direction, results=tuple(results),
                 n_candidates=len(index), true_row=true_row, true_rank=t_rank)


def _rows_of(index, piece: str) -> np.ndarray:
  """``index.rows_of`` with a ``RowError`` for an unknown piece."""
  try:
    return index.rows_of(piece)
  except KeyError as e:
    raise RowError(e.args[0]) from e


def indexed_row(index, piece: str, notehead: int) -> int:
  """The row of the ``notehead``-th (0-based) onset of ``piece``.

  Raises:
    RowError: unknown piece (with close names) or notehead out of range.
  """
  rows = _rows_of(index, piece)
  if not 0 <= notehead < len(rows):
    raise RowError(
        f'piece {piece!r} has {len(rows)} noteheads (onsets); notehead must '
        f'be in [0, {len(rows) - 1}], got {notehead}')
  return int(rows[notehead])


def row_at_time(index, piece: str, time_s: float) -> int:
  """The row of the onset of ``piece`` nearest to ``time_s`` (indexed tempo).

  Raises:
    RowError: unknown piece.
  """
  rows = _rows_of(index, piece)
  return int(rows[np.argmin(np.abs(index.time_s(rows) - time_s))])
