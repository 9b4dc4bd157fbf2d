"""Cross-modal retrieval: rank metrics (R@k, MR, MRR) and exact top-k search.

Similarity is cosine similarity: both sides are L2-normalised inside (a zero
vector stays zero and scores 0 against everything).  Matmuls run in float32
with ``precision=HIGHEST``.

Evaluation follows the paper (Sec. 3.2): query ``i`` (e.g. an audio excerpt)
has its true partner at candidate ``i`` (the corresponding sheet snippet);
candidates are ordered by similarity; R@k is the percentage of queries whose
partner is among the first k; MR is the median (1-based) rank of the partner.

Tie rule (pessimistic, integer, deterministic): a candidate that ties with the
partner counts as ranked ahead of it::

  rank_i = 1 + #{j != i : not sim(q_i, c_j) < sim(q_i, c_i)}

so a model that maps everything to one point gets rank C, not 1; and a
similarity that is not a number (NaN embeddings, e.g. from a CCA fit whose
covariance was not positive definite) is never below the partner's, so a
NaN partner ranks last (C) and a NaN candidate ranks ahead, never the
reverse (``>=`` would have ranked every NaN partner first: R@1 100).
``partner_ranks`` applies it to many queries at once (JAX);
``ranking.rank_of_score`` is the same rule for one query's scores (NumPy).
"""

from __future__ import annotations

import functools
from typing import Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from dccaflax import batching

_HIGHEST = jax.lax.Precision.HIGHEST
_NORM_EPS = 1e-12


def _as_2d_float(x, name: str) -> np.ndarray:
  """Host float32 ``(n, d)`` array or a ValueError."""
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2:
    raise ValueError(f'{name} must be 2-D (n, d), got shape {x.shape}')
  return x


def _check_pair(query_emb, candidate_emb) -> Tuple[np.ndarray, np.ndarray]:
  """Validates shapes: ``(Q, d)`` and ``(C, d)`` with ``Q, C >= 1``."""
  q = _as_2d_float(query_emb, 'query_emb')
  c = _as_2d_float(candidate_emb, 'candidate_emb')
  if q.shape[1] != c.shape[1]:
    raise ValueError(f'embedding dims differ: query_emb {q.shape} vs '
                     f'candidate_emb {c.shape}')
  if q.shape[0] == 0 or c.shape[0] == 0:
    raise ValueError(f'empty input: query_emb {q.shape}, '
                     f'candidate_emb {c.shape}')
  return q, c


@jax.jit
def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows of ``(n, d)`` scaled to unit L2 norm (zero rows stay zero)."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, _NORM_EPS)


@jax.jit
def _count_ahead(q: jax.Array, c: jax.Array, partner: jax.Array) -> jax.Array:
  """Candidates at least as similar as the partner, partner excluded.

  Args:
    q: ``(B, d)`` unit-norm queries.
    c: ``(C, d)`` unit-norm candidates.
    partner: ``(B,)`` int32 index of each query's partner in ``c``.

  Returns:
    ``(B,)`` int32 ``#{j != partner : not sim_j < sim_partner}``.
  """
  return _ahead_of_partner(jnp.matmul(q, c.T, precision=_HIGHEST), partner)


def _ahead_of_partner(sims: jax.Array, partner: jax.Array) -> jax.Array:
  """``(B,)`` int32 ``#{j != partner : not sims_j < sims_partner}`` of
  ``(B, C)`` similarities (traced): ties and NaN count as ahead."""
  partner_sim = jnp.take_along_axis(sims, partner[:, None], axis=1)
  not_partner = jnp.arange(sims.shape[1])[None, :] != partner[:, None]
  ahead = ~(sims < partner_sim) & not_partner
  return jnp.sum(ahead, axis=1, dtype=jnp.int32)


