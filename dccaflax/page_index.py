"""Page indexes: the sheet snippets of score pages a user has, without audio.

A page index (``build``; ``experiments.index --pages``) is a
``dccaflax.index.Index`` in that module's file format (``index.save`` /
``index.load``): ``piece`` is the page's file name, ``bar`` its system (1 =
the top one), ``notehead_x`` the snippet's centre in the page's strip,
``onset_frame`` -1, ``audio_emb`` zeros, ``split`` 'pages', ``data_dir`` the
pages' folder, and one more array::

  page_xy      (N, 2) float32   snippet centre on the page (x, and y of its
                                system's middle line), px of the image

It answers audio queries (audio -> sheet) only; ``read_rows`` re-cuts its
snippets from the pages (for figures), as ``index.read_rows`` re-reads a
split's pairs.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

import numpy as np

from dccaflax import embedding
from dccaflax import frontends
from dccaflax import index as index_lib
from dccaflax import snippets


def build(model, paths, step: int = frontends.PAGE_STEP, workdir: str = '',
          progress: Optional[Callable[[int, int, float], None]] = None
          ) -> index_lib.Index:
  """A page index of score pages: the sheet snippets along every page's
  systems (``frontends.page_snippets``), embedded.

  Args:
    model: ``dccaflax.Model``.
    paths: page images, all in one folder (it is recorded, so figures can
      re-cut the snippets).
    step: px of strip between a page's snippets.
    workdir: the model's workdir, recorded for messages.
    progress: called as ``progress(pages_done, pages, seconds)``.

  Raises:
    frontends.QueryError: a page that cannot be read or has no staff;
    ValueError: no page, pages in several folders or with one name twice.
  """
  paths = [os.path.abspath(os.fspath(p)) for p in paths]
  if not paths:
    raise ValueError('no page to index')
  folders = sorted({os.path.dirname(p) for p in paths})
  if len(folders) > 1:
    raise ValueError(f'pages must be in one folder, got {folders}')
  names = [os.path.basename(p) for p in paths]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise ValueError(f'pages named twice: {twice}')
  parts, t0 = [], time.time()
  for i, (path, name) in enumerate(sorted(zip(paths, names),
                                          key=lambda pn: pn[1])):
    page = frontends.page_snippets(path, step)
    parts.append((name, page, embedding.embed_sheet(model, page.sheets)))
    if progress is not None:
      progress(i + 1, len(paths), time.time() - t0)
  emb = np.concatenate([e for _, _, e in parts]).astype(np.float32)
  n = emb.shape[0]
  return index_lib.Index(
      sheet_emb=emb, audio_emb=np.zeros_like(emb),
      piece=np.concatenate([[name] * len(p) for name, p, _ in parts]
                           ).astype(str),
      notehead_x=np.concatenate([p.strip_x for _, p, _ in parts]),
      onset_frame=np.full(n, -1, np.int32),
      bar=np.concatenate([p.system + 1 for _, p, _ in parts]).astype(
          np.int32),
      split='pages', data_dir=folders[0],
      fingerprint=index_lib.model_fingerprint(model),
      workdir=os.path.abspath(os.fspath(workdir)) if workdir else '',
      page_xy=np.concatenate([p.page_xy for _, p, _ in parts]).astype(
          np.float32))


def read_rows(index: index_lib.Index, rows, data_dir: Optional[str] = None
              ) -> dict[str, np.ndarray]:
  """Re-cuts a page index's snippets from its pages (for figures).

  Args:
    index: a page index (``build``).
    rows: ``(R,)`` row numbers.
    data_dir: where the pages are now (default: ``index.data_dir``).

  Returns:
    dict: 'sheet' (R, 40, 100) uint8; 'spec' (R, 136, 100) float32 zeros
    (no audio).

  Raises:
    FileNotFoundError: a page is gone or cannot be read; ValueError: not a
    page index.
  """
  if not index.is_pages:
    raise ValueError('not a page index: index.read_rows re-reads its pairs')
  rows = [int(r) for r in np.asarray(rows).reshape(-1)]
  strips = {}
  sheets = []
  for r in rows:
    name = str(index.piece[r])
    if name not in strips:
      path = os.path.join(data_dir or index.data_dir, name)
      try:
        strips[name] = frontends.page_snippets(path).strip
      except frontends.QueryError as e:
        raise FileNotFoundError(str(e)) from e
    sheets.append(snippets.sheet_snippet(strips[name], index.notehead_x[r]))
  return {'sheet': np.stack(sheets) if sheets else np.zeros(
      (0, snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH), np.uint8),
          'spec': np.zeros((len(rows), snippets.SPEC_BINS,
                            snippets.SPEC_FRAMES), np.float32)}
