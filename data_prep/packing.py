"""Packing prepared data into NumPy files that travel (``data_prep.pack``).

Each split's ``pieces`` config, primary rendering, into
``out/packed/<split>.npz`` (``dccaflax.pieceset.save_pack``), optionally only
the pieces that hold its first N pairs.
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional

from dccaflax import input_pipeline
from dccaflax import pieceset


def parse_splits(values) -> dict[str, Optional[int]]:
  """``['train', 'test:16000']`` -> ``{'train': None, 'test': 16000}``.

  Raises:
    ValueError: an empty name or a pair count that is not a positive int.
  """
  out = {}
  for value in values:
    name, _, limit = value.partition(':')
    if not name or (limit and not (limit.isdigit() and int(limit) > 0)):
      raise ValueError(f'bad split {value!r}: want NAME or NAME:PAIRS')
    out[name] = int(limit) if limit else None
  return out


def pack(data_dir: str, out: str, splits: dict[str, Optional[int]],
         log: Callable[[str], None] = print) -> dict[str, dict]:
  """Packs the ``pieces`` config of each split (see the module doc).

  Returns:
    ``{split: {'path', 'bytes', 'pieces', 'pairs', 'split_pairs'}}``.

  Raises:
    FileNotFoundError: nothing prepared in ``data_dir``; ValueError: a split
    that was not prepared.
  """
  result = {}
  for split, limit in splits.items():
    source = input_pipeline.data_source(data_dir, 'pieces', split)
    pieces = list(input_pipeline.read_examples(source, len(source)))
    counts = [len(p['onset_frames']) for p in pieces]
    split_pairs = sum(counts)
    keep = len(pieces)
    if limit is not None and limit < split_pairs:
      keep = next(i + 1 for i, c in enumerate(itertools.accumulate(counts))
                  if c >= limit)
    path = pieceset.pack_path(out, split)
    size = pieceset.save_pack(pieces[:keep], path, split_pairs)
    result[split] = {'path': path, 'bytes': size, 'pieces': keep,
                     'pairs': sum(counts[:keep]), 'split_pairs': split_pairs}
    log(f'{split}: {keep} of {len(pieces)} pieces, {sum(counts[:keep])} of '
        f'{split_pairs} pairs -> {path} ({size / 2**20:.1f} MiB)')
  return result
