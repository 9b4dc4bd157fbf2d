"""The models shipped in models/: each loads by name with the data pipeline
blocked, has its model card, and retrieves the bundled test pieces far
above chance."""

import json
import os

import numpy as np
import pytest

import dccaflax
from dccaflax import checkpoints
from dccaflax import input_pipeline as ip
from tests import blocking

SHIPPED = sorted(checkpoints.shipped_models())
# What a shipped model must do on the first 3 test pieces (658 pairs, every
# pair a candidate: chance R@10 is 1.5 %, chance median rank 329).  The
# paper model after its first epoch of 25,000 pairs gave R@10 43 / 47 and
# median ranks 16 / 14 (A->S / S->A): the bounds sit well below any
# trained checkpoint, so they hold on any CPU's rounding, and an untrained
# or broken model fails them by far.
MIN_R10 = 30.0
MAX_MEDIAN_RANK = 30

_BLOCKED = ('data_prep', 'tensorflow_datasets', 'array_record', 'pretty_midi',
            'mido', 'lilypond', 'librosa')
_RANKS = r'''
import json
import numpy as np
import dccaflax
from dccaflax import retrieval
model = dccaflax.load(sys.argv[1])
pairs = np.load(sys.argv[2])
m = retrieval.both_directions(dccaflax.embed_sheet(model, pairs['sheet']),
                              dccaflax.embed_audio(model, pairs['spec']))
loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
assert not loaded, loaded
print('RANKS', json.dumps({'a2s': m['a2s'], 's2a': m['s2a'],
                           'epoch': model.epoch}))
'''


def test_the_paper_model_ships():
  assert 'nottingham_paper' in SHIPPED


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_model_has_a_card(name):
  folder = checkpoints.shipped_models()[name]
  card = os.path.join(folder, 'README.md')
  assert os.path.isfile(card), f'{name}: no model card {card}'
  text = open(card).read()
  for section in ('## Data', '## Recipe', '## Commands', '## Compute',
                  '## Evaluation'):
    assert section in text, f'{name}: model card lacks {section!r}'
  with open(os.path.join(folder, 'config.json')) as f:
    data_dir = json.load(f)['data_dir']
  assert not os.path.isabs(data_dir), (name, data_dir)


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_model_retrieves_bundled_pieces(name, prepared, tmp_path):
  """Loaded by name in an interpreter where the data pipeline (and TFDS)
  cannot be imported, as in a fresh clone used for inference only."""
  data_dir, _ = prepared
  pairs = ip.load_pairs(str(data_dir), 'test')
  n = len(pairs['sheet'])
  assert n > 500
  np.savez(tmp_path / 'pairs.npz', sheet=pairs['sheet'], spec=pairs['spec'])
  out = blocking.run_without(_BLOCKED, _RANKS, name, tmp_path / 'pairs.npz',
                             timeout=600)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  line = next(l for l in out.stdout.splitlines() if l.startswith('RANKS'))
  m = json.loads(line.split(' ', 1)[1])
  for direction in ('a2s', 's2a'):
    assert m[direction]['R@10'] >= MIN_R10, (name, direction, m, n)
    assert m[direction]['MR'] <= MAX_MEDIAN_RANK, (name, direction, m, n)


def test_unknown_model_name_lists_the_shipped_ones():
  with pytest.raises(FileNotFoundError, match='nottingham_paper'):
    dccaflax.load('no_such_model')
