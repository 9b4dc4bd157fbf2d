"""Shared fixtures: the Nottingham MIDI folder and small real pieces."""

import os
import pathlib
import pickle
import shutil
import tempfile

import filelock
import pytest

# One JAX compilation cache for the session and the command-line runs it
# starts (they inherit the environment): many tests compile the same small
# towers and steps.  A new folder per session, so nothing compiled on another
# machine or by other code is ever read.  Set before any test imports JAX.
# The pytest-xdist workers inherit the controller's folder (and make none).
_JAX_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _JAX_CACHE = tempfile.mkdtemp(prefix='dccaflax_test_jax_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _JAX_CACHE
for _name, _value in (('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0'),
                      ('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')):
  os.environ.setdefault(_name, _value)


# The files that take longest, in CPU seconds of a whole run on 2 cores
# (per-test CPU time, session 7), run first: under ``--dist loadfile`` a
# worker takes the next file when it is done, so a long file started last
# keeps one core busy while the other idles (pytest-xdist's default order,
# most tests first, put the 1-test files of 60-110 s last;
# ``run_tests.sh`` turns that off).  Other files follow in name order.
_LONG_FILES = {
    'test_training.py': 240, 'test_steps.py': 200, 'test_identify.py': 156,
    'test_gpu_run.py': 110, 'test_benchmark.py': 100,
    'test_robust_eval.py': 95, 'test_level.py': 92, 'test_query.py': 84,
    'test_notebook.py': 70, 'test_sharding.py': 65,
    'test_input_pipeline.py': 55, 'test_piece_cache.py': 51,
    'test_layers.py': 51, 'test_collections.py': 47,
}


def pytest_collection_modifyitems(session, config, items):  # pylint: disable=unused-argument
  items.sort(key=lambda item: -_LONG_FILES.get(item.path.name, 0))


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
  # The process that made the folder (the controller, last to finish; the
  # workers inherit it) removes it; a folder the caller named is theirs.
  if _JAX_CACHE is not None:
    shutil.rmtree(_JAX_CACHE, ignore_errors=True)


def build_once(tmp_path_factory, name: str, build):
  """``build(folder)`` run once per test run; ``(folder, its result)``.

  The expensive session fixtures (pieces engraved by LilyPond and
  synthesised by FluidSynth, trained models) go through here: under
  pytest-xdist (``run_tests.sh`` runs two workers) each worker runs the
  session fixtures it needs, so the first to ask builds in a folder that
  all workers of the run share, under a file lock, and the others wait for
  it and reuse it.  A build that raised is not marked done: the next
  worker to ask builds again (and fails the same way, with its error).
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent                # the run's folder, above each worker's
  folder, done = root / f'once_{name}', root / f'once_{name}.pickle'
  with filelock.FileLock(str(root / f'once_{name}.lock')):
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      done.write_bytes(pickle.dumps(build(folder)))
    return folder, pickle.loads(done.read_bytes())


def nottingham_midi_dir() -> pathlib.Path:
  """$DCCAFLAX_NOTTINGHAM, else the data set bundled with the repository
  (checked against its manifest)."""
  from data_prep import source  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(source.resolve(  # a zip is extracted to the temp dir
      None, work_dir=os.path.join(tempfile.gettempdir(), 'dccaflax_midi')))
  if not (path / 'test').is_dir():
    raise RuntimeError(
        f'Nottingham MIDI folder not found at {path}: set DCCAFLAX_NOTTINGHAM '
        'to the folder holding train/valid/test, or unset it to use the '
        'bundled data set')
  return path


@pytest.fixture(scope='session')
def midi_dir() -> pathlib.Path:
  return nottingham_midi_dir()


@pytest.fixture(scope='session')
def test_pieces(midi_dir) -> list[pathlib.Path]:
  """The first few test-split pieces, sorted by name."""
  return sorted((midi_dir / 'test').glob('*.mid'))[:4]


@pytest.fixture(scope='session')
def prepared(tmp_path_factory, midi_dir):
  """Both TFDS configs of the first 3 test pieces: (data_dir, report)."""
  from data_prep import build  # pylint: disable=g-import-not-at-top
  return build_once(tmp_path_factory, 'prepared', lambda data_dir: (
      build.prepare(str(midi_dir), str(data_dir), splits=('test',),
                    limit=3, workers=2, progress=False)))


RENDERINGS = (('fluidr3', 0.9), ('timgm6mb', 1.0))  # extra (soundfont, tempo)


@pytest.fixture(scope='session')
def prepared_renderings(tmp_path_factory, midi_dir):
  """Both TFDS configs of the first 3 test pieces with 3 renderings: the
  primary fluidr3 at tempo 1 and the extras ``RENDERINGS`` (fluidr3 at 0.9,
  timgm6mb at 1.0) in the ``pieces`` config's ``extra_*`` features:
  (data_dir, report)."""
  from data_prep import build  # pylint: disable=g-import-not-at-top
  from data_prep import synth  # pylint: disable=g-import-not-at-top
  return build_once(tmp_path_factory, 'prepared_renderings', lambda d: (
      build.prepare(
          str(midi_dir), str(d), splits=('test',), limit=3, workers=2,
          progress=False,
          renderings=tuple(synth.SynthParams(sf, t) for sf, t in RENDERINGS))))


# --------------------------------------------------------------------------
# Synthetic aligned data and a tiny trained model (input pipeline, training
# library and public API tests).  A learnable stand-in for the Nottingham
# pieces that needs no LilyPond or FluidSynth: pitch p is a notehead at strip
# row 10 + 3p and a decaying band at spectrogram bins 12p..12p+3.
# --------------------------------------------------------------------------


def synthetic_piece(rng, name: str, n_notes: int) -> dict:
  """A fake aligned piece with the ``pieces`` config's fields (+ 'spec').

  Returns:
    dict: 'piece', 'strip' (48, W) uint8, 'spec' (136, T) float32,
    'spec_codes' (136, T) uint8, 'spec_scale', 'onset_frames' (n,) int32,
    'notehead_x' (n,) float32, 'onset_bars' (n,) int32.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dccaflax import audio  # pylint: disable=g-import-not-at-top
  pitch = rng.integers(0, 10, n_notes)
  x = (30 + np.cumsum(rng.integers(10, 16, n_notes))
       + rng.uniform(-.5, .5, n_notes))
  frames = 20 + np.cumsum(rng.integers(8, 16, n_notes))
  width, length = int(x[-1]) + 30, int(frames[-1]) + 40
  strip = np.full((48, width), 255, np.uint8)
  strip[16:33:4] = 120                                    # staff lines
  spec = np.abs(rng.normal(0, .05, (136, length)))
  ends = np.append(frames[1:], length)
  for p, cx, f, e in zip(pitch, x, frames, ends):
    r, c = 10 + 3 * int(p), int(np.floor(cx + .5))
    strip[r - 2:r + 2, c - 2:c + 3] = 0
    spec[12 + 12 * p:16 + 12 * p, f:e] += 2.5 * np.exp(-np.arange(e - f) / 12)
  spec = spec.astype(np.float32)
  codes, scale = audio.quantize(spec)
  return {'piece': name, 'strip': strip, 'spec': spec, 'spec_codes': codes,
          'spec_scale': np.float32(scale),
          'onset_frames': frames.astype(np.int32),
          'notehead_x': x.astype(np.float32),
          'onset_bars': (np.arange(n_notes) // 4 + 1).astype(np.int32)}


def synthetic_split(seed: int, n_pieces: int, n_notes=(30, 60)) -> list:
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  return [synthetic_piece(rng, f'synth{seed}_{i:03d}',
                          int(rng.integers(*n_notes)))
          for i in range(n_pieces)]


def with_synthetic_renderings(piece, factors=(0.8, 1.25)):
  """A synthetic piece plus extra renderings: its spectrogram resampled in
  time by each factor (a stand-in for tempo changes), onsets moved to match,
  in the ``pieces`` config's layout."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dccaflax import audio  # pylint: disable=g-import-not-at-top
  spec = piece['spec']
  extras, onsets = [], []
  for f in factors:
    t = int(round(spec.shape[1] / f))
    src = np.minimum((np.arange(t) * f).astype(int), spec.shape[1] - 1)
    extras.append(audio.quantize(spec[:, src] * f))
    onsets.append(np.minimum(np.round(piece['onset_frames'] / f),
                             t - 1).astype(np.int32))
  tags = ['a_t1.00'] + [f'a_t{f:.2f}' for f in factors]
  return dict(
      piece, renderings=','.join(tags),
      extra_codes=np.concatenate([c for c, _ in extras], axis=1),
      extra_frames=np.array([c.shape[1] for c, _ in extras], np.int32),
      extra_scales=np.array([s for _, s in extras], np.float32),
      extra_onsets=np.stack(onsets))


def write_synthetic_tfds(data_dir, splits: dict) -> None:
  """Writes ``{split: [piece]}`` as both TFDS configs of the builder (same
  features, names and version; the pieces in name order, without extra
  renderings unless they have them); the ``pairs`` excerpts are cut from each
  piece's float 'spec'."""
  from data_prep import nottingham_audio_sheet  # pylint: disable=g-import-not-at-top
  builder = nottingham_audio_sheet.NottinghamAudioSheet

  class SyntheticNottinghamAudioSheet(builder, skip_registration=True):
    """The builder fed with synthetic pieces instead of prepared ones."""
    name = builder.name
    pkg_dir_path = pathlib.Path(nottingham_audio_sheet.__file__).parent

    def _split_generators(self, dl_manager):
      return {s: self._generate_examples(s) for s in splits}

    def _pieces(self, split):
      return sorted(splits[split], key=lambda p: p['piece'])

  for config in ('pairs', 'pieces'):
    SyntheticNottinghamAudioSheet(
        config=config, data_dir=str(data_dir),
        file_format='array_record').download_and_prepare()


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory):
  """Synthetic TFDS data: 6 train, 3 valid, 2 test pieces; the data_dir."""
  return build_once(tmp_path_factory, 'synthetic_data', lambda d: (
      write_synthetic_tfds(d, {'train': synthetic_split(1, 6),
                               'valid': synthetic_split(2, 3),
                               'test': synthetic_split(3, 2)})))[0]


def tiny_train_config(data_dir, **overrides):
  """Narrow towers (width 0.25, h = 8), batch 32, 4 epochs of 8 steps,
  evaluated and checkpointed every 2: seconds per epoch on CPU.  The
  synthetic "spectrograms" are bands, not audio, so they go in as they are
  (``level_norm='none'``)."""
  from dccaflax import config as config_lib  # pylint: disable=g-import-not-at-top
  settings = dict(data_dir=str(data_dir), width=0.25, out_dim=8, epochs=4,
                  level_norm='none',
                  eval_every=2, batch_size=32, learning_rate=0.1,
                  val_subset=1000,
                  fit_pairs=25000, eval_batch_size=128, log_every=5, seed=0)
  settings.update(overrides)
  return config_lib.TrainConfig.from_flat(**settings)


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory, synthetic_data):
  """A 4-epoch tiny run on the synthetic data (uninterrupted): the workdir."""
  from dccaflax import training  # pylint: disable=g-import-not-at-top
  def train(workdir):
    training.train_and_evaluate(tiny_train_config(synthetic_data), str(workdir))
  return build_once(tmp_path_factory, 'trained', train)[0]


def restore_last_state(workdir):
  """The train state and meta of a workdir's last checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  from dccaflax import checkpoints  # pylint: disable=g-import-not-at-top
  from dccaflax import models  # pylint: disable=g-import-not-at-top
  from dccaflax import steps  # pylint: disable=g-import-not-at-top
  config = checkpoints.read_config(str(workdir))
  model = models.from_config(config)
  state = steps.create_train_state(
      jax.random.key(0), model, steps.make_optimizer())
  restored = checkpoints.restore_checkpoint(
      os.path.join(workdir, checkpoints.LAST_DIR), state, None)
  return restored['state'], restored['meta']


# --------------------------------------------------------------------------
# Real pieces and a tiny model that has seen them (index, query, identify and
# notebook tests).  The first 3 Nottingham test pieces are prepared as the
# train, valid AND test splits, so a few dozen SGD steps give a model that
# retrieves and identifies these pieces: the tests check the plumbing (front
# end, geometry, voting, files), not generalisation.
# --------------------------------------------------------------------------

REAL_PIECES = 3


def tiny_real_config(data_dir, **overrides):
  """Width 0.25, h = 16, batch 50, 3 epochs (39 steps) on the 3 pieces;
  the default (level-normalised) audio input."""
  from dccaflax import config as config_lib  # pylint: disable=g-import-not-at-top
  settings = dict(data_dir=str(data_dir), width=0.25, out_dim=16, epochs=3,
                  batch_size=50, learning_rate=0.05, val_subset=1000,
                  fit_pairs=25000, eval_every=3, eval_batch_size=256,
                  log_every=100, seed=0)
  settings.update(overrides)
  return config_lib.TrainConfig.from_flat(**settings)


@pytest.fixture(scope='session')
def real_midi(tmp_path_factory, midi_dir) -> pathlib.Path:
  """A MIDI folder whose train/valid/test each link the first 3 test pieces."""
  def link(root):
    files = sorted((midi_dir / 'test').glob('*.mid'))[:REAL_PIECES]
    for split in ('train', 'valid', 'test'):
      (root / split).mkdir()
      for f in files:
        (root / split / f.name).symlink_to(f)
  return build_once(tmp_path_factory, 'real_midi', link)[0]


@pytest.fixture(scope='session')
def real_data(tmp_path_factory, real_midi) -> pathlib.Path:
  """Both TFDS configs of ``real_midi`` (3 pieces per split): the data_dir."""
  from data_prep import build  # pylint: disable=g-import-not-at-top
  return build_once(tmp_path_factory, 'real_data', lambda data_dir: (
      build.prepare(str(real_midi), str(data_dir), limit=REAL_PIECES,
                    workers=2, progress=False)))[0]


@pytest.fixture(scope='session')
def leland_data(tmp_path_factory, real_midi) -> pathlib.Path:
  """The test split of ``real_midi`` engraved by Verovio in the held-out
  Leland font alone (the ``verovio_leland_pairs`` config): the data_dir."""
  from data_prep import build  # pylint: disable=g-import-not-at-top
  data_dir, report = build_once(tmp_path_factory, 'leland_data', lambda d: (
      build.prepare(str(real_midi), str(d), splits=('test',),
                    limit=REAL_PIECES, workers=2, progress=False,
                    engraving='verovio_leland')))
  assert report['ok'] == REAL_PIECES, report['skipped']
  return data_dir


@pytest.fixture(scope='session')
def real_model(tmp_path_factory, real_data) -> pathlib.Path:
  """``tiny_real_config`` trained on ``real_data``: the workdir."""
  from dccaflax import training  # pylint: disable=g-import-not-at-top
  def train(workdir):
    training.train_and_evaluate(tiny_real_config(real_data), str(workdir))
  return build_once(tmp_path_factory, 'real_model', train)[0]


@pytest.fixture(scope='session')
def real_index(tmp_path_factory, real_model, real_data) -> pathlib.Path:
  """An index of the test split of ``real_data`` by ``real_model``."""
  import dccaflax  # pylint: disable=g-import-not-at-top
  from dccaflax import index as index_lib  # pylint: disable=g-import-not-at-top
  def build(folder):
    index = index_lib.build(dccaflax.load(real_model), str(real_data), 'test',
                            workdir=str(real_model))
    return pathlib.Path(index_lib.save(index, folder / 'index.npz'))
  return build_once(tmp_path_factory, 'real_index', build)[1]


@pytest.fixture(scope='session')
def model(real_model):
  """``real_model`` loaded (``dccaflax.Model``)."""
  import dccaflax  # pylint: disable=g-import-not-at-top
  return dccaflax.load(real_model)


@pytest.fixture(scope='session')
def index(real_index):
  """``real_index`` loaded (``index.Index``)."""
  from dccaflax import index as index_lib  # pylint: disable=g-import-not-at-top
  return index_lib.load(real_index)


@pytest.fixture(scope='session')
def recordings(tmp_path_factory, real_midi) -> dict:
  """Recordings of the first test piece: {'name', 'wav' (the pipeline's
  rendering: FluidR3, 22,050 Hz mono), 'mp3' (made outside the pipeline:
  TimGM6mb, stereo 44.1 kHz, right channel at 70 %), 'mp3_mono' (what the
  mp3 should decode to: the pipeline's TimGM6mb rendering at the level of
  its mono mix, samples at 22,050 Hz), 'short' (1.2 s of the wav), 'silent'
  (5 s of zeros), 'garbage' (not audio)}."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import soundfile  # pylint: disable=g-import-not-at-top
  from data_prep import melody  # pylint: disable=g-import-not-at-top
  from data_prep import synth  # pylint: disable=g-import-not-at-top

  def build(root):
    path = sorted((real_midi / 'test').glob('*.mid'))[0]
    mel = melody.read_melody(str(path))
    out = {'name': mel.name}
    wave = synth.synthesize(mel.notes, synth.SynthParams())
    out['wav'] = root / 'fluidr3.wav'
    soundfile.write(out['wav'], wave, 22050)
    other = synth.synthesize(mel.notes,
                             synth.SynthParams(soundfont='timgm6mb'))
    import librosa  # pylint: disable=g-import-not-at-top
    up = librosa.resample(other, orig_sr=22050, target_sr=44100)
    stereo = np.stack([up, 0.7 * up], axis=1).astype(np.float32)
    out['mp3_mono'] = (0.85 * other).astype(np.float32)
    out['mp3'] = root / 'timgm6mb_stereo_44k.mp3'
    # Block-wise: libsndfile's MP3/Ogg encoders crash on one huge write.
    with soundfile.SoundFile(out['mp3'], 'w', 44100, 2, format='MP3') as f:
      for i in range(0, len(stereo), 8192):
        f.write(stereo[i:i + 8192])
    out['short'] = root / 'short.wav'
    soundfile.write(out['short'], wave[22050 * 10:22050 * 10 + 26460], 22050)
    out['silent'] = root / 'silent.wav'
    soundfile.write(out['silent'], np.zeros(5 * 22050, np.float32), 22050)
    out['garbage'] = root / 'garbage.wav'
    out['garbage'].write_bytes(b'this is not audio' * 100)
    return out
  return build_once(tmp_path_factory, 'recordings', build)[1]
