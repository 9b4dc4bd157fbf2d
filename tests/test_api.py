"""Public API: load a workdir, embed sheets and audio, input checks."""

import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import dccaflax
from dccaflax import cca
from dccaflax import validation
from dccaflax import input_pipeline as ip
from dccaflax import retrieval
from tests import blocking


@pytest.fixture(scope='module')
def model(trained_workdir):
  return dccaflax.load(trained_workdir)


@pytest.fixture(scope='module')
def pairs(synthetic_data):
  return ip.load_pairs(synthetic_data, 'valid')


def test_import_is_light():
  code = ('import sys, dccaflax; heavy = [m for m in ("jax", "flax", '
          '"tensorflow_datasets", "orbax") if m in sys.modules]; '
          'assert not heavy, heavy')
  subprocess.run([sys.executable, '-c', code], check=True,
                 cwd=os.path.dirname(os.path.dirname(__file__)))


_PREPARATION = ('data_prep', 'pretty_midi', 'mido', 'lilypond')
_INFERENCE = r'''
import numpy as np
import dccaflax
from dccaflax import frontends, identify, index  # inference modules
from dccaflax import presentation, ranking, retrieval
model = dccaflax.load(sys.argv[1])
s = dccaflax.embed_sheet(model, np.full((3, 40, 100), 255, np.uint8))
a = dccaflax.embed_audio(model, np.zeros((3, 136, 100), np.float32))
assert s.shape == a.shape == (3, model.config.out_dim), (s.shape, a.shape)
assert np.allclose(np.linalg.norm(s, axis=1), 1, atol=1e-4)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
assert not loaded, loaded
print('INFERENCE_OK')
'''


def test_inference_needs_no_preparation_stack(trained_workdir):
  """``import dccaflax``, load and embed with data_prep, pretty_midi, mido
  and lilypond unimportable: the library does not depend on preparation."""
  out = blocking.run_without(_PREPARATION, _INFERENCE, trained_workdir)
  assert out.returncode == 0 and 'INFERENCE_OK' in out.stdout, (
      out.stdout[-2000:] + out.stderr[-3000:])
  # Nor anywhere inside a function (a lazy import would pass the above
  # until that function runs).
  lib = pathlib.Path(__file__).resolve().parents[1] / 'dccaflax'
  for path in sorted(lib.rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ''] if isinstance(node, ast.ImportFrom)
               else [])
      for name in names:
        assert name.split('.')[0] not in (
            'data_prep', 'pretty_midi', 'mido', 'lilypond'), (
                f'{path.name}:{node.lineno} imports {name}')


def test_load_rebuilds_the_trained_model(model, trained_workdir):
  assert isinstance(model, dccaflax.Model)
  assert model.config.width == 0.25 and model.config.out_dim == 8
  assert model.epoch in (2, 4)   # best by validation R@10
  last = dccaflax.load(trained_workdir, which='last')
  assert last.epoch == 4
  assert model.projection.U.shape == (8, 8)
  assert np.all(np.diff(np.asarray(model.projection.corr)) <= 1e-6)


def test_embeddings_shapes_norms_and_retrieval(model, pairs):
  s = dccaflax.embed_sheet(model, pairs['sheet'])             # uint8
  a = dccaflax.embed_audio(model, pairs['spec'])
  n = len(pairs['sheet'])
  assert s.shape == a.shape == (n, 8)
  assert s.dtype == a.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
  # float pixels give the same vectors as uint8 ones
  np.testing.assert_allclose(
      dccaflax.embed_sheet(model, pairs['sheet'][:5].astype(np.float64)),
      s[:5], atol=1e-5)
  # any batch composition gives the same rows (padding is invisible)
  np.testing.assert_allclose(dccaflax.embed_audio(model, pairs['spec'][3:4]),
                             a[3:4], atol=1e-5)
  # the same as towers + CCA projection from the training library
  fx, gy = validation.window_outputs(model.module, model.variables,
                                     pairs['sheet'], pairs['spec'])
  px = np.asarray(cca.project_x(model.projection, fx))
  np.testing.assert_allclose(
      s, px / np.linalg.norm(px, axis=1, keepdims=True), atol=1e-4)
  # a trained model retrieves far better than chance (R@10 = 10 / n)
  r10 = retrieval.rank_metrics(a, s)['R@10']
  assert r10 > 4 * 100 * 10 / n
  assert dccaflax.embed_sheet(model, pairs['sheet'][:0]).shape == (0, 8)


@pytest.mark.parametrize('bad, match', [
    (np.zeros((40, 100), np.uint8), 'add a batch axis'),
    (np.zeros((2, 100, 40), np.uint8), r'shape \(N, 40, 100\)'),
    (np.zeros((2, 40, 100), np.int32), 'uint8 or float'),
    (np.full((2, 40, 100), np.nan, np.float32), 'non-finite'),
])
def test_embed_sheet_rejects_bad_input(model, bad, match):
  with pytest.raises(ValueError, match=match):
    dccaflax.embed_sheet(model, bad)


@pytest.mark.parametrize('bad, match', [
    (np.zeros((2, 40, 100), np.float32), r'shape \(N, 136, 100\)'),
    (np.zeros((2, 136, 100), np.uint8), 'must be float'),
    (np.full((1, 136, 100), np.inf, np.float32), 'non-finite'),
])
def test_embed_audio_rejects_bad_input(model, bad, match):
  with pytest.raises(ValueError, match=match):
    dccaflax.embed_audio(model, bad)


def test_load_errors(tmp_path, trained_workdir):
  with pytest.raises(FileNotFoundError, match='config.json'):
    dccaflax.load(tmp_path)
  with pytest.raises(ValueError, match='which'):
    dccaflax.load(trained_workdir, which='first')
