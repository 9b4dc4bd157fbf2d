"""Search index: build, save/load, model fingerprint, search, entry point."""

import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import dccaflax
from dccaflax import index as index_lib
from dccaflax import input_pipeline
from dccaflax import sources

_REPO = pathlib.Path(__file__).resolve().parents[1]


def run_cli(module, *args, timeout=300):
  """Runs ``python -m module args`` in the repo; (returncode, stdout+err)."""
  proc = subprocess.run([sys.executable, '-m', module, *map(str, args)],
                        cwd=_REPO, capture_output=True, text=True,
                        timeout=timeout, check=False)
  return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def model(real_model):
  return dccaflax.load(real_model)


def test_index_holds_every_pair_of_the_split(real_index, real_data, model):
  index = index_lib.load(real_index)
  pairs = input_pipeline.load_pairs(str(real_data), 'test')
  n = len(pairs['piece'])
  assert len(index) == n
  assert index.sheet_emb.shape == index.audio_emb.shape == (n, 16)
  for emb in (index.sheet_emb, index.audio_emb):
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
  np.testing.assert_array_equal(index.piece, pairs['piece'].astype(str))
  np.testing.assert_array_equal(index.onset_frame, pairs['onset_frame'])
  np.testing.assert_array_equal(index.bar, pairs['bar'])
  np.testing.assert_array_equal(index.notehead_x, pairs['notehead_x'])
  # Row i is pair i: its embeddings are those of the public API.
  np.testing.assert_allclose(
      index.sheet_emb[:50], dccaflax.embed_sheet(model, pairs['sheet'][:50]),
      atol=1e-5)
  np.testing.assert_allclose(
      index.audio_emb[-50:], dccaflax.embed_audio(model, pairs['spec'][-50:]),
      atol=1e-5)
  assert index.split == 'test' and index.data_dir == str(real_data)
  assert index.fingerprint == index_lib.model_fingerprint(model)
  assert len(index.pieces) == 3 and index.pieces == sorted(index.pieces)
  # 8 k + 16 bytes per pair, plus names, paths (4 bytes a character) and
  # the archive's headers.
  assert os.path.getsize(real_index) < n * (8 * 16 + 16) + 8000
  # read_rows re-cuts the same pairs from the data.
  rows = index_lib.read_rows(index, [0, n - 1])
  np.testing.assert_array_equal(rows['sheet'][1], pairs['sheet'][n - 1])
  np.testing.assert_array_equal(rows['spec'][0], pairs['spec'][0])


def test_search_finds_the_partners_of_indexed_pairs(real_index):
  index = index_lib.load(real_index)
  n = len(index)
  scores, rows = index.search_sheets(index.audio_emb, 10)
  assert scores.shape == rows.shape == (n, 10)
  assert np.all(np.diff(scores, axis=1) <= 1e-6)
  hit10 = np.mean(np.any(rows == np.arange(n)[:, None], axis=1))
  assert hit10 > 5 * 10 / n, hit10      # far above chance (1.5 %)
  _, rows_s2a = index.search_audio(index.sheet_emb[:7], 3)
  assert rows_s2a.shape == (7, 3)
  # Exact: the same as brute force.
  sims = index.audio_emb[:5] @ index.sheet_emb.T
  np.testing.assert_array_equal(rows[:5, 0], np.argmax(sims, axis=1))


def test_fingerprint_tells_models_apart(real_index, model):
  index = index_lib.load(real_index)
  index.check_model(model)     # its own model: fine
  other = model._replace(variables=jax.tree.map(lambda x: x * 1.0001,
                                                model.variables))
  assert index_lib.model_fingerprint(other) != index.fingerprint
  with pytest.raises(index_lib.ModelMismatchError, match='another model'):
    index.check_model(other)
  proj = model.projection._replace(mean_x=model.projection.mean_x + 1e-3)
  assert (index_lib.model_fingerprint(model._replace(projection=proj))
          != index.fingerprint)
  # The same weights behind another audio front end are another model.
  prints = {index_lib.model_fingerprint(model._replace(
      config=dataclasses.replace(model.config, level_norm=m)))
            for m in ('none', 'peak', 'mean', True)}
  assert len(prints) == 3    # True is how older configs wrote 'mean'


def test_bad_index_files_are_refused(tmp_path, real_index):
  with pytest.raises(index_lib.IndexFileError, match='no such index'):
    index_lib.load(tmp_path / 'missing.npz')
  garbage = tmp_path / 'garbage.npz'
  garbage.write_bytes(b'not a zip file at all')
  with pytest.raises(index_lib.IndexFileError, match='cannot read'):
    index_lib.load(garbage)
  other = tmp_path / 'other.npz'
  np.savez(other, x=np.zeros(3))
  with pytest.raises(index_lib.IndexFileError, match='not a dccaflax index'):
    index_lib.load(other)
  index = index_lib.load(real_index)
  with pytest.raises(KeyError, match='did you mean'):
    index.rows_of(index.pieces[0] + 'x')
  with pytest.raises(ValueError, match='.npz'):
    index_lib.save(index, tmp_path / 'index.bin')


def test_index_entry_point(tmp_path, real_model, real_data):
  out = tmp_path / 'cli_index.npz'
  rc, log = run_cli('experiments.index', '--workdir', real_model,
                    '--data_dir', real_data, '--split', 'test', '--out', out,
                    '--limit', 300)
  assert rc == 0, log
  assert 'embedded 300/300 pairs' in log
  assert 'wrote' in log
  assert len(index_lib.load(out)) == 300
  rc, log = run_cli('experiments.index', '--workdir', real_model,
                    '--data_dir', tmp_path / 'nothing', '--out', out)
  assert rc != 0 and 'error: ' in log and 'no prepared' in log, log


def test_index_of_another_engraving(tmp_path, real_model, real_index,
                                    leland_data):
  """--collection indexes the same pairs with another engraving's snippets:
  the same rows and audio, other sheet embeddings, re-read from its config."""
  out = tmp_path / 'leland.npz'
  rc, log = run_cli('experiments.index', '--workdir', real_model,
                    '--data_dir', leland_data, '--out', out, '--limit', 300,
                    '--collection', 'nottingham:verovio_leland')
  assert rc == 0, log
  assert 'nottingham:verovio_leland' in log
  leland, lily = index_lib.load(out), index_lib.load(real_index)
  assert leland.collection == 'nottingham:verovio_leland'
  assert lily.collection == sources.NOTTINGHAM
  np.testing.assert_array_equal(leland.onset_frame, lily.onset_frame[:300])
  np.testing.assert_allclose(leland.audio_emb, lily.audio_emb[:300],
                             atol=1e-5)
  assert np.abs(leland.sheet_emb - lily.sheet_emb[:300]).max() > 0.1
  pairs = input_pipeline.load_pairs(str(leland_data), 'test', 300,
                                    collection='nottingham:verovio_leland')
  np.testing.assert_array_equal(
      index_lib.read_rows(leland, [5, 299])['sheet'], pairs['sheet'][[5, 299]])
  # an index file written before the field reads as Nottingham's
  with np.load(out) as z:
    arrays = {k: z[k] for k in z.files if k != 'collection'}
  np.savez(tmp_path / 'old.npz', **arrays)
  assert index_lib.load(tmp_path / 'old.npz').collection == 'nottingham'
  rc, log = run_cli('experiments.index', '--workdir', real_model,
                    '--data_dir', leland_data, '--out', out,
                    '--collection', 'nottingham:a:b')
  assert rc != 0 and 'error: --collection' in log, log
