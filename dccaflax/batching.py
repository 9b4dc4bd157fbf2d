"""Fixed-size batches for jitted functions: pad the last one, trim the output.

A jitted function compiles once per input shape.  Everything that feeds an
unknown number of rows through one (embedding, ranking, top-k search) cuts
them into batches of one size and pads the last batch with zero rows, so one
compiled shape serves every call; the padded rows' outputs are dropped.  This
is exact whenever a row's output does not depend on the other rows of its
batch (the towers in eval mode, similarity matmuls).

NumPy only: imported by inference code and by worker processes alike.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def pad_rows(x: np.ndarray, n: int) -> np.ndarray:
  """``x`` with zero rows appended up to ``n`` rows.

  Args:
    x: ``(m, ...)`` array, ``m <= n``.
    n: rows wanted.

  Returns:
    ``(n, ...)`` array of ``x``'s dtype (``x`` itself when ``m == n``).
  """
  x = np.asarray(x)
  if x.shape[0] == n:
    return x
  if x.shape[0] > n:
    raise ValueError(f'cannot pad {x.shape[0]} rows to {n}')
  pad = np.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)
  return np.concatenate([x, pad], axis=0)


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of ``multiple`` that is ``>= n`` (0 for 0)."""
  return -(-int(n) // int(multiple)) * int(multiple)


def map_batches(fn: Callable[..., object], arrays: Sequence[np.ndarray],
                batch_size: int):
  """``fn`` over fixed-size batches of row-aligned host arrays.

  Args:
    fn: called as ``fn(*batch)`` with ``batch_size`` rows of each array (the
      last batch zero-padded); returns an array or a tuple of arrays whose
      leading axis is ``batch_size`` rows, one per input row.
    arrays: ``(N, ...)`` arrays with the same N.
    batch_size: rows per call.

  Returns:
    ``fn``'s outputs for the N rows as NumPy arrays (a tuple when ``fn``
    returns a tuple), in input order.  With N = 0, ``fn`` runs once on a
    batch of zeros so the outputs still have their trailing shapes.
  """
  arrays = [np.asarray(a) for a in arrays]
  n = arrays[0].shape[0]
  if any(a.shape[0] != n for a in arrays):
    raise ValueError('arrays differ in length: '
                     f'{[a.shape[0] for a in arrays]}')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  parts, single = [], False
  for start in range(0, max(n, 1), batch_size):
    batch = [pad_rows(a[start:start + batch_size], batch_size)
             for a in arrays]
    out = fn(*batch)
    single = not isinstance(out, tuple)
    outs = (out,) if single else out
    m = min(batch_size, n - start)
    parts.append([np.asarray(o)[:m] for o in outs])
  result = tuple(np.concatenate(cols) for cols in zip(*parts))
  return result[0] if single else result
