"""What every evaluator shares: the protocol's size, the cells of its
tables, the mean and sd over several models, and the writer of its files."""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import numpy as np

from dccaflax import checkpoints
from dccaflax import retrieval

PAPER_LIMIT = 16000        # pairs of the paper's protocol, per split
CUT_BATCH = 2000           # windows cut (or pairs embedded) per call


def fmt(value, key: str) -> str:
  """A metric as the tables show it; ``(mean, sd)`` as 'mean ± sd'."""
  if isinstance(value, tuple):
    sd = f'{value[1]:.3f}' if key == 'MRR' else f'{value[1]:.1f}'
    return f'{fmt(value[0], key)} ± {sd}'
  if key == 'MR':
    return f'{value:g}'
  if key == 'MRR':
    return f'{value:.3f}'
  return f'{value:.1f}'


def mean_sd(rows_per_model: Sequence[list[dict]]) -> list[dict]:
  """Rows of several models (e.g. seeds; the same rows in the same order)
  -> one row per row with every metric of both directions as ``(mean,
  sd)`` over the models (sample sd; 0 for one model)."""
  out = []
  for rows in zip(*rows_per_model):
    row = dict(rows[0], models=len(rows))
    for d in ('a2s', 's2a'):
      values = {k: [r[d][k] for r in rows] for k in retrieval.METRIC_KEYS}
      row[d] = {k: (float(np.mean(v)),
                    float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                for k, v in values.items()}
    out.append(row)
  return out


def write(workdir: str, stem: str, table: str, model, which: str,
          data_dir: str, out_dir: Optional[str] = None,
          **fields) -> tuple[str, str]:
  """An evaluation of a model into its workdir (or ``out_dir``):
  ``stem.md`` (the table) and ``stem.json`` (which model, which data, its
  config and ``fields``).

  Args:
    workdir: the model's folder, or the name of a shipped model.
    stem: the evaluation's file name.
    table: the Markdown table.
    model: the loaded model (``dccaflax.Model``): its config and epoch.
    which: which checkpoint ('best' or 'last').
    data_dir: the data evaluated.
    out_dir: where to write (default: the model's folder).
    **fields: the rows and settings, JSON-serialisable.

  Returns:
    the two paths.
  """
  workdir = checkpoints.resolve(workdir)     # a folder or a shipped name
  out_dir = out_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  md, js = (os.path.join(out_dir, f'{stem}.{ext}') for ext in ('md', 'json'))
  with open(md, 'w') as f:
    f.write(table)
  config = model.config.to_json()
  config['data_dir'] = checkpoints.portable_path(config['data_dir'])
  with open(js, 'w') as f:
    json.dump({'workdir': checkpoints.portable_path(workdir),
               'which': which, 'epoch': model.epoch,
               'data_dir': checkpoints.portable_path(data_dir),
               'config': config, **fields}, f, indent=2)
  return md, js