def partner_ranks(query_emb, candidate_emb, chunk_size: int = 1024
                  ) -> np.ndarray:
  """1-based rank of each query's partner (candidate ``i`` for query ``i``).

  Chunked over queries; peak memory is about ``chunk_size * C * 4`` bytes.
  The last chunk is zero-padded so a single compiled shape serves all.

  Args:
    query_emb: ``(Q, d)`` query embeddings.
    candidate_emb: ``(C, d)`` candidate embeddings, ``Q <= C``.
    chunk_size: queries per matmul.

  Returns:
    ``(Q,)`` int64 ranks in ``[1, C]`` (ties count against the query).
  """
  q, c = _check_pair(query_emb, candidate_emb)
  n_q, n_c = q.shape[0], c.shape[0]
  if n_q > n_c:
    raise ValueError(f'more queries than candidates ({n_q} > {n_c}): query '
                     'i must have its partner at candidate i')
  if chunk_size < 1:
    raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
  qn = np.asarray(l2_normalize(q))
  cn = l2_normalize(c)
  bs = min(chunk_size, n_q)
  ranks = np.empty((n_q,), np.int64)
  for start in range(0, n_q, bs):
    stop = min(start + bs, n_q)
    q_chunk = batching.pad_rows(qn[start:stop], bs)
    partner = batching.pad_rows(np.arange(start, stop, dtype=np.int32), bs)
    ahead = np.asarray(_count_ahead(q_chunk, cn, partner))
    ranks[start:stop] = 1 + ahead[:stop - start]
  return ranks


@jax.jit
def _count_ahead_views(q: jax.Array, c: jax.Array,
                       partner: jax.Array) -> jax.Array:
  """``_count_ahead`` with several views per query and per candidate: the
  similarity of a (query, candidate) is the largest over their views.

  Args:
    q: ``(Kq, B, d)`` unit-norm views of the queries.
    c: ``(Kc, C, d)`` unit-norm views of the candidates.
    partner: ``(B,)`` int32.
  """
  sims = jnp.max(jnp.einsum('kbd,lcd->klbc', q, c, precision=_HIGHEST),
                 axis=(0, 1))                                    # (B, C)
  return _ahead_of_partner(sims, partner)


def partner_ranks_views(query_views, candidate_views, chunk_size: int = 512
                        ) -> np.ndarray:
  """``partner_ranks`` where queries and candidates have several views
  (e.g. a sheet snippet at several scales): a candidate's similarity to a
  query is the largest cosine similarity over all pairs of their views.

  Args:
    query_views: ``(Kq, Q, d)``; candidate_views: ``(Kc, C, d)``, ``Q <= C``.
    chunk_size: queries per step (memory ~ Kq * Kc * chunk_size * C * 4 B).

  Returns:
    ``(Q,)`` int64 ranks in ``[1, C]`` (ties count against the query).
  """
  qv = np.asarray(query_views, np.float32)
  cv = np.asarray(candidate_views, np.float32)
  if qv.ndim != 3 or cv.ndim != 3 or qv.shape[2] != cv.shape[2]:
    raise ValueError(f'views must be (K, n, d) with one d, got {qv.shape} '
                     f'and {cv.shape}')
  n_q, n_c = qv.shape[1], cv.shape[1]
  if not 0 < n_q <= n_c:
    raise ValueError(f'need 0 < queries <= candidates, got {n_q} and {n_c}')
  qn = np.stack([np.asarray(l2_normalize(v)) for v in qv])
  cn = jnp.stack([l2_normalize(v) for v in cv])
  bs = min(chunk_size, n_q)
  ranks = np.empty((n_q,), np.int64)
  for start in range(0, n_q, bs):
    stop = min(start + bs, n_q)
    q_chunk = np.stack([batching.pad_rows(v[start:stop], bs) for v in qn])
    partner = batching.pad_rows(np.arange(start, stop, dtype=np.int32), bs)
    ahead = np.asarray(_count_ahead_views(q_chunk, cn, partner))
    ranks[start:stop] = 1 + ahead[:stop - start]
  return ranks


