r"""Packs prepared data into NumPy files that travel: what a GPU run reads.

  python -m data_prep.pack --data_dir DATA --out PACK \
      [--splits train,valid,test:16000]

Writes ``PACK/packed/<split>.npz`` (``dccaflax.pieceset.save_pack``): the
pieces of each split in the primary rendering, strips and 6-bit spectrogram
codes without gaps, compressed.  ``split:N`` packs only the pieces that hold
the split's first N pairs (the paper's protocol reads no more of the test
split).  ``PACK`` then serves as ``--data_dir`` wherever the code reads
prepared data (``input_pipeline.load_pieces`` / ``load_pairs`` read the packs
with NumPy alone: no TFDS, no array_record), and the windows cut from it
equal the TFDS ``pairs`` windows.  Prints the size of each file.
"""

from __future__ import annotations

import itertools
import os
import sys
from typing import Callable, Optional

from absl import app
from absl import flags

from dccaflax import input_pipeline
from dccaflax import pieceset

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared data (the '
                                '--data_dir of data_prep.prepare).',
                                required=True)
_OUT = flags.DEFINE_string('out', None, 'Folder to write packed/<split>.npz '
                           'into.', required=True)
_SPLITS = flags.DEFINE_list('splits', ['train', 'valid', 'test:16000'],
                            'Splits to pack; split:N packs the pieces of its '
                            'first N pairs only.')


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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    splits = parse_splits(_SPLITS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    result = pack(_DATA_DIR.value, _OUT.value, splits)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  total = sum(r['bytes'] for r in result.values())
  print(f'{total / 2**20:.1f} MiB in {os.path.join(_OUT.value, "packed")}')


if __name__ == '__main__':
  app.run(main)
