"""Data preparation end to end: real LilyPond, FluidSynth and TFDS."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pretty_midi
import pytest

from data_prep import align
from data_prep import build
from data_prep import pipeline
from data_prep import figures
from data_prep import prepare as prepare_cli
from data_prep import source
from data_prep import synth
from data_prep.nottingham_audio_sheet import nottingham_audio_sheet as nas
from dccaflax import audio

_REPO = pathlib.Path(__file__).resolve().parents[1]

_READ_WITHOUT_TF = textwrap.dedent('''
    import sys, json
    import importlib.util
    # TensorFlow is no dependency: this environment must not have it.
    assert importlib.util.find_spec('tensorflow') is None, 'TF is installed'
    import numpy as np
    import tensorflow_datasets as tfds
    from dccaflax import audio, snippets
    pairs = tfds.data_source('nottingham_audio_sheet/pairs', data_dir=sys.argv[1])['test']
    pieces = tfds.data_source('nottingham_audio_sheet/pieces', data_dir=sys.argv[1])['test']
    keys, n = [], 0
    for p in range(len(pieces)):
      ex = pieces[p]
      spec = audio.dequantize(ex['spec_codes'], ex['spec_scale'])
      assert ex['strip'].dtype == np.uint8 and ex['strip'].shape[0] == 48
      for f, x in zip(ex['onset_frames'], ex['notehead_x']):
        pr = pairs[n]; n += 1
        assert pr['piece'] == ex['piece'] and pr['onset_frame'] == f
        assert pr['sheet'].shape == (40, 100) and pr['sheet'].dtype == np.uint8
        assert pr['spec'].shape == (136, 100) and pr['spec'].dtype == np.float32
        assert (pr['sheet'] == snippets.sheet_snippet(ex['strip'], x)).all()
        assert (pr['spec'] == snippets.spec_excerpt(spec, f)).all()
        keys.append((ex['piece'].decode(), int(f)))
    assert n == len(pairs), (n, len(pairs))
    assert keys == sorted(keys)
    print(json.dumps({'pairs': n, 'pieces': len(pieces),
                      'tf_loaded': 'tensorflow' in sys.modules}))
''')


def test_prepare_builds_both_configs_readable_without_tensorflow(prepared):
  data_dir, report = prepared
  assert report['inputs'] == 3 and report['ok'] + report['skipped'] == 3
  assert report['ok'] >= 2, report
  assert report['renderings'] == ['fluidr3_t1.00']
  on_disk = json.loads((data_dir / 'prep_report.json').read_text())
  assert on_disk['inputs'] == 3 and len(on_disk['items']) == 3
  out = subprocess.run([sys.executable, '-c', _READ_WITHOUT_TF, str(data_dir)],
                       capture_output=True, text=True, cwd=_REPO, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got['pairs'] == report['onsets']['test'] and got['pieces'] == report['ok']
  assert not got['tf_loaded']


def _source(data_dir, config: str, split: str = 'test'):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  folder = data_dir / 'nottingham_audio_sheet' / config / '1.2.0'
  return tfds.builder_from_directory(str(folder)).as_data_source(split)


def test_pieces_config_is_compact(prepared):
  data_dir, _ = prepared
  folder = data_dir / 'nottingham_audio_sheet' / 'pieces' / '1.2.0'
  info = json.loads((folder / 'dataset_info.json').read_text())
  size = sum(f.stat().st_size for f in folder.glob('*array_record*'))
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  src = tfds.data_source('nottingham_audio_sheet/pieces', data_dir=data_dir)
  frames = sum(src['test'][i]['spec_codes'].shape[1]
               for i in range(len(src['test'])))
  strip_px = sum(src['test'][i]['strip'].size for i in range(len(src['test'])))
  # Budget: 64 bytes per frame for the spectrogram; the strips come on top.
  assert size < 64 * frames + strip_px, (size, frames, strip_px, info['name'])
  src = _source(data_dir, 'pieces')
  for ex in (src[i] for i in range(len(src))):  # no extra rendering asked
    n_pairs = len(ex['onset_frames'])
    assert ex['renderings'].decode() == 'fluidr3_t1.00'
    assert ex['extra_codes'].shape == (136, 0)
    assert ex['extra_codes'].dtype == np.uint8
    assert ex['extra_frames'].shape == ex['extra_scales'].shape == (0,)
    assert ex['extra_onsets'].shape == (0, n_pairs)
    assert ex['extra_onsets'].dtype == np.int32


def _onset_similarity(spec_a, frames_a, spec_b, frames_b) -> float:
  """Mean cosine similarity of the spectra 2 frames after paired onsets."""
  a = spec_a[:, np.minimum(frames_a + 2, spec_a.shape[1] - 1)]
  b = spec_b[:, np.minimum(frames_b + 2, spec_b.shape[1] - 1)]
  return float(np.mean((a * b).sum(0) / np.linalg.norm(a, axis=0)
                       / np.linalg.norm(b, axis=0)))


def test_extra_renderings_share_the_pairs(prepared_renderings):
  data_dir, report = prepared_renderings
  tags = ['fluidr3_t1.00', 'fluidr3_t0.90', 'timgm6mb_t1.00']
  assert report['renderings'] == tags and report['ok'] >= 2, report
  pieces, pairs = _source(data_dir, 'pieces'), _source(data_dir, 'pairs')
  assert len(pieces) == report['ok']
  n_pairs = 0
  for ex in (pieces[i] for i in range(len(pieces))):
    frames, n = ex['onset_frames'], len(ex['onset_frames'])
    spec = audio.dequantize(ex['spec_codes'], ex['spec_scale'])
    length = spec.shape[1]
    n_pairs += n
    assert ex['renderings'].decode() == ','.join(tags)
    lengths, codes = ex['extra_frames'], ex['extra_codes']
    assert lengths.dtype == np.int32 and lengths.shape == (2,)
    assert codes.dtype == np.uint8 and codes.shape == (136, lengths.sum())
    scales, onsets = ex['extra_scales'], ex['extra_onsets']
    assert scales.dtype == np.float32 and scales.shape == (2,)
    assert onsets.dtype == np.int32 and onsets.shape == (2, n)
    assert (np.diff(onsets, axis=1) >= 0).all()
    assert (onsets < lengths[:, None]).all()
    slow_codes, tim_codes = np.split(codes, [lengths[0]], axis=1)
    # Each rendering quantized with its own scale: its maximum is code 63.
    assert slow_codes.max() == tim_codes.max() == audio.QUANT_LEVELS
    slow = audio.dequantize(slow_codes, scales[0])
    tim = audio.dequantize(tim_codes, scales[1])
    # fluidr3 at 0.9: 1/0.9 longer, the same pairs 1/0.9 later (up to the
    # rounding of both to frames).
    assert abs(lengths[0] / length - 1 / 0.9) < 0.03, (lengths, length)
    assert np.abs(onsets[0] - frames / 0.9).max() <= 0.5 + 0.5 / 0.9
    # timgm6mb at 1.0: the primary's frames exactly, another sound.
    np.testing.assert_array_equal(onsets[1], frames)
    t = min(length, lengths[1])
    assert np.abs(tim[:, :t] - spec[:, :t]).mean() > 0.05
    # Pair i is the same note in every rendering: its spectrum matches the
    # primary's at pair i, far better than at pair i + 3.
    for other, on in ((slow, onsets[0]), (tim, onsets[1])):
      same = _onset_similarity(spec, frames, other, on)
      assert same > _onset_similarity(spec, frames, other, np.roll(on, 3)
                                      ) + 0.2, same
  # The pairs config is the primary rendering's, as without extras.
  assert len(pairs) == n_pairs == report['onsets']['test']
  assert [int(pairs[i]['onset_frame']) for i in range(len(pairs))] == [
      int(f) for i in range(len(pieces)) for f in pieces[i]['onset_frames']]


def test_renderings_must_have_distinct_tags(tmp_path, midi_dir):
  with pytest.raises(pipeline.PrepareError,
                     match='extra rendering 0 has the tag fluidr3_t1.00 of '
                           'the primary rendering'):
    build.prepare(str(midi_dir), str(tmp_path),
                  renderings=(synth.SynthParams('fluidr3', 1.0),))
  twice = (synth.SynthParams(tempo=0.9), synth.SynthParams('timgm6mb'),
           synth.SynthParams(tempo=0.9))
  with pytest.raises(pipeline.PrepareError,
                     match='extra rendering 2 has the tag fluidr3_t0.90 of '
                           'extra rendering 0'):
    nas.NottinghamAudioSheet(config='pieces', data_dir=str(tmp_path),
                             renderings=twice)
  assert not list(tmp_path.iterdir())  # refused before any work


def test_cli_renderings_are_soundfonts_times_tempos(tmp_path, midi_dir):
  tags = [r.tag for r in prepare_cli.extra_renderings(
      synth.SynthParams(), ['fluidr3', 'timgm6mb'], [0.9, 1.0, 1.1])]
  assert tags == ['fluidr3_t0.90', 'fluidr3_t1.10', 'timgm6mb_t0.90',
                  'timgm6mb_t1.00', 'timgm6mb_t1.10']
  only_tempos = prepare_cli.extra_renderings(
      synth.SynthParams('timgm6mb'), [], [1.2, 1.0])
  assert [r.tag for r in only_tempos] == ['timgm6mb_t1.20']
  assert prepare_cli.extra_renderings(synth.SynthParams(), [], []) == ()
  for args, message in ((['--tempos', '0.9,0'], '--tempos: tempo factor 0 '
                                                'outside [0.25, 4.0]'),
                        (['--tempos', 'fast'],
                         "--tempos: 'fast' is not a number"),
                        (['--tempos', '0.9,.9'],
                         '--tempos lists 0.9 more than once'),
                        (['--soundfonts', 'fluidr3,nope.sf2'],
                         "--soundfonts: soundfont 'nope.sf2' not found")):
    out = _cli('--midi_dir', str(midi_dir), '--data_dir', str(tmp_path / 'd'),
               '--splits', 'test', '--pieces', '1', *args)
    assert out.returncode != 0 and f'error: {message}' in out.stderr, (
        args, out.stderr[-2000:])
  assert not (tmp_path / 'd').exists()  # refused before any work


def test_show_draws_a_figure(prepared, tmp_path):
  data_dir, _ = prepared
  ex, split = figures.find_piece(str(data_dir), None)
  out = figures.draw(ex, str(tmp_path / 'fig.png'), seconds=6)
  assert split == 'test' and os.path.getsize(out) > 20_000
  # the piece's snippets in its (one) engraving and under the augmentations
  out = figures.draw_sheets(str(data_dir), ex['piece'].decode(), split,
                            ['nottingham'], str(tmp_path / 's.png'), 3)
  assert os.path.getsize(out) > 20_000
  with pytest.raises(KeyError, match='no piece'):
    figures.find_piece(str(data_dir), 'no_such_piece')


def test_show_draws_the_renderings(prepared_renderings, tmp_path):
  data_dir, _ = prepared_renderings
  ex, _ = figures.find_piece(str(data_dir), None)
  rends = figures.rendering_spectrograms(ex)
  assert [t for t, _, _ in rends] == ['fluidr3_t1.00', 'fluidr3_t0.90',
                                      'timgm6mb_t1.00']
  assert all(len(f) == len(ex['notehead_x']) for _, _, f in rends)
  out = figures.draw_renderings(ex, str(tmp_path / 'r.png'), n_pairs=4)
  assert os.path.getsize(out) > 20_000
  out = figures.draw_augmentations(ex, str(tmp_path / 'a.png'), n_pairs=3)
  assert os.path.getsize(out) > 20_000


def _bad_inputs(folder: pathlib.Path, good: pathlib.Path) -> dict[str, str]:
  """A test split with one good piece and one of each kind of bad file."""
  d = folder / 'test'
  d.mkdir(parents=True)
  shutil.copy(good, d / 'a_good.mid')
  (d / 'b_empty.mid').write_bytes(b'')
  (d / 'c_text.mid').write_text('this is not a MIDI file\n')
  (d / 'd_truncated.mid').write_bytes(good.read_bytes()[:60])
  pm = pretty_midi.PrettyMIDI()
  pm.instruments.append(pretty_midi.Instrument(program=0))
  pm.write(str(d / 'e_no_notes.mid'))
  return {'a_good': 'ok', 'b_empty': 'midi', 'c_text': 'midi',
          'd_truncated': 'midi', 'e_no_notes': 'midi'}


def test_bad_inputs_are_skipped_and_reported(tmp_path, test_pieces, capsys):
  expected = _bad_inputs(tmp_path / 'midi', test_pieces[0])
  files = pipeline.list_midi(str(tmp_path / 'midi'), ('test',))
  items = pipeline.run(files, str(tmp_path / 'cache'), workers=1,
                       progress=False)
  assert [it.name for it in items] == sorted(expected)
  for it in items:
    want = expected[it.name]
    if want == 'ok':
      assert it.status == 'ok' and it.n_onsets > 10 and it.piece_path
    else:
      assert it.status == 'skipped' and it.stage == want
      assert it.file in it.reason  # the reason names the file
  err = capsys.readouterr().err
  assert err.count('WARNING: skipped') == 4
  report = pipeline.write_report(items, str(tmp_path / 'r.json'))
  assert (report['inputs'], report['ok'], report['skipped']) == (5, 1, 4)
  assert report['skipped_by_stage'] == {'midi': 4}


def test_alignment_refuses_missing_or_doubled_noteheads():
  Note = pipeline.melody_lib.Note
  notes = [Note(60 + i, 480 * i, 480 * i + 400, 0.5 * i, 0.5 * i + 0.4)
           for i in range(4)]
  ok = align.align(notes, [(10.0,), (20.0,), (30.0,), (40.0,)], 100)
  np.testing.assert_array_equal(ok.onset_frames, [0, 16, 31, 47])
  np.testing.assert_array_equal(ok.notehead_x, [10, 20, 30, 40])
  with pytest.raises(align.AlignmentError, match='note 1 .* has 0'):
    align.align(notes, [(10.0,), (), (30.0,), (40.0,)], 100)
  with pytest.raises(align.AlignmentError, match='2 of 4 onsets'):
    align.align(notes, [(10.0,), (20.0,), (30.0, 31.0), ()], 100)
  with pytest.raises(align.AlignmentError, match='beyond'):
    align.align(notes, [(10.0,), (20.0,), (30.0,), (40.0,)], 40)


def test_notes_in_one_frame_make_one_pair():
  Note = pipeline.melody_lib.Note
  notes = [Note(60, 0, 10, 0.0, 0.01), Note(62, 10, 20, 0.01, 0.02),
           Note(64, 20, 30, 0.5, 0.6)]
  al = align.align(notes, [(1.0,), (2.0,), (3.0,)], 30)
  np.testing.assert_array_equal(al.onset_frames, [0, 16])
  np.testing.assert_array_equal(al.note_index, [0, 2])


def _cli(*args, env=None):
  return subprocess.run([sys.executable, '-m', 'data_prep.prepare', *args],
                        capture_output=True, text=True, cwd=_REPO, env=env,
                        check=False)


def test_cli_missing_folder_and_nothing_usable(tmp_path, test_pieces):
  out = _cli('--midi_dir', str(tmp_path / 'nope'), '--data_dir',
             str(tmp_path / 'd'))
  assert out.returncode != 0 and 'no such file or folder' in out.stderr
  expected = _bad_inputs(tmp_path / 'bad', test_pieces[0])
  os.remove(tmp_path / 'bad' / 'test' / 'a_good.mid')
  out = _cli('--midi_dir', str(tmp_path / 'bad'), '--data_dir',
             str(tmp_path / 'd'), '--splits', 'test', '--workers', '1')
  assert out.returncode != 0 and 'no usable piece' in out.stderr
  report = json.loads((tmp_path / 'd' / 'prep_report.json').read_text())
  assert report['inputs'] == len(expected) - 1 and report['ok'] == 0


def test_bundled_data_matches_its_manifest():
  midi = source.verify()
  assert midi == os.path.join(source.BUNDLED, 'midi')
  assert {s: len(f) for s, f in pipeline.list_midi(midi).items()} == {
      'train': 694, 'valid': 173, 'test': 170}
  licence = pathlib.Path(source.BUNDLED, 'LICENSE').read_text()
  assert 'GNU GENERAL PUBLIC LICENSE' in licence and 'Version 3' in licence


def test_altered_missing_or_unlisted_bundled_files_are_named(tmp_path):
  root = tmp_path / 'nottingham'
  shutil.copytree(source.BUNDLED, root)
  first, second = sorted((root / 'midi' / 'test').glob('*.mid'))[:2]
  data = bytearray(first.read_bytes())
  data[len(data) // 2] ^= 1
  first.write_bytes(bytes(data))
  second.unlink()
  shutil.copy(sorted((root / 'midi' / 'valid').glob('*.mid'))[0],
              root / 'midi' / 'train' / 'extra.mid')
  with pytest.raises(pipeline.PrepareError) as e:
    source.verify(str(root))
  message = str(e.value)
  assert '3 problems' in message
  assert f'{first}: altered' in message
  assert f'{second}: missing' in message
  assert f'{root / "midi" / "train" / "extra.mid"}: not listed' in message
  (root / source.MANIFEST).unlink()
  with pytest.raises(pipeline.PrepareError, match='MANIFEST.sha256: no such'):
    source.verify(str(root))


def test_prepare_without_a_midi_folder_uses_the_bundled_data(tmp_path,
                                                             monkeypatch):
  env = {k: v for k, v in os.environ.items() if k != source.ENV_VAR}
  out = _cli('--data_dir', str(tmp_path / 'd'), '--splits', 'test',
             '--pieces', '1', '--config', 'pieces', env=env)
  assert out.returncode == 0, out.stderr
  report = json.loads((tmp_path / 'd' / 'prep_report.json').read_text())
  assert report['midi_dir'] == os.path.join(source.BUNDLED, 'midi')
  assert (report['inputs'], report['ok']) == (1, 1)
  # Without the bundled folder, the error says where to get the data.
  monkeypatch.delenv(source.ENV_VAR, raising=False)
  monkeypatch.setattr(source, 'BUNDLED', str(tmp_path / 'no_bundle'))
  with pytest.raises(pipeline.PrepareError, match='Nottingham.zip'):
    source.resolve(None, str(tmp_path / 'work'))


def test_zip_is_extracted(tmp_path, test_pieces):
  zpath = tmp_path / 'Nottingham.zip'
  with zipfile.ZipFile(zpath, 'w') as z:
    for split in pipeline.SPLITS:
      z.write(test_pieces[0], f'Nottingham/{split}/{test_pieces[0].name}')
  root = source.resolve(str(zpath), str(tmp_path / 'work'))
  files = pipeline.list_midi(root)
  assert {s: len(f) for s, f in files.items()} == {s: 1 for s in pipeline.SPLITS}
  (tmp_path / 'junk.zip').write_bytes(b'PK nonsense')
  with pytest.raises(pipeline.PrepareError, match='not a zip'):
    source.resolve(str(tmp_path / 'junk.zip'), str(tmp_path / 'work2'))
