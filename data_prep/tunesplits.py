"""Near-duplicate melodies across collections, and splits that keep them apart.

The same tune often appears in several books under other titles, in another
key, with other ornaments.  If one copy were in a training split and another
in a test split, the test would measure memory, not retrieval.  So splits
are made by *melody group*, not by tune:

1. ``fingerprint``: a melody's pitch intervals (repeated notes merged, so
   key, octave, rhythm and added repeated notes do not matter), as the set
   of its ``N_GRAM``-interval n-grams.
2. ``near_duplicates``: pairs of melodies whose n-gram sets overlap by at
   least ``THRESHOLD`` of the smaller set (containment: a tune is a
   near-duplicate of a longer variant that contains it).  Candidates come
   from an inverted index; n-grams found in more than ``COMMON_DF`` melodies
   (scales, arpeggios) are not used to propose candidates.
3. ``groups``: connected components of those pairs.
4. ``assign``: a group with Nottingham members takes their split
   (Nottingham's split is the paper's and never changes; the majority when
   its members disagree); any other group goes to train, valid or test by a
   hash of its first member's name: ``SPLIT_FRACTIONS``.

Every decision is deterministic: the same files give the same splits.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Iterable, Mapping, Sequence

import numpy as np

N_GRAM = 6
THRESHOLD = 0.5
COMMON_DF = 40
SPLITS = ('train', 'valid', 'test')
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)  # about Nottingham's 694/173/170
FIXED = 'nottingham'


def fingerprint(pitches: Sequence[int], n: int = N_GRAM) -> frozenset:
  """A melody's n-grams of pitch intervals, repeated notes merged.

  Args:
    pitches: MIDI pitches in note order.
    n: intervals per n-gram.

  Returns:
    A frozenset of ``n``-tuples of semitone steps (empty for a melody of
    fewer than ``n + 1`` distinct consecutive pitches).
  """
  p = np.asarray(pitches, np.int64)
  if p.size:
    p = p[np.r_[True, p[1:] != p[:-1]]]
  steps = np.diff(p).tolist()
  return frozenset(tuple(steps[i:i + n]) for i in range(len(steps) - n + 1))


def similarity(a: frozenset, b: frozenset) -> float:
  """Containment: shared n-grams / n-grams of the smaller melody (0 if
  either has none)."""
  if not a or not b:
    return 0.0
  return len(a & b) / min(len(a), len(b))


def near_duplicates(prints: Mapping[str, frozenset],
                    threshold: float = THRESHOLD,
                    common_df: int = COMMON_DF
                    ) -> list[tuple[str, str, float]]:
  """Pairs of near-duplicate melodies.

  Args:
    prints: name -> ``fingerprint``.
    threshold: least ``similarity`` of a pair.
    common_df: n-grams in more melodies than this propose no candidates
      (they still count in the similarity).

  Returns:
    ``(name_a, name_b, similarity)`` with ``name_a < name_b``, sorted.
  """
  index: dict[tuple, list[str]] = collections.defaultdict(list)
  for name, fp in prints.items():
    for g in fp:
      index[g].append(name)
  shared: dict[tuple[str, str], int] = collections.Counter()
  for names in index.values():
    if len(names) > common_df:
      continue
    names = sorted(names)
    for i, a in enumerate(names):
      for b in names[i + 1:]:
        shared[(a, b)] += 1
  out = []
  for (a, b), n in shared.items():
    if n < 2 and min(len(prints[a]), len(prints[b])) > 2:
      continue  # one rare n-gram in common is chance
    s = similarity(prints[a], prints[b])
    if s >= threshold:
      out.append((a, b, s))
  return sorted(out)


def groups(names: Iterable[str], pairs: Iterable[tuple[str, str, float]]
           ) -> list[list[str]]:
  """Connected components of the near-duplicate pairs, each sorted, in the
  order of their first member; a melody without pairs is its own group."""
  parent = {n: n for n in names}

  def find(x):
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  for a, b, _ in pairs:
    ra, rb = find(a), find(b)
    if ra != rb:
      parent[max(ra, rb)] = min(ra, rb)
  out: dict[str, list[str]] = collections.defaultdict(list)
  for n in sorted(parent):
    out[find(n)].append(n)
  return sorted(out.values(), key=lambda g: g[0])


def hashed_split(key: str, fractions=SPLIT_FRACTIONS) -> str:
  """train/valid/test from a SHA-256 of ``key`` (uniform in [0, 1))."""
  u = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16 ** 12
  edges = np.cumsum(fractions)
  return SPLITS[int(np.searchsorted(edges, u, side='right'))]


def assign(melody_groups: Sequence[Sequence[str]],
           fixed: Mapping[str, str]) -> tuple[dict[str, str], list[dict]]:
  """The split of every melody.

  Args:
    melody_groups: from ``groups``.
    fixed: name -> split of the melodies whose split is given (Nottingham).

  Returns:
    ``(split, conflicts)``: name -> split for every member of every group;
    and one row per group whose fixed members disagree (Nottingham's own
    split has a few such melodies): its members and the split chosen.
  """
  split, conflicts = {}, []
  for g in melody_groups:
    given = [fixed[n] for n in g if n in fixed]
    if given:
      counts = collections.Counter(given)
      # the majority; ties go to the earlier split in SPLITS order
      s = max(SPLITS, key=lambda x: (counts[x], -SPLITS.index(x)))
      if len(counts) > 1:
        conflicts.append({'members': list(g), 'fixed': {
            n: fixed[n] for n in g if n in fixed}, 'chosen': s})
    else:
      s = hashed_split(g[0])
    for n in g:
      split[n] = s
  return split, conflicts


def crossing_pairs(pairs: Iterable[tuple[str, str, float]],
                   split: Mapping[str, str]) -> list[tuple[str, str, float]]:
  """The near-duplicate pairs whose members are in different splits."""
  return [(a, b, s) for a, b, s in pairs if split[a] != split[b]]
