"""The GPU command, rehearsed on the CPU: packed data -> a complete output
folder, with the packages the GPU machine lacks made unimportable."""

import json
import tarfile

import numpy as np

import dccaflax
from data_prep import packing
from tests import blocking

# Not on the GPU machine (nor needed there).
_MISSING = ('tensorflow_datasets', 'array_record', 'librosa', 'pretty_midi',
            'tensorboardX', 'cairosvg', 'lilypond', 'mido', 'data_prep')
_RUN = r'''
import runpy
sys.argv = ['gpu_run', *sys.argv[1:]]
runpy.run_module('experiments.gpu_run', run_name='__main__')
'''


def test_gpu_run_rehearsal(real_data, tmp_path):
  packs = packing.pack(str(real_data), str(tmp_path / 'pack'),
                    {'train': None, 'valid': None, 'test': None}, log=print)
  assert all(p['pairs'] == p['split_pairs'] for p in packs.values())
  out, work = tmp_path / 'out', tmp_path / 'work'
  proc = blocking.run_without(
      _MISSING, _RUN, '--flagfile=experiments/quick.flags',
      f'--data_dir={tmp_path / "pack"}', f'--out={out}', f'--workdir={work}',
      '--seeds=0,1', '--epochs=1', '--batch_size=16', '--epoch_pairs=160',
      '--splits=valid,test', '--bench=tiny', '--budget_s=900', timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  assert sorted(p.name for p in out.iterdir()) == [
      'bench.json', 'bench.md', 'eval.json', 'eval.md', 'gpu_run.log',
      'models.tar.gz', 'training_curves.png']
  result = json.loads((out / 'eval.json').read_text())
  assert result['seeds'] == [0, 1]
  assert [e['reached'] for e in result['epochs'].values()] == [1, 1]
  assert [r['split'] for r in result['rows']] == ['valid', 'test']
  for i, row in enumerate(result['rows']):
    mean, sd = row['a2s']['R@10']
    per_seed = [result['per_seed'][s][i]['a2s']['R@10'] for s in ('0', '1')]
    assert row['models'] == 2 and mean == np.mean(per_seed)
    assert abs(sd - np.std(per_seed, ddof=1)) < 1e-9, (sd, per_seed)
  table = (out / 'eval.md').read_text()
  assert '±' in table and 'paper: test (16000)' in table
  bench = json.loads((out / 'bench.json').read_text())
  assert {r['models'] for r in bench['train']} == {1, 2}
  assert 'models' in (out / 'bench.md').read_text()
  log = (out / 'gpu_run.log').read_text()
  # The tiny benchmark measured 2 models at batch 16: its fastest dispatch.
  assert 'training with 1 steps per dispatch' in log
  assert 'training done' in log and 'evaluation done' in log
  with tarfile.open(out / 'models.tar.gz') as tar:
    tar.extractall(tmp_path / 'models', filter='data')
  for seed in (0, 1):
    model = dccaflax.load(tmp_path / 'models' / f'seed_{seed}')
    assert model.config.seed == seed and model.config.width == 0.25
    s = dccaflax.embed_sheet(model, np.full((2, 40, 100), 255, np.uint8))
    assert s.shape == (2, 32)
