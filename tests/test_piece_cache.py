"""Tests for the data pipeline's cache (data_prep.piece_cache): what a re-run
redoes, and which engraving failures are cached (LilyPond: a failure of the
music is, a failure of the machine is not)."""

import shutil
import textwrap

import numpy as np
import pytest

from data_prep import piece_cache
from data_prep import pipeline
from data_prep import synth
from data_prep.engraving import lilypond as L


def _engraving_comes_from_the_cache(monkeypatch, what: str) -> None:
  """From now on, running the LilyPond engraver fails the test."""
  def boom(*a, **k):
    raise AssertionError(f'{what} should have come from the cache')
  monkeypatch.setattr(L.ENGRAVER, 'engrave_many', boom)


def test_lilypond_timeout_is_a_skip_not_a_crash(tmp_path, test_pieces):
  d = tmp_path / 'midi' / 'test'
  d.mkdir(parents=True)
  shutil.copy(test_pieces[1], d)
  items = pipeline.run(pipeline.list_midi(str(tmp_path / 'midi'), ('test',)),
                       str(tmp_path / 'cache'), workers=1, timeout_s=0.05,
                       progress=False)
  assert items[0].status == 'skipped' and items[0].stage == 'engrave'
  assert 'timed out' in items[0].reason
  # A timeout is not cached: with time enough, the same piece goes through.
  items = pipeline.run(pipeline.list_midi(str(tmp_path / 'midi'), ('test',)),
                       str(tmp_path / 'cache'), workers=1, progress=False)
  assert items[0].status == 'ok', items[0].reason


def test_cache_redoes_only_what_changed(tmp_path, test_pieces, monkeypatch):
  d = tmp_path / 'midi' / 'test'
  d.mkdir(parents=True)
  shutil.copy(test_pieces[2], d)
  files = pipeline.list_midi(str(tmp_path / 'midi'), ('test',))
  first = pipeline.run(files, str(tmp_path / 'cache'), workers=1,
                       progress=False)
  assert first[0].status == 'ok'
  _engraving_comes_from_the_cache(monkeypatch, 'the engraving')
  again = pipeline.run(files, str(tmp_path / 'cache'), workers=1,
                       progress=False)
  assert again[0].piece_path == first[0].piece_path
  faster = pipeline.run(files, str(tmp_path / 'cache'),
                        synth.SynthParams(tempo=1.25), workers=1,
                        progress=False)  # re-synthesized, not re-engraved
  assert faster[0].status == 'ok' and faster[0].piece_path != first[0].piece_path
  assert faster[0].n_onsets == first[0].n_onsets
  a = piece_cache.load_piece(first[0].piece_path)
  b = piece_cache.load_piece(faster[0].piece_path)
  np.testing.assert_array_equal(a.strip, b.strip)
  np.testing.assert_allclose(b.onset_frames, np.floor(a.onset_frames / 1.25 + 0.5),
                             atol=1)


def test_same_melody_in_two_files_keeps_both_names(tmp_path, test_pieces):
  d = tmp_path / 'midi' / 'test'
  d.mkdir(parents=True)
  shutil.copy(test_pieces[0], d / 'first.mid')
  shutil.copy(test_pieces[0], d / 'second.mid')
  items = pipeline.run(pipeline.list_midi(str(tmp_path / 'midi'), ('test',)),
                       str(tmp_path / 'cache'), workers=1, progress=False)
  names = [piece_cache.load_piece(it.piece_path).name for it in items]
  assert names == ['first', 'second']


# ------------------------------------------- LilyPond: machine vs. music ---

def _lilypond_wrapper(tmp_path, fail_while: str, exit_how: str) -> str:
  """A LilyPond executable that runs the real one, except that a run whose
  sources hold the string in file ``tmp_path/marker`` fails (``exit_how``: a
  shell command, e.g. ``exit 1`` or ``kill -SEGV $$``) without writing
  anything, as long as ``fail_while`` (a shell condition) holds; every run
  appends a line to ``tmp_path/runs``."""
  script = tmp_path / 'lilypond'
  script.write_text(textwrap.dedent(f'''\
      #!/bin/bash
      echo run >> {tmp_path}/runs
      marker=$(cat {tmp_path}/marker)
      for a in "$@"; do
        if [[ $a == *.ly ]] && grep -qF -- "$marker" "$a" && {fail_while}; then
          echo failed >> {tmp_path}/failures
          echo "Segmentation fault" >&2
          {exit_how}
        fi
      done
      exec {L.lilypond_executable()} "$@"
      '''))
  script.chmod(0o755)
  return str(script)


def _marker_of(midi_path, others) -> str:
  """A line of the piece's LilyPond source that no source of ``others``
  has."""
  from data_prep import melody  # pylint: disable=g-import-not-at-top
  lines = [set(L.lilypond_source(melody.read_melody(str(p)))[0].splitlines())
           for p in [midi_path, *others]]
  return max(lines[0].difference(*lines[1:]), key=len).strip()


