"""The evaluation command and the paper's protocol on the fixture model."""

import json

import numpy as np

import dccaflax
from dccaflax import input_pipeline
from dccaflax import retrieval
from dccaflax.evaluators import paper
from tests import blocking
from tests.test_index import run_cli


def test_paper_rows_are_both_directions_of_the_embeddings(model, real_model,
                                                          real_data,
                                                          tmp_path):
  """``experiments.eval --evals paper`` on two models (here the same one
  twice): each one's rows are ``retrieval.both_directions`` of the public
  API's embeddings of the first --limit pairs, then of every pair; the
  mean ± sd table of both follows."""
  rc, log = run_cli('experiments.eval', '--workdir',
                    f'{real_model},{real_model}', '--evals', 'paper',
                    '--data_dir', real_data, '--splits', 'test', '--limit',
                    300, '--out_dir', tmp_path)
  assert rc == 0, log[-3000:]
  result = json.loads((tmp_path / 'eval.json').read_text())
  first, whole = result['rows']
  pairs = input_pipeline.load_pairs(str(real_data), 'test', 300)
  want = retrieval.both_directions(
      dccaflax.embed_sheet(model, pairs['sheet']),
      dccaflax.embed_audio(model, pairs['spec']))
  assert (first['label'], first['n']) == ('test (300)', 300)
  for d in ('a2s', 's2a'):
    assert first[d] == want[d]
  pieces = input_pipeline.load_pieces(str(real_data), 'test')
  want = retrieval.both_directions(*paper.embed_piece_set(model, pieces))
  assert whole['protocol'] == 'all' and whole['n'] == len(pieces) > 300
  for d in ('a2s', 's2a'):
    assert whole[d] == want[d]
  # In distribution (the model trained on these pieces): far above chance
  # (10 of 300 candidates: 3.3 %; measured 59 % on CPU).
  assert min(first['a2s']['R@10'], first['s2a']['R@10']) > 40
  md = (tmp_path / 'eval.md').read_text()
  assert md in log and '| paper: test (16000) |' in md
  assert 'mean ± sd over 2 runs' in log and ' ± 0.0 |' in log
  assert result['paper'] == json.loads(json.dumps(paper.PAPER))


def test_eval_refuses_bad_flags_before_loading(tmp_path):
  for args, message in (
      (['--evals', 'paper,tables'], "--evals: unknown ['tables']"),
      (['--limit', 0], '--limit must be >= 1'),
      (['--evals', 'robust', '--conditions', 'nowhere'],
       "--conditions: unknown ['nowhere']"),
      (['--evals', 'level', '--curves', '-3'], '--curves: -3 is not')):
    rc, log = run_cli('experiments.eval', '--workdir', tmp_path / 'none',
                      *args)
    assert rc != 0 and f'error: {message}' in log, (args, log[-2000:])


def test_the_evaluators_need_no_data_preparation():
  """Every evaluator imports with the data pipeline (and with it the
  synthesizer) unimportable: what renders is passed in."""
  out = blocking.run_without(('data_prep', 'pretty_midi'), '''
from dccaflax.evaluators import (collections, identification, level, paper,
                                 robust, results)
from dccaflax import training, validation
print('imported')
''')
  assert out.returncode == 0 and 'imported' in out.stdout, out.stderr[-3000:]
