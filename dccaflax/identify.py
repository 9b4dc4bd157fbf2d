"""Piece identification: which indexed score does a recording play (and
which indexed piece does a page of score show, ``identify_page``)?

The recording's spectrogram is cut into 100-frame (3.2 s) windows every
``HOP_FRAMES`` = 31 frames (0.99 s); each window retrieves its top-k sheet
snippets (exact cosine top-k over the index) and every hit votes for its
piece with weight 1 / rank.  A piece's score is its votes divided by the
number of voting windows, so it lies in [0, H_k] (H_k = 1 + 1/2 + ... + 1/k)
whatever the recording's length.  The best-matching score position over time
is, per window, the bar of the best-ranked hit of the winning piece.

Windows: centres at frames 50, 81, 112, ... while a whole window fits; a
recording shorter than one window (3.2 s) gives one window centred on it and
padded with silence (as training pads at piece edges).  Windows whose
loudest bin is below ``QUIET`` x the recording's loudest bin (log
spectrogram; about -40 dB for the Nottingham renderings) do not vote: silent
gaps would otherwise vote at random.

Evaluation on fresh renderings of MIDI files (a soundfont and tempo the model
did not train on) needs the synthesizer, so it lives with the rendering code:
``data_prep.heldout``; its rendering workers import this module, which
therefore loads JAX (through ``embedding``) only when it embeds.  The text report
is ``presentation.format_identification``; the command
``experiments.identify``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional

import numpy as np

from dccaflax import ranking
from dccaflax import snippets

HOP_FRAMES = 31        # window hop, frames (0.99 s)
TOP_K = 10             # sheet snippets retrieved per window
QUIET = 0.1            # windows below this fraction of the peak do not vote
_EMBED_BLOCK = 1024    # windows per embedding call when streaming


def window_centres(n_frames: int, hop: int = HOP_FRAMES) -> np.ndarray:
  """``(W,)`` int64 centre frames of the sliding windows (see module doc)."""
  if n_frames <= 0:
    raise ValueError('empty spectrogram')
  if hop < 1:
    raise ValueError(f'hop must be >= 1 frame, got {hop}')
  half = snippets.SPEC_FRAMES // 2
  if n_frames <= snippets.SPEC_FRAMES:
    return np.array([n_frames // 2], np.int64)
  return np.arange(half, n_frames - snippets.SPEC_FRAMES + half + 1, hop,
                   dtype=np.int64)


def windows(spec: np.ndarray, hop: int = HOP_FRAMES
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Sliding excerpts of a spectrogram.

  Args:
    spec: ``(136, T)`` float32 log spectrogram.
    hop: frames between window centres.

  Returns:
    ``(centres, excerpts, voting)``: ``(W,)`` int64 centre frames,
    ``(W, 136, 100)`` float32 excerpts, ``(W,)`` bool (loud enough to vote).
  """
  centres = window_centres(spec.shape[1], hop)
  excerpts = np.stack([snippets.spec_excerpt(spec, c) for c in centres])
  peak = float(spec.max()) if spec.size else 0.0
  voting = excerpts.max(axis=(1, 2)) >= QUIET * peak
  if peak <= 0:
    voting[:] = False
  return centres, excerpts, voting


@dataclasses.dataclass(frozen=True)
class Identification:
  """Result for one recording.

  Attributes:
    ranking: ``[(piece, score), ...]`` best first; every indexed piece, score
      0 for those that got no vote (ties keep index order).
    centre_s: ``(W,)`` window centre times (s) in the recording.
    voting: ``(W,)`` bool, windows that voted.
    best_bar: ``(W,)`` int, bar of the winning piece's best-ranked hit in each
      window, -1 where it had none in the top k.
    best_rank: ``(W,)`` int, that hit's rank (1-based), 0 where none.
    best_time_s: ``(W,)`` float, that hit's onset time in the score at the
      indexed tempo (s), NaN where none.
    best_row: ``(W,)`` int, that hit's index row, -1 where none (a page
      index's ``page_xy[row]`` is its place on the page).
  """
  ranking: list[tuple[str, float]]
  centre_s: np.ndarray
  voting: np.ndarray
  best_bar: np.ndarray
  best_rank: np.ndarray
  best_time_s: np.ndarray
  best_row: np.ndarray

  def rank_of(self, piece: str) -> int:
    """1-based rank of a piece; ties count against it (pessimistic)."""
    scores = dict(self.ranking)
    if piece not in scores:
      raise KeyError(f'unknown piece {piece!r}')
    return ranking.rank_of_score(list(scores.values()), scores[piece])


def _piece_ids(index) -> tuple[list[str], np.ndarray]:
  names = index.pieces
  lookup = {n: i for i, n in enumerate(names)}
  return names, np.array([lookup[p] for p in index.piece], np.int64)