def metrics_from_ranks(ranks, n_candidates: int,
                       ks: Sequence[int] = (1, 5, 10)) -> Dict[str, object]:
  """R@k (percent), MR, MRR from 1-based ranks.

  Args:
    ranks: ``(Q,)`` int 1-based partner ranks.
    n_candidates: C, reported as is.
    ks: cut-offs for R@k.

  Returns:
    dict with ``'R@k'`` for each k (float, percent 0-100), ``'MR'`` (float,
    ``np.median`` of the ranks; may end in .5), ``'MRR'`` (float, mean of
    1/rank), ``'n_queries'``, ``'n_candidates'`` (int) and ``'ranks'``
    (``(Q,)`` int64 ndarray).
  """
  ranks = np.asarray(ranks, dtype=np.int64)
  out: Dict[str, object] = {}
  for k in ks:
    if int(k) != k or k < 1:
      raise ValueError(f'ks must be positive integers, got {k!r}')
    out[f'R@{int(k)}'] = float(100.0 * np.mean(ranks <= k))
  out['MR'] = float(np.median(ranks))
  out['MRR'] = float(np.mean(1.0 / ranks))
  out['n_queries'] = int(ranks.shape[0])
  out['n_candidates'] = int(n_candidates)
  out['ranks'] = ranks
  return out


def rank_metrics(query_emb, candidate_emb, ks: Sequence[int] = (1, 5, 10),
                 chunk_size: int = 1024) -> Dict[str, object]:
  """Retrieval metrics of the paper (R@k, MR) plus MRR.

  Args:
    query_emb: ``(Q, d)`` query embeddings (any norm; cosine similarity).
    candidate_emb: ``(C, d)`` candidates; the partner of query ``i`` is
      candidate ``i``; ``Q <= C`` (extra candidates are distractors).
    ks: cut-offs for R@k.
    chunk_size: queries per similarity matmul (memory ~ chunk_size * C * 4 B).

  Returns:
    See ``metrics_from_ranks``; rank uses the pessimistic tie rule of the
    module docstring.

  Raises:
    ValueError: non-2-D inputs, differing d, empty inputs, Q > C, bad ks.
  """
  ranks = partner_ranks(query_emb, candidate_emb, chunk_size)
  return metrics_from_ranks(ranks, np.shape(candidate_emb)[0], ks)


METRIC_KEYS = ('R@1', 'R@5', 'R@10', 'MR', 'MRR')


def both_directions_views(sheet_views, audio_emb) -> Dict[str, object]:
  """``both_directions`` with several views of each sheet snippet
  (``(K, N, d)``, e.g. scales; ``audio_emb`` ``(N, d)``): the largest
  similarity over a snippet's views counts, as candidate (A->S) and as
  query (S->A)."""
  sheet_views = np.asarray(sheet_views, np.float32)
  audio = np.asarray(audio_emb, np.float32)[None]
  n = int(sheet_views.shape[1])
  out = {'n': n}
  for name, q, c in (('a2s', audio, sheet_views), ('s2a', sheet_views, audio)):
    m = metrics_from_ranks(partner_ranks_views(q, c), n)
    out[name] = {k: float(m[k]) for k in METRIC_KEYS}
  return out


def both_directions(sheet_emb, audio_emb) -> Dict[str, object]:
  """Audio->sheet and sheet->audio metrics of row-aligned embeddings.

  Args:
    sheet_emb, audio_emb: ``(N, d)``; row ``i`` of each is pair ``i``, and
      all N rows are the candidates.

  Returns:
    ``{'a2s': {...}, 's2a': {...}, 'n': N}``, each direction a dict of
    ``METRIC_KEYS`` (floats, ``rank_metrics``).
  """
  out = {'n': int(np.shape(sheet_emb)[0])}
  for name, q, c in (('a2s', audio_emb, sheet_emb),
                     ('s2a', sheet_emb, audio_emb)):
    m = rank_metrics(q, c)
    out[name] = {k: float(m[k]) for k in METRIC_KEYS}
  return out


