"""Tests for dccaflax.retrieval: ranks, tie rule, metrics, exact top-k."""

import numpy as np
import pytest

from dccaflax import ranking
from dccaflax import retrieval


def _unit_angles(degrees):
  """2-D unit vectors at the given angles, ``(n, 2)`` float32."""
  rad = np.deg2rad(np.asarray(degrees, np.float64))
  return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_hand_computed_ranks():
  # Candidates on the unit circle at 0, 30, 60, 90, 180 degrees.
  cands = _unit_angles([0, 30, 60, 90, 180])
  # Query 0 at 0 deg: partner (0 deg) is the nearest          -> rank 1.
  # Query 1 at 5 deg: nearest are 0 deg (5), then 30 (25)     -> rank 2.
  # Query 2 at -50 deg: 0 (50), 30 (80), then 60 (110)       -> rank 3.
  # Query 3 at 0 deg: 0, 30, 60 come before 90                 -> rank 4.
  queries = _unit_angles([0, 5, -50, 0])
  m = retrieval.rank_metrics(queries, cands, ks=(1, 2, 4))
  np.testing.assert_array_equal(m['ranks'], [1, 2, 3, 4])
  assert m['ranks'].dtype.kind == 'i'
  assert m['R@1'] == pytest.approx(25.0)
  assert m['R@2'] == pytest.approx(50.0)
  assert m['R@4'] == pytest.approx(100.0)
  assert m['MR'] == pytest.approx(2.5)            # median of 1, 2, 3, 4
  assert m['MRR'] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
  assert m['n_queries'] == 4 and m['n_candidates'] == 5


def test_scale_invariance():
  # Cosine similarity: the norms of the embeddings do not matter.
  cands = _unit_angles([0, 30, 60, 90, 180]) * np.array(
      [[1.0], [3.0], [0.5], [7.0], [2.0]], np.float32)
  queries = _unit_angles([0, 5, -50, 0]) * 10.0
  m = retrieval.rank_metrics(queries, cands)
  np.testing.assert_array_equal(m['ranks'], [1, 2, 3, 4])


def test_tie_rule_counts_against_query():
  # Integer vectors: every similarity is exact.
  cands = np.array([[1, 0],     # partner of query 0
                    [1, 0],     # duplicate of candidate 0: ties with it
                    [0, 1],     # partner of query 2 (same as candidate 3)
                    [0, 1],
                    [1, 1]], np.float32)
  queries = np.array([[1, 0],   # ties with candidate 1          -> rank 2
                      [1, 0],   # partner 1 ties with candidate 0 -> rank 2
                      [0, 1],   # ties with candidate 3          -> rank 2
                      # partner [0, 1] at cos 1/sqrt(2) ties with candidates
                      # 0, 1, 2; candidate 4 (cos 1) is strictly better
                      [1, 1],   #                       -> rank 1 + 4 = 5
                      [1, 1]],  # strictly best                  -> rank 1
                     np.float32)
  m = retrieval.rank_metrics(queries, cands, ks=(1, 2))
  np.testing.assert_array_equal(m['ranks'], [2, 2, 2, 5, 1])
  # The same rule for one query's scores (ranking, identify).
  sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
      cands / np.linalg.norm(cands, axis=1, keepdims=True)).T
  assert [ranking.rank_of_score(sims[i], sims[i, i])
          for i in range(len(queries))] == [2, 2, 2, 5, 1]
  assert m['R@1'] == pytest.approx(20.0)
  assert m['R@2'] == pytest.approx(80.0)
  assert m['MR'] == pytest.approx(2.0)
  # All-identical embeddings: every candidate ties -> rank C for everyone.
  same = np.ones((3, 4), np.float32)
  np.testing.assert_array_equal(
      retrieval.rank_metrics(same, np.ones((6, 4), np.float32))['ranks'],
      [6, 6, 6])
  # Zero vectors have similarity 0 everywhere: all tie too.
  zeros = np.zeros((2, 3), np.float32)
  np.testing.assert_array_equal(
      retrieval.rank_metrics(zeros, zeros)['ranks'], [2, 2])


def test_nan_embeddings_rank_last_never_first():
  # A NaN similarity is never below the partner's: a NaN query or partner
  # ranks last, a NaN candidate ranks ahead (with ``>=`` every NaN query
  # ranked its partner first: R@1 100 from a CCA fit that had failed).
  cands = _unit_angles([0, 30, 60, 90, 180])
  queries = _unit_angles([0, 30, 60, 90])
  queries[1] = np.nan                          # a NaN query
  cands[3] = np.nan                            # a NaN candidate
  m = retrieval.rank_metrics(queries, cands, ks=(1,))
  # query 0: its partner is best, only the NaN candidate counts ahead -> 2;
  # query 1 (NaN): all 4 others ahead -> 5; query 2 likewise 2; query 3's
  # partner is the NaN candidate -> 5.
  np.testing.assert_array_equal(m['ranks'], [2, 5, 2, 5])
  views = retrieval.partner_ranks_views(queries[None], cands[None])
  np.testing.assert_array_equal(views, [2, 5, 2, 5])
  everything = np.full((3, 4), np.nan, np.float32)
  both = retrieval.both_directions(everything, everything)
  for direction in ('a2s', 's2a'):
    assert both[direction]['R@1'] == 0 and both[direction]['MR'] == 3
  sims = np.array([0.9, np.nan, 0.5], np.float32)
  assert ranking.rank_of_score(sims, sims[0]) == 2
  assert ranking.rank_of_score(sims, sims[1]) == 3