def vote(index, rows: np.ndarray, voting: np.ndarray, centres: np.ndarray,
         piece_names=None, piece_id=None) -> Identification:
  """Turns per-window top-k rows into an ``Identification``.

  Args:
    index: the index.
    rows: ``(W, k)`` index rows, best first.
    voting: ``(W,)`` bool.
    centres: ``(W,)`` centre frames.
    piece_names, piece_id: ``_piece_ids(index)`` (computed if None).
  """
  if piece_names is None:
    piece_names, piece_id = _piece_ids(index)
  k = rows.shape[1]
  weights = 1.0 / np.arange(1, k + 1)
  votes = np.zeros(len(piece_names))
  hit_piece = piece_id[rows]                               # (W, k)
  for w in np.flatnonzero(voting):
    np.add.at(votes, hit_piece[w], weights)
  n_voting = int(voting.sum())
  scores = votes / max(n_voting, 1)
  order = sorted(range(len(piece_names)), key=lambda i: -scores[i])
  ranking = [(piece_names[i], float(scores[i])) for i in order]
  best = order[0]
  n = rows.shape[0]
  best_bar = np.full(n, -1, np.int64)
  best_rank = np.zeros(n, np.int64)
  best_time = np.full(n, np.nan)
  best_row = np.full(n, -1, np.int64)
  for w in range(n):
    hits = np.flatnonzero(hit_piece[w] == best)
    if hits.size:
      row = rows[w, hits[0]]
      best_row[w] = row
      best_bar[w] = index.bar[row]
      best_rank[w] = hits[0] + 1
      best_time[w] = index.onset_frame[row] / snippets.FPS
  return Identification(ranking=ranking, centre_s=centres / snippets.FPS,
                        voting=voting, best_bar=best_bar, best_rank=best_rank,
                        best_time_s=best_time, best_row=best_row)


def identify_specs(model, index, specs: Iterable[np.ndarray],
                   k: int = TOP_K, hop: int = HOP_FRAMES,
                   progress: Optional[Callable[[int], None]] = None
                   ) -> list[Identification]:
  """Identifies many recordings, batching the embedding across them.

  Args:
    model: ``dccaflax.Model`` (the index's).
    index: ``dccaflax.index.Index``.
    specs: ``(136, T_i)`` log spectrograms (an iterable; consumed lazily, so
      recordings may be produced while earlier ones are embedded).
    k: sheet snippets per window.
    hop: frames between windows.
    progress: called with the number of recordings done so far.

  Returns:
    one ``Identification`` per spectrogram, in order.
  """
  # Not at the top: rendering workers import this module (module doc).
  from dccaflax import embedding  # pylint: disable=g-import-not-at-top
  names, pid = _piece_ids(index)
  k = min(k, len(index))
  out: list[Optional[Identification]] = []
  pending = []        # (slot, centres, voting, excerpts)

  def flush():
    if not pending:
      return
    emb = embedding.embed_audio(model, np.concatenate([p[3] for p in pending]))
    _, rows = index.search_sheets(emb, k)
    start = 0
    for slot, centres, voting, ex in pending:
      n = ex.shape[0]
      out[slot] = vote(index, rows[start:start + n], voting, centres, names,
                       pid)
      start += n
    pending.clear()
    if progress is not None:
      progress(sum(o is not None for o in out))

  for spec in specs:
    centres, excerpts, voting = windows(spec, hop)
    out.append(None)
    pending.append((len(out) - 1, centres, voting, excerpts))
    if sum(p[3].shape[0] for p in pending) >= _EMBED_BLOCK:
      flush()
  flush()
  return out  # type: ignore[return-value]


def identify(model, index, spec: np.ndarray, k: int = TOP_K,
             hop: int = HOP_FRAMES) -> Identification:
  """Identifies one recording's ``(136, T)`` spectrogram."""
  return identify_specs(model, index, [spec], k, hop)[0]


@dataclasses.dataclass(frozen=True)
class PageIdentification:
  """Result for one page of score (``frontends.page_snippets``).

  Every snippet of the page retrieves its top-k audio excerpts and votes as
  a recording's windows do (``vote``).

  Attributes:
    ranking: ``[(piece, score), ...]`` best first, as ``Identification``'s.
    system: ``(N,)`` each snippet's system on the page (0 = the top one).
    page_xy: ``(N, 2)`` each snippet's centre on the page, px.
    best_bar, best_rank, best_time_s: ``(N,)`` per snippet, as
      ``Identification``'s: the winning piece's best-ranked hit.
  """
  ranking: list[tuple[str, float]]
  system: np.ndarray
  page_xy: np.ndarray
  best_bar: np.ndarray
  best_rank: np.ndarray
  best_time_s: np.ndarray


def identify_page(model, index, page, k: int = TOP_K) -> PageIdentification:
  """Which indexed piece a page of score shows, and where along it.

  Args:
    model: ``dccaflax.Model`` (the index's).
    index: ``dccaflax.index.Index``.
    page: ``frontends.PageSnippets``.
    k: audio excerpts retrieved per snippet.
  """
  from dccaflax import embedding  # pylint: disable=g-import-not-at-top
  emb = embedding.embed_sheet(model, page.sheets)
  _, rows = index.search_audio(emb, min(k, len(index)))
  ident = vote(index, rows, np.ones(len(page), bool),
               np.zeros(len(page), np.int64))
  return PageIdentification(ranking=ident.ranking, system=page.system,
                            page_xy=page.page_xy, best_bar=ident.best_bar,
                            best_rank=ident.best_rank,
                            best_time_s=ident.best_time_s)
