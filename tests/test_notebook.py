"""The Colab quickstart notebook runs end to end (tiny settings, CPU)."""

import pathlib
import shutil

import nbclient
import nbformat

_REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = _REPO / 'experiments' / 'colab' / 'quickstart.ipynb'


def test_quickstart_notebook_runs(tmp_path, real_midi, real_data,
                                  monkeypatch):
  work = tmp_path / 'nb'
  # The fixture's stage cache: preparation redoes no engraving/synthesis.
  shutil.copytree(real_data / 'cache', work / 'data' / 'cache')
  for key, value in {'DCCAFLAX_NOTTINGHAM': str(real_midi),
                     'DCCAFLAX_NB_WORK': str(work),
                     'DCCAFLAX_NB_PIECES': '3', 'DCCAFLAX_NB_EPOCHS': '1',
                     'DCCAFLAX_NB_EVAL_PIECES': '1'}.items():
    monkeypatch.setenv(key, value)
  monkeypatch.delenv('DCCAFLAX_NB_WORKDIR', raising=False)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=600, kernel_name='python3',
      resources={'metadata': {'path': str(_REPO / 'experiments' / 'colab')}})
  client.execute()
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(c.get('execution_count') for c in code)   # every cell ran
  outputs = '\n'.join(
      o.get('text', '') for c in nb.cells if c.cell_type == 'code'
      for o in c.get('outputs', []))
  assert 'pieces usable' in outputs
  assert 'epoch 1/1' in outputs
  assert 'audio->sheet: top 9 of' in outputs
  assert 'best-matching position in' in outputs
  assert 'Piece identification (quick model)' in outputs   # the last cell
  assert 'skipped (DCCAFLAX_NB_EVAL_PIECES' not in outputs
  assert (work / 'figure3.png').stat().st_size > 10000
  assert (work / 'index.npz').exists()
  images = [o for c in nb.cells if c.cell_type == 'code'
            for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert len(images) == 2      # training curve and Figure 3