@functools.partial(jax.jit, static_argnames=('k',))
def _top_k_step(q: jax.Array, c_chunk: jax.Array, offset: jax.Array,
                n_valid: jax.Array, best_s: jax.Array, best_i: jax.Array,
                k: int) -> Tuple[jax.Array, jax.Array]:
  """Merges one candidate chunk into the running top-k.

  Args:
    q: ``(B, d)`` unit-norm queries.
    c_chunk: ``(S, d)`` unit-norm candidates (rows >= n_valid are padding).
    offset: scalar int32 global index of ``c_chunk[0]``.
    n_valid: scalar int32 number of real rows in ``c_chunk``.
    best_s: ``(B, k)`` float32 running scores, descending (-inf = empty).
    best_i: ``(B, k)`` int32 running global indices (-1 = empty).
    k: number of results.

  Returns:
    Updated ``(best_s, best_i)``.  Ties keep the lower candidate index.
  """
  sims = jnp.matmul(q, c_chunk.T, precision=_HIGHEST)         # (B, S)
  valid = jnp.arange(c_chunk.shape[0]) < n_valid
  sims = jnp.where(valid[None, :], sims, -jnp.inf)
  chunk_s, chunk_i = jax.lax.top_k(sims, min(k, c_chunk.shape[0]))
  chunk_i = chunk_i.astype(jnp.int32) + offset
  # Running results first: lax.top_k puts the lower position first on ties,
  # and every running index is lower than every index of this chunk.
  all_s = jnp.concatenate([best_s, chunk_s], axis=1)
  all_i = jnp.concatenate([best_i, chunk_i], axis=1)
  new_s, pos = jax.lax.top_k(all_s, k)
  return new_s, jnp.take_along_axis(all_i, pos, axis=1)


def top_k(query_emb, candidate_emb, k: int = 10, chunk_size: int = 8192,
          query_chunk_size: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
  """Exact cosine-similarity top-k of every query over all candidates.

  Streams the candidates in chunks of ``chunk_size`` (the last one padded and
  masked to -inf, so one compiled shape serves all chunks) and keeps a running
  top-k per query; queries are processed in blocks of ``query_chunk_size``.
  Peak memory is about ``query_chunk_size * chunk_size * 4`` bytes plus the
  candidates (e.g. 1,000,000 x 32 float32 = 128 MB), independent of C.

  Args:
    query_emb: ``(Q, d)`` queries.
    candidate_emb: ``(C, d)`` candidates, ``k <= C``.
    k: results per query.
    chunk_size: candidates per matmul.
    query_chunk_size: queries per matmul.

  Returns:
    ``(scores, indices)``: ``(Q, k)`` float32 cosine similarities in
    descending order and ``(Q, k)`` int32 candidate indices.  Equal scores
    are ordered by ascending candidate index.
  """
  q, c = _check_pair(query_emb, candidate_emb)
  n_q, n_c = q.shape[0], c.shape[0]
  if not 1 <= k <= n_c:
    raise ValueError(f'k must be in [1, C={n_c}], got {k}')
  if chunk_size < 1 or query_chunk_size < 1:
    raise ValueError('chunk sizes must be >= 1, got '
                     f'{chunk_size}, {query_chunk_size}')
  qn = np.asarray(l2_normalize(q))
  cn = np.asarray(l2_normalize(c))
  cs = min(chunk_size, n_c)
  qs = min(query_chunk_size, n_q)
  c_chunks = [(start, batching.pad_rows(cn[start:start + cs], cs))
              for start in range(0, n_c, cs)]
  c_chunks = [(start, jnp.asarray(chunk)) for start, chunk in c_chunks]
  scores = np.empty((n_q, k), np.float32)
  indices = np.empty((n_q, k), np.int32)
  for q_start in range(0, n_q, qs):
    q_stop = min(q_start + qs, n_q)
    q_block = jnp.asarray(batching.pad_rows(qn[q_start:q_stop], qs))
    best_s = jnp.full((qs, k), -jnp.inf, jnp.float32)
    best_i = jnp.full((qs, k), -1, jnp.int32)
    for start, chunk in c_chunks:
      n_valid = min(cs, n_c - start)
      best_s, best_i = _top_k_step(q_block, chunk, np.int32(start),
                                   np.int32(n_valid), best_s, best_i, k=k)
    scores[q_start:q_stop] = np.asarray(best_s)[:q_stop - q_start]
    indices[q_start:q_stop] = np.asarray(best_i)[:q_stop - q_start]
  return scores, indices
