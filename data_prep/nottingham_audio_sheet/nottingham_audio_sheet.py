"""TFDS builder: Nottingham melodies as aligned (sheet snippet, audio) data.

Configs:
  * ``pairs``: one example per onset, the paper's packaging: a 40x100 sheet
    snippet centred on the notehead and a 136x100 spectrogram excerpt centred
    on the onset frame.
  * ``pieces``: one example per piece: the unrolled score strip, the full
    spectrogram as 6-bit codes with its scale (about 45 bytes per frame on
    disk), onset frames and notehead x; for on-the-fly cropping.

Both are written as ``array_record`` with ``Tensor`` features (zlib), with
shuffling disabled, so examples stay in (piece name, onset) order: the
evaluation takes "the first 16,000" pairs of a split.  Generating and reading
need no TensorFlow; read with ``tfds.data_source``.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from data_prep import pipeline
from data_prep import source
from data_prep import synth
from dccaflax import audio
from dccaflax import snippets

_Z = dict(encoding=tfds.features.Encoding.ZLIB)


class NottinghamAudioSheet(tfds.core.GeneratorBasedBuilder):
  """Aligned sheet-music / audio pairs from the Nottingham MIDI data set."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'LilyPond 2.25 engraving, FluidSynth FluidR3 GM.'}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='pairs', description=(
          'One example per onset: (40, 100) sheet snippet, (136, 100) '
          'spectrogram excerpt.')),
      tfds.core.BuilderConfig(name='pieces', description=(
          'One example per piece: strip, 6-bit spectrogram, onsets.')),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download Nottingham.zip (Boulanger-Lewandowski, Bengio & Vincent, '
      'ICML 2012, the "Nottingham piano MIDI" train/valid/test split) from '
      f'{source.NOTTINGHAM_URL} and extract it; pass the folder that holds '
      'train/, valid/ and test/ as manual_dir.')

  def __init__(self, *, splits=pipeline.SPLITS, limit: int | None = None,
               cache_dir: str | None = None, workers: int | None = None,
               synth_params: synth.SynthParams = synth.SynthParams(),
               progress: bool = True, **kwargs):
    """Extra arguments (generation only; reading needs none of them).

    Args:
      splits: which splits to generate.
      limit: at most this many pieces per split (sorted by file name).
      cache_dir: stage cache (default ``<data_dir>/cache``).
      workers: processes for per-piece work (default: all cores).
      synth_params: soundfont, tempo factor, ... of the audio.
      progress: progress bar.
      **kwargs: for ``tfds.core.GeneratorBasedBuilder``.
    """
    self._splits, self._limit = tuple(splits), limit
    self._cache_dir, self._workers = cache_dir, workers
    self._synth_params, self._progress = synth_params, progress
    self.items: list[pipeline.Item] = []
    self._root = os.fspath(kwargs.get('data_dir') or tfds.core.constants.DATA_DIR)
    super().__init__(**kwargs)

  @property
  def report_path(self) -> str:
    """``prep_report.json`` beside the data: every input, ok or skipped."""
    return os.path.join(self._root, 'prep_report.json')

  def _info(self) -> tfds.core.DatasetInfo:
    if self.builder_config.name == 'pairs':
      features = {
          'sheet': tfds.features.Tensor(
              shape=(snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH),
              dtype=np.uint8, **_Z),
          'spec': tfds.features.Tensor(
              shape=(snippets.SPEC_BINS, snippets.SPEC_FRAMES),
              dtype=np.float32, **_Z),
          'piece': tfds.features.Text(),
          'onset_frame': tfds.features.Scalar(dtype=np.int32),
          'notehead_x': tfds.features.Scalar(dtype=np.float32),
          'bar': tfds.features.Scalar(dtype=np.int32),
      }
    else:
      features = {
          'piece': tfds.features.Text(),
          'strip': tfds.features.Tensor(
              shape=(snippets.STRIP_HEIGHT, None), dtype=np.uint8, **_Z),
          'spec_codes': tfds.features.Tensor(
              shape=(snippets.SPEC_BINS, None), dtype=np.uint8, **_Z),
          'spec_scale': tfds.features.Scalar(dtype=np.float32),
          'onset_frames': tfds.features.Tensor(shape=(None,), dtype=np.int32,
                                               **_Z),
          'notehead_x': tfds.features.Tensor(shape=(None,), dtype=np.float32,
                                             **_Z),
          'onset_bars': tfds.features.Tensor(shape=(None,), dtype=np.int32,
                                             **_Z),
      }
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        disable_shuffling=True,
        homepage='https://github.com/dccaflax/dccaflax',
        citation=(
            '@inproceedings{dorfer2016towards, title={Towards End-to-End '
            'Audio-Sheet-Music Retrieval}, author={Dorfer, Matthias and Arzt, '
            'Andreas and Widmer, Gerhard}, booktitle={NIPS End-to-end '
            'Learning for Speech and Audio Processing Workshop}, year={2016}}'
        ))

  def _split_generators(self, dl_manager):
    midi_dir = source.resolve(os.fspath(dl_manager.manual_dir),
                              os.path.join(self._root, 'downloads'))
    files = pipeline.list_midi(midi_dir, self._splits, self._limit)
    cache_dir = self._cache_dir or os.path.join(self._root, 'cache')
    self.items = pipeline.run(files, cache_dir, self._synth_params,
                              workers=self._workers, progress=self._progress)
    pipeline.write_report(self.items, self.report_path, midi_dir=midi_dir,
                          splits=list(files), limit=self._limit,
                          synth=self._synth_params.tag)
    ok = [it for it in self.items if it.status == 'ok']
    if not ok:
      raise pipeline.PrepareError(
          f'no usable piece among {len(self.items)} inputs in {midi_dir}: '
          + '; '.join(f'{it.name}: {it.reason}' for it in self.items[:5]))
    return {split: self._generate_examples(
        [it for it in ok if it.split == split]) for split in files}

  def _generate_examples(self, items):
    for it in sorted(items, key=lambda it: it.name):
      piece = pipeline.load_piece(it.piece_path)
      if self.builder_config.name == 'pieces':
        codes, scale = audio.quantize(piece.spec)
        yield piece.name, {
            'piece': piece.name, 'strip': piece.strip, 'spec_codes': codes,
            'spec_scale': np.float32(scale),
            'onset_frames': piece.onset_frames,
            'notehead_x': piece.notehead_x, 'onset_bars': piece.onset_bars}
        continue
      for frame, x, bar in zip(piece.onset_frames, piece.notehead_x,
                               piece.onset_bars):
        yield f'{piece.name}/{frame:06d}', {
            'sheet': snippets.sheet_snippet(piece.strip, x),
            'spec': snippets.spec_excerpt(piece.spec, frame),
            'piece': piece.name, 'onset_frame': np.int32(frame),
            'notehead_x': np.float32(x), 'bar': np.int32(bar)}
