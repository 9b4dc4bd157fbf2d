"""experiments.curves: learning curves of several runs, figure and table."""

import json
import os
import subprocess
import sys

import numpy as np

from dccaflax import checkpoints
from dccaflax import config as config_lib
from dccaflax import presentation

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, name, width, speeds, r10):
  workdir = tmp_path / name
  os.makedirs(workdir)
  checkpoints.write_config(str(workdir), config_lib.TrainConfig(
      data_dir=str(tmp_path / 'data'), width=width, epoch_pairs=1000,
      batch_size=100))
  with open(workdir / checkpoints.HISTORY_FILE, 'w') as f:
    for e, (speed, r) in enumerate(zip(speeds, r10), 1):
      f.write(json.dumps({'epoch': e, 'step': 10 * e,
                          'train/pairs_per_s': speed, 'val/a2s_R@10': r,
                          'val/s2a_R@10': r - 1, 'val/n_pairs': 2000}) + '\n')
  return str(workdir)


def test_curves_count_pairs_and_hours():
  rows = [{'step': 10, 'train/pairs_per_s': 0.5, 'val/a2s_R@10': 50.0,
           'val/s2a_R@10': 49.0},
          {'step': 30, 'train/pairs_per_s': 1.0, 'val/a2s_R@10': 70.0,
           'val/s2a_R@10': 69.0}]
  c = presentation.learning_curves({'a': rows}, batch_size=100)['a']
  np.testing.assert_array_equal(c['pairs'], [1000, 3000])
  # 1,000 pairs at 0.5/s, then 2,000 more at 1/s: 2,000 s, then 4,000 s
  np.testing.assert_allclose(c['hours'], [2000 / 3600, 4000 / 3600])
  assert list(c['a2s']) == [50.0, 70.0]


def test_curves_command_writes_figure_and_table(tmp_path):
  a = _run(tmp_path, 'narrow', 0.25, (100.0, 100.0), (60.0, 70.0))
  b = _run(tmp_path, 'wide', 1.0, (25.0, 25.0), (80.0, 90.0))
  out, table = tmp_path / 'c.png', tmp_path / 'c.md'
  run = subprocess.run(
      [sys.executable, '-m', 'experiments.curves', f'--workdir={a},{b}',
       f'--out={out}', f'--table={table}'], cwd=_REPO, capture_output=True,
      text=True, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  assert out.stat().st_size > 10000
  text = table.read_text()
  assert '| width 0.25 (narrow) | 2,000 | 0.01 | 70.0 | 69.0 |' in text
  assert '| width 1 (wide) | 2,000 | 0.02 | 90.0 | 89.0 |' in text
  bad = subprocess.run(
      [sys.executable, '-m', 'experiments.curves', f'--workdir={a},{b}',
       '--labels=one', f'--out={out}'], cwd=_REPO, capture_output=True,
      text=True, check=False)
  assert bad.returncode != 0 and 'one label per workdir' in bad.stderr