def test_machine_failure_is_a_skip_that_is_not_cached(tmp_path, test_pieces,
                                                      monkeypatch, capsys):
  """LilyPond crashes on every run holding one piece: that piece is retried
  on its own, then reported skipped, and a later run (LilyPond mended)
  prepares it; the other pieces of its batch go through."""
  d = tmp_path / 'midi' / 'test'
  d.mkdir(parents=True)
  for p in test_pieces[:3]:
    shutil.copy(p, d)
  (tmp_path / 'marker').write_text(
      _marker_of(test_pieces[1], [test_pieces[0], test_pieces[2]]))
  (tmp_path / 'broken').touch()
  monkeypatch.setenv(L.EXECUTABLE_ENV_VAR, _lilypond_wrapper(
      tmp_path, f'[ -e {tmp_path}/broken ]', 'kill -SEGV $$'))
  files = pipeline.list_midi(str(tmp_path / 'midi'), ('test',))
  items = pipeline.run(files, str(tmp_path / 'cache'), workers=1,
                       progress=False)
  assert [it.status for it in items] == ['ok', 'skipped', 'ok']
  assert items[1].stage == 'engrave'
  assert 'signal 11' in items[1].reason and 'not cached' in items[1].reason
  assert items[1].file in capsys.readouterr().err
  # The batch run, then the piece alone once more (the retry).
  assert len((tmp_path / 'failures').read_text().split()) == 2
  (tmp_path / 'broken').unlink()
  again = pipeline.run(files, str(tmp_path / 'cache'), workers=1,
                       progress=False)
  assert [it.status for it in again] == ['ok', 'ok', 'ok'], again[1].reason
  assert again[0].piece_path == items[0].piece_path


def test_a_machine_failure_once_is_cured_by_the_retry(tmp_path, test_pieces,
                                                       monkeypatch):
  """LilyPond exits without output on the first run holding the piece (no
  error in its source): the retry alone prepares it in the same run."""
  d = tmp_path / 'midi' / 'test'
  d.mkdir(parents=True)
  for p in test_pieces[:2]:
    shutil.copy(p, d)
  (tmp_path / 'marker').write_text(
      _marker_of(test_pieces[0], [test_pieces[1]]))
  monkeypatch.setenv(L.EXECUTABLE_ENV_VAR, _lilypond_wrapper(
      tmp_path, f'[ ! -e {tmp_path}/failures ]', 'exit 1'))
  items = pipeline.run(pipeline.list_midi(str(tmp_path / 'midi'), ('test',)),
                       str(tmp_path / 'cache'), workers=1, progress=False)
  assert [it.status for it in items] == ['ok', 'ok'], items[0].reason
  assert (tmp_path / 'failures').read_text().split() == ['failed']


def test_an_error_in_the_source_is_cached(tmp_path, test_pieces, monkeypatch):
  """An error LilyPond reports in the piece's own source is a fact about the
  piece: the second run takes it from the cache without running LilyPond."""
  d = tmp_path / 'midi' / 'test'
  d.mkdir(parents=True)
  shutil.copy(test_pieces[0], d)
  real = L.lilypond_source
  monkeypatch.setattr(L, 'lilypond_source', lambda m, *style: (
      real(m)[0].replace('\\clef', '\\nosuchcommand \\clef'), real(m)[1]))
  files = pipeline.list_midi(str(tmp_path / 'midi'), ('test',))
  first = pipeline.run(files, str(tmp_path / 'cache'), workers=1,
                       progress=False)
  assert first[0].status == 'skipped' and first[0].stage == 'engrave'
  assert 'nosuchcommand' in first[0].reason
  _engraving_comes_from_the_cache(monkeypatch, 'the LilyPond error')
  again = pipeline.run(files, str(tmp_path / 'cache'), workers=1,
                       progress=False)
  assert again[0].reason == first[0].reason


def test_lilypond_that_cannot_run_stops_before_any_piece(tmp_path,
                                                          test_pieces,
                                                          monkeypatch):
  broken = tmp_path / 'lilypond'
  broken.write_text('#!/bin/bash\necho "Fontconfig error: No writable cache '
                    'directories" >&2\nexit 1\n')
  broken.chmod(0o755)
  monkeypatch.setenv(L.EXECUTABLE_ENV_VAR, str(broken))
  d = tmp_path / 'midi' / 'test'
  d.mkdir(parents=True)
  shutil.copy(test_pieces[0], d)
  with pytest.raises(pipeline.PrepareError,
                     match='cannot engrave one note.*font error'):
    pipeline.run(pipeline.list_midi(str(tmp_path / 'midi'), ('test',)),
                 str(tmp_path / 'cache'), workers=1, progress=False)
  assert not (tmp_path / 'cache' / 'engrave').exists()


def test_first_lilypond_runs_in_a_fresh_home_in_parallel(tmp_path, midi_dir,
                                                         monkeypatch):
  """LilyPond's first runs with an empty HOME and cache folder (fontconfig
  has no cache yet), two worker processes engraving at once: no skip."""
  home = tmp_path / 'home'
  home.mkdir()
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.setenv('XDG_CACHE_HOME', str(home / '.cache'))
  files = {'test': sorted(str(p) for p in (midi_dir / 'test').glob('*.mid'))
           [:2 * pipeline.CHUNK]}
  items = pipeline.run(files, str(tmp_path / 'cache'), workers=2,
                       progress=False)
  assert [it.reason for it in items if it.status != 'ok'] == []
