"""Every shipped flagfile parses into a valid training config."""

import json
import pathlib
import subprocess
import sys

from dccaflax import checkpoints
from dccaflax import config as config_lib

_REPO = pathlib.Path(__file__).resolve().parents[1]

_PARSE = r'''
import json, sys
from experiments import config_flags, train
from dccaflax import level
out = {}
for path in sys.argv[1:]:
  train.FLAGS.unparse_flags()
  train.FLAGS(['train', f'--flagfile={path}', '--workdir=unused'])
  config = config_flags.config()       # raises on a bad augmentation
  level.check_method(config.level_norm)
  out[path] = config.to_json()
print(json.dumps(out))
'''


def test_flagfiles_parse_into_configs():
  files = sorted(str(p.relative_to(_REPO))
                 for p in (_REPO / 'experiments').glob('*.flags'))
  assert 'experiments/nottingham.flags' in files
  proc = subprocess.run([sys.executable, '-c', _PARSE, *files], cwd=_REPO,
                        capture_output=True, text=True, timeout=120,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  configs = json.loads(proc.stdout.strip().splitlines()[-1])
  paper = configs['experiments/nottingham.flags']
  assert paper['width'] == 1.0 and paper['batch_size'] == 100
  assert paper['aug_gain_curve_db'] == 0 and paper['renderings'] == 'primary'
  assert {c['level_norm'] for c in configs.values()} == {'peak'}
  assert {c['objective'] for c in configs.values()} == {'dcca'}
  beyond = configs['experiments/nottingham_renderings.flags']
  assert beyond['renderings'] == 'all' and beyond['level_norm'] == 'peak'
  assert beyond['aug_gain_curve_db'] > 0
  robust = configs['experiments/nottingham_robust.flags']
  assert robust['renderings'] == 'all' and robust['aug_stretch'] > 0
  assert all(paper[k] == 0 for k in paper if k.startswith('aug_'))
  # the combination: the robust recipe's audio, the engravings recipe's data
  both = configs['experiments/engravings_robust.flags']
  engravings = configs['experiments/engravings.flags']
  data_keys = {'collections', 'epochs', 'lr_halve_every'}
  assert both['collections'] != robust['collections']
  assert {k for k in both if both[k] != robust[k]} == data_keys
  assert all(both[k] == engravings[k] for k in data_keys)
  assert all(both[k] == robust[k] for k in both if k.startswith('aug_'))
  # the recipe for real use: all of the robust audio recipe, three
  # collections in two engravings, started from the shipped paper model
  real = configs['experiments/robust.flags']
  assert all(real[k] == robust[k] for k in robust
             if k.startswith('aug_') and k != 'aug_sheet_scale')
  assert real['aug_sheet_scale'] > 0 and real['renderings'] == 'all'
  assert set(real['collections'].split(',')) == {
      f'{c}{e}' for c in ('nottingham', 'oneills', 'airds')
      for e in ('', ':verovio_drawn')}
  start = checkpoints.read_config(checkpoints.resolve(real['init_from']))
  assert config_lib.architecture(start) == config_lib.architecture(
      config_lib.TrainConfig.from_json(real))
