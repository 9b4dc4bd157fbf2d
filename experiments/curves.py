r"""Learning curves of several training runs in one figure and one table.

  python -m experiments.curves --workdir W1,W2,... [--labels a,b,...] \
      --out curves.png [--table curves.md]

Validation R@10 (audio -> sheet; the table also sheet -> audio) after each
evaluated epoch of each run (``history.jsonl``) against the training pairs
seen and against the training hours the runs measured (their pairs/s; a
machine shared with other work shows as slower).  For choosing a width or a
schedule by evidence: the runs should validate on the same pairs
(``--val_subset``).  Workdirs may be names of shipped models.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

from dccaflax import checkpoints
from dccaflax import presentation

_WORKDIR = flags.DEFINE_list('workdir', None, 'Training workdirs or names of '
                             'shipped models.', required=True)
_LABELS = flags.DEFINE_list('labels', None, 'One label per workdir (default: '
                            'width and folder name).')
_OUT = flags.DEFINE_string('out', None, 'PNG to write.', required=True)
_TABLE = flags.DEFINE_string('table', None, 'Markdown table to write too.')
_TITLE = flags.DEFINE_string('title', '', 'Figure title.')


def main(argv):
  del argv
  workdirs = [checkpoints.resolve(w) for w in _WORKDIR.value]
  labels = _LABELS.value
  if labels is not None and len(labels) != len(workdirs):
    raise app.UsageError(f'--labels names {len(labels)} runs, --workdir '
                         f'{len(workdirs)}: give one label per workdir')
  histories, batch, n_val = {}, None, set()
  for i, w in enumerate(workdirs):
    config = checkpoints.read_config(w)
    rows = checkpoints.read_history(w)
    if not rows:
      raise app.UsageError(f'{w}: no history.jsonl rows (no epoch evaluated '
                           'yet)')
    if batch is not None and config.batch_size != batch:
      raise app.UsageError(f'{w}: batch size {config.batch_size}, the others '
                           f'{batch}: pairs seen would not compare')
    batch = config.batch_size
    n_val.update(r.get('val/n_pairs') for r in rows)
    name = os.path.basename(w.rstrip(os.sep))
    label = labels[i] if labels else f'width {config.width:g} ({name})'
    histories[label] = rows
  curves = presentation.learning_curves(histories, batch)
  n = n_val.pop() if len(n_val) == 1 else None
  presentation.plot_learning_curves(curves, _OUT.value, _TITLE.value,
                                    n_val=int(n) if n else None)
  table = presentation.format_learning_curves(curves)
  print(table)
  if _TABLE.value:
    with open(_TABLE.value, 'w') as f:
      f.write(table)


if __name__ == '__main__':
  app.run(main)
