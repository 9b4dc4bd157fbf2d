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
equal the TFDS ``pairs`` windows.  Prints the size of each file.  The work is ``data_prep.packing``.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

from data_prep import packing

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Prepared data (the '
                                '--data_dir of data_prep.prepare).',
                                required=True)
_OUT = flags.DEFINE_string('out', None, 'Folder to write packed/<split>.npz '
                           'into.', required=True)
_SPLITS = flags.DEFINE_list('splits', ['train', 'valid', 'test:16000'],
                            'Splits to pack; split:N packs the pieces of its '
                            'first N pairs only.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    splits = packing.parse_splits(_SPLITS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    result = packing.pack(_DATA_DIR.value, _OUT.value, splits)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  total = sum(r['bytes'] for r in result.values())
  print(f'{total / 2**20:.1f} MiB in {os.path.join(_OUT.value, "packed")}')


if __name__ == '__main__':
  app.run(main)
