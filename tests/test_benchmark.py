"""Benchmark command: its functions run at tiny sizes and report their keys
(no timing thresholds: tests never time things)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from dccaflax import benchmark


def test_benchmark_functions_run_and_report():
  arrays = benchmark.synthetic_arrays(64, renderings=3)
  assert arrays.strips.shape[0] == 48 and arrays.specs.shape[0] == 136
  assert arrays.frame.shape == arrays.step.shape == (3, 64)
  assert int(arrays.frame.max()) + 50 < arrays.specs.shape[1]
  train = benchmark.bench_train(0.125, 'float32', 8, 2, repeats=1,
                                arrays=arrays, train_pairs=100)
  assert set(train) == {'width', 'dtype', 'batch', 'steps_per_dispatch',
                        'models', 'layers', 'pairs_per_s', 's_per_step',
                        'epoch_s'}
  assert train['pairs_per_s'] > 0 and train['epoch_s'] > 0
  assert train['layers'] == 'cpu'   # as training runs on this platform
  stock = benchmark.bench_train(0.125, 'float32', 8, 1, repeats=1,
                                arrays=arrays, train_pairs=100,
                                cpu_kernels=False)
  assert stock['layers'] == 'xla' and stock['pairs_per_s'] > 0
  # (K models side by side: the GPU run's rehearsal, tests/test_gpu_run.py)
  embed = benchmark.bench_embed(0.125, 'float32', 8, repeats=1,
                                arrays=arrays)
  assert embed['pairs_per_s'] > 0
  ret = benchmark.bench_retrieval(2, 300, repeats=1, dim=8)
  assert ret['latency_s'] > 0 and ret['candidates'] == 300
  result = {'device': 'cpu', 'platform': 'cpu', 'jax': 'x', 'width': 0.125,
            'train': [train], 'embed': [embed], 'retrieval': [ret]}
  peer = [{'peer': 'torch', 'batch': 8, 'compile': False,
           'bf16_autocast': False, 'channels_last': cl,
           'pairs_per_s': speed} for cl, speed in ((False, 60.0),
                                                   (True, 100.0))]
  peer.append({**peer[0], 'bf16_autocast': True, 'pairs_per_s': 500.0})
  result['torch_peer'] = peer
  # the stock row is the "before", never the row compared with the peer
  result['train'].append(stock)
  result['torch_ratio'] = benchmark.peer_ratios([train, stock], peer)
  # against the peer's best configuration of the dtype (no bf16 row of ours)
  assert len(result['torch_ratio']) == 1
  assert result['torch_ratio'][0]['ratio'] == train['pairs_per_s'] / 100
  assert result['torch_ratio'][0]['torch_config'] == 'eager, channels_last'
  table = benchmark.format_table(result)
  assert 'pairs/s' in table and 'vs PyTorch peer' in table


def test_torch_peer_is_skipped_without_torch(tmp_path, capsys):
  if importlib.util.find_spec('torch') is not None:
    pytest.skip('torch is installed here: the peer really runs instead')
  assert benchmark.run_torch_peer(str(tmp_path / 'peer.py')) is None
  assert 'torch is not installed' in capsys.readouterr().out


def test_objective_cost_command_runs_at_tiny_sizes(tmp_path):
  """``experiments.benchmark --objectives`` (a subprocess: its flags would
  clash with other entry points' in this process): a row per objective."""
  from dccaflax import objectives  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'objectives.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', '--objectives',
       '--width=0.125', '--batch_sizes=8', '--repeats=2', f'--out={out}'],
      capture_output=True, text=True, check=False, timeout=900,
      cwd=pathlib.Path(__file__).resolve().parents[1])
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(out.read_text())
  assert [r['objective'] for r in rows] == list(objectives.NAMES)
  for r in rows:
    assert (r['width'], r['batch']) == (0.125, 8)
    assert r['loss_s'] > 0 and r['step_s'] > 0, r
    assert r['share'] == r['loss_s'] / r['step_s']
    assert f'| {r["objective"]} |' in proc.stdout, proc.stdout
  alone = benchmark.bench_objectives(0.125, 8, rounds=1, with_step=False)
  assert [set(r) for r in alone] == [{'objective', 'width', 'batch',
                                      'loss_s'}] * len(objectives.NAMES)