def test_metrics_from_ranks_arithmetic():
  ranks = np.array([1, 1, 3, 6, 12, 2])
  m = retrieval.metrics_from_ranks(ranks, n_candidates=100)
  assert m['R@1'] == pytest.approx(100 * 2 / 6)
  assert m['R@5'] == pytest.approx(100 * 4 / 6)
  assert m['R@10'] == pytest.approx(100 * 5 / 6)
  assert m['MR'] == pytest.approx(2.5)            # np.median of even count
  assert isinstance(m['MR'], float)
  assert m['MRR'] == pytest.approx(np.mean(1 / ranks))
  assert m['n_queries'] == 6 and m['n_candidates'] == 100


def _random_pairs(n_q, n_c, d, seed):
  rng = np.random.default_rng(seed)
  c = rng.normal(size=(n_c, d)).astype(np.float32)
  q = (c[:n_q] + 1.5 * rng.normal(size=(n_q, d))).astype(np.float32)
  return q, c


def _reference_ranks(q, c):
  """Float64 NumPy ranks with the same tie rule."""
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  cn = c / np.linalg.norm(c, axis=1, keepdims=True)
  sims = qn.astype(np.float64) @ cn.astype(np.float64).T
  idx = np.arange(q.shape[0])
  partner = sims[idx, idx][:, None]
  ahead = (sims >= partner).sum(axis=1) - 1
  return 1 + ahead


def test_chunked_equals_unchunked():
  q, c = _random_pairs(37, 53, 8, seed=0)
  full = retrieval.rank_metrics(q, c, chunk_size=1024)
  np.testing.assert_array_equal(full['ranks'], _reference_ranks(q, c))
  assert full['ranks'].max() > 1           # a non-trivial case
  for chunk in (1, 5, 10, 36, 37):
    m = retrieval.rank_metrics(q, c, chunk_size=chunk)
    np.testing.assert_array_equal(m['ranks'], full['ranks'])
    for key in ('R@1', 'R@5', 'R@10', 'MR', 'MRR'):
      assert m[key] == full[key]


def test_top_k_matches_numpy_argsort():
  rng = np.random.default_rng(1)
  q = rng.normal(size=(23, 16)).astype(np.float32)
  c = rng.normal(size=(101, 16)).astype(np.float32)
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  cn = c / np.linalg.norm(c, axis=1, keepdims=True)
  sims = qn.astype(np.float64) @ cn.astype(np.float64).T
  want_i = np.argsort(-sims, axis=1, kind='stable')[:, :7]
  want_s = np.take_along_axis(sims, want_i, axis=1)
  for chunk, q_chunk in ((1000, 1000), (7, 5), (10, 23), (3, 1), (101, 22)):
    scores, idx = retrieval.top_k(q, c, k=7, chunk_size=chunk,
                                  query_chunk_size=q_chunk)
    assert scores.shape == (23, 7) and idx.shape == (23, 7)
    assert scores.dtype == np.float32 and idx.dtype == np.int32
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)


def test_top_k_ties_and_small_chunks():
  # Candidates 1 and 3 duplicate candidate 0: ties in ascending index order,
  # also across chunk boundaries; k larger than the chunk size.
  c = np.array([[1, 0], [1, 0], [0, 1], [1, 0], [1, 1]], np.float32)
  scores, idx = retrieval.top_k(np.array([[1, 0]], np.float32), c, k=5,
                                chunk_size=2)
  np.testing.assert_array_equal(idx, [[0, 1, 3, 4, 2]])
  np.testing.assert_allclose(scores, [[1, 1, 1, 2 ** -0.5, 0]], atol=1e-6)


def test_top_k_agrees_with_ranks():
  q, c = _random_pairs(30, 45, 4, seed=2)
  ranks = retrieval.rank_metrics(q, c)['ranks']
  _, idx = retrieval.top_k(q, c, k=10, chunk_size=8)
  hit = idx == np.arange(30)[:, None]
  assert np.array_equal(hit.any(axis=1), ranks <= 10)
  found = hit.any(axis=1)
  np.testing.assert_array_equal(hit.argmax(axis=1)[found] + 1, ranks[found])


@pytest.mark.parametrize('q_shape,c_shape,match', [
    ((3, 4), (5, 3), 'dims differ'),
    ((6, 4), (5, 4), 'more queries than candidates'),
    ((3,), (5, 4), '2-D'),
    ((0, 4), (5, 4), 'empty'),
])
def test_rank_metrics_errors(q_shape, c_shape, match):
  with pytest.raises(ValueError, match=match):
    retrieval.rank_metrics(np.ones(q_shape), np.ones(c_shape))


def test_other_errors():
  q, c = np.ones((2, 4)), np.ones((5, 4))
  with pytest.raises(ValueError, match='dims differ'):
    retrieval.top_k(q, np.ones((5, 3)))
  with pytest.raises(ValueError, match='k must be'):
    retrieval.top_k(q, c, k=6)
  with pytest.raises(ValueError, match='chunk_size'):
    retrieval.rank_metrics(q, c, chunk_size=0)
  with pytest.raises(ValueError, match='ks'):
    retrieval.rank_metrics(q, c, ks=(0,))
