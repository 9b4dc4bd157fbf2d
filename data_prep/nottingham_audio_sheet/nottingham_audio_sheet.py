"""TFDS builder: folk-tune melodies as aligned (sheet snippet, audio) data.

Engravings: each collection is engraved by LilyPond (the paper's look), and
may be by Verovio in one of its fonts (``data_prep.engraving.verovio``), each
engraving in its own configs: ``verovio_bravura_pairs``,
``oneills_verovio_leipzig_pieces``, ... (``pipeline.ENGRAVINGS``; a held-out
one holds a test split only).

Collections: each collection of melodies has its own two configs, the same
features, its own train/valid/test split (``data_prep.source.COLLECTIONS``):
``pairs`` and ``pieces`` are Nottingham's (the paper's data, unchanged);
``oneills_pairs``, ``oneills_pieces``, ``airds_pairs`` and ``airds_pieces``
are the tune books converted from the music21 corpus
(``data_prep.convert_tunebooks``).  Training can draw from any mix of the
``*pieces`` configs, and evaluation names a collection
(``dccaflax.sources.config_name``).

Kinds of config:
  * ``pairs``: one example per onset, the paper's packaging: a 40x100 sheet
    snippet centred on the notehead and a 136x100 spectrogram excerpt centred
    on the onset frame.  The excerpt holds the spectrogram's 6-bit quantized
    values (as stored in ``pieces``), so both configs give identical windows.
  * ``pieces``: one example per piece: the unrolled score strip, the full
    spectrogram as 6-bit codes with its scale (about 45 bytes per frame on
    disk), onset frames and notehead x; for on-the-fly cropping.  Optionally
    (``renderings``, since 1.1.0) extra renderings of the same piece's audio
    for augmentation: other tempo factors and soundfonts, each with the onset
    frame of each of the same pairs (same notehead order).  Its features:

    ``piece`` (text), ``strip`` ``(48, W)`` uint8, ``spec_codes`` ``(136, T)``
    uint8 with ``spec_scale`` float32 (the primary rendering),
    ``onset_frames`` ``(P,)`` int32, ``notehead_x`` ``(P,)`` float32 px,
    ``onset_bars`` ``(P,)`` int32; ``renderings`` (text): comma-separated
    ``SynthParams.tag`` of all ``1 + E`` renderings, the primary first, e.g.
    ``fluidr3_t1.00,fluidr3_t0.90``; ``extra_codes`` ``(136, sum T_e)`` uint8:
    the 6-bit codes of the ``E`` extra spectrograms concatenated in time in
    tag order, ``extra_frames`` ``(E,)`` int32 their lengths ``T_e``,
    ``extra_scales`` ``(E,)`` float32 their scales (``audio.dequantize``
    each), ``extra_onsets`` ``(E, P)`` int32 the frame of pair ``i`` in
    rendering ``e`` (non-decreasing; two pairs may share a frame at a fast
    tempo).  Without extra renderings: shapes ``(136, 0)``, ``(0,)``,
    ``(0,)``, ``(0, P)``.  ``rendering_params`` (text, since 1.2.0): a JSON
    list of every rendering's ``SynthParams`` (soundfont, tempo factor,
    program, velocity, dynamics, accent, timing, seed, slot), the primary
    first: a drawn slot's values for this piece (``data_prep.performance``).

The ``pairs`` config holds the primary rendering only (the paper's evaluation
data), and both configs hold the same pieces: a piece one of whose renderings
fails is skipped in both.

Both are written as ``array_record`` with ``Tensor`` features (zlib), with
shuffling disabled, so examples stay in (piece name, onset) order: the
evaluation takes "the first 16,000" pairs of a split.  Generating and reading
need no TensorFlow; read with ``tfds.data_source``.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle

from data_prep import performance
from data_prep import piece_cache
from data_prep import pipeline
from data_prep import source
from data_prep import synth
from dccaflax import audio
from dccaflax import snippets
from dccaflax import sources

_Z = dict(encoding=tfds.features.Encoding.ZLIB)
MEM_BUFFER_BYTES = 8 << 30  # see _download_and_prepare


def features(kind: str) -> dict[str, tfds.features.FeatureConnector]:
  """The features of a kind of config, 'pairs' or 'pieces' (see the module
  doc)."""
  if kind == 'pairs':
    return {
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
  return {
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
      'renderings': tfds.features.Text(),
      'extra_codes': tfds.features.Tensor(
          shape=(snippets.SPEC_BINS, None), dtype=np.uint8, **_Z),
      'extra_frames': tfds.features.Tensor(shape=(None,), dtype=np.int32,
                                           **_Z),
      'extra_scales': tfds.features.Tensor(shape=(None,),
                                           dtype=np.float32, **_Z),
      'extra_onsets': tfds.features.Tensor(shape=(None, None),
                                           dtype=np.int32, **_Z),
      'rendering_params': tfds.features.Text(),
  }


def extra_features(tags: Sequence[str], extra_specs: Sequence[np.ndarray],
                   extra_onsets, n_pairs: int) -> dict[str, np.ndarray | str]:
  """The ``pieces`` features of a piece's renderings (see the module doc).

  Args:
    tags: ``SynthParams.tag`` of all renderings, the primary first (none:
      no tag is stored).
    extra_specs: the ``E`` extra spectrograms ``(136, T_e)`` float32.
    extra_onsets: ``(E, P)`` onset frames of the pairs in each of them.
    n_pairs: ``P``.

  Returns:
    'renderings' (all tags, comma-separated), 'extra_codes' ``(136, sum T_e)``
    uint8, 'extra_frames' ``(E,)`` int32, 'extra_scales' ``(E,)`` float32,
    'extra_onsets' ``(E, P)`` int32.
  """
  quantized = [audio.quantize(s) for s in extra_specs]
  codes = (np.concatenate([c for c, _ in quantized], axis=1) if quantized
           else np.zeros((snippets.SPEC_BINS, 0), np.uint8))
  return {
      'renderings': ','.join(tags),
      'extra_codes': codes,
      'extra_frames': np.array([s.shape[1] for s in extra_specs], np.int32),
      'extra_scales': np.array([sc for _, sc in quantized], np.float32),
      'extra_onsets': np.asarray(extra_onsets, np.int32).reshape(
          len(extra_specs), n_pairs),
  }


def piece_features(piece: piece_cache.Piece) -> dict[str, np.ndarray | str]:
  """A prepared piece as ``piece_examples`` takes it.

  Returns:
    The ``pieces`` features (the spectrogram as 6-bit codes) and 'spec'
    ``(136, T)`` float32: the codes' values, so both configs give identical
    windows (and the ``pairs`` excerpts are 6x smaller on disk than the raw
    float32).
  """
  codes, scale = audio.quantize(piece.spec)
  return {'piece': piece.name, 'strip': piece.strip,
          'spec': audio.dequantize(codes, scale), 'spec_codes': codes,
          'spec_scale': np.float32(scale),
          'onset_frames': piece.onset_frames,
          'notehead_x': piece.notehead_x, 'onset_bars': piece.onset_bars,
          'rendering_params': '[' + ','.join(piece.rendering_params) + ']',
          **extra_features(piece.renderings, piece.extra_specs,
                           piece.extra_onsets, len(piece.onset_frames))}


def piece_examples(kind: str, piece: dict) -> Iterator[tuple[str, dict]]:
  """The examples of one piece in a config, with their keys.

  Args:
    kind: 'pairs' or 'pieces'.
    piece: the ``pieces`` features (without 'renderings' and the 'extra_*'
      ones: no extra renderings) and 'spec' ``(136, T)`` float32, the
      spectrogram the ``pairs`` excerpts are cut from.

  Yields:
    ``pieces``: one ``(name, features)``; ``pairs``: per onset, in onset
    order, ``('name/000123', features)`` (the onset frame in 6 digits).
  """
  name = piece['piece']
  if kind == 'pieces':
    if 'renderings' not in piece:
      piece = {**piece, **extra_features((), (), (),
                                         len(piece['onset_frames']))}
    piece = {'rendering_params': '[]', **piece}
    yield name, {k: piece[k] for k in features(kind)}
    return
  for frame, x, bar in zip(piece['onset_frames'], piece['notehead_x'],
                           piece['onset_bars']):
    yield f'{name}/{frame:06d}', {
        'sheet': snippets.sheet_snippet(piece['strip'], x),
        'spec': snippets.spec_excerpt(piece['spec'], frame),
        'piece': name, 'onset_frame': np.int32(frame),
        'notehead_x': np.float32(x), 'bar': np.int32(bar)}


KIND_DESCRIPTIONS = {
    'pairs': ('One example per onset: (40, 100) sheet snippet, (136, 100) '
              'spectrogram excerpt.'),
    'pieces': ('One example per piece: strip, 6-bit spectrogram, onsets; '
               'extra renderings (tempo factors x soundfonts) with their '
               'onsets.'),
}


@dataclasses.dataclass(eq=False)
class AudioSheetConfig(tfds.core.BuilderConfig):
  """A config: a collection's pairs or pieces in one engraving."""
  collection: str = source.NOTTINGHAM
  kind: str = 'pairs'
  engraving: str = pipeline.LILYPOND


class NottinghamAudioSheet(tfds.core.GeneratorBasedBuilder):
  """Aligned sheet-music / audio pairs from the Nottingham MIDI data set."""

  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {
      '1.0.0': 'LilyPond 2.25 engraving, FluidSynth FluidR3 GM.',
      '1.1.0': ('pieces: extra audio renderings (tempo factors x soundfonts) '
                'for augmentation: renderings, extra_codes, extra_frames, '
                'extra_scales, extra_onsets (empty without extras); pairs '
                'unchanged.'),
      '1.2.0': ('pieces: rendering_params (JSON of every rendering\'s '
                'synthesis parameters, drawn slots\' values per piece); '
                'pairs unchanged.'),
  }
  BUILDER_CONFIGS = [
      AudioSheetConfig(
          name=sources.config_name(
              kind, sources.source_name(collection, engraving)),
          collection=collection, kind=kind, engraving=engraving,
          description=f'{collection}, {engraving}: ' + KIND_DESCRIPTIONS[kind])
      for collection in source.COLLECTIONS
      for engraving in pipeline.ENGRAVINGS for kind in ('pairs', 'pieces')
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download Nottingham.zip (Boulanger-Lewandowski, Bengio & Vincent, '
      'ICML 2012, the "Nottingham piano MIDI" train/valid/test split) from '
      f'{source.NOTTINGHAM_URL} and extract it; pass the folder that holds '
      'train/, valid/ and test/ as manual_dir.')

  def __init__(self, *, splits=pipeline.SPLITS, limit: int | None = None,
               cache_dir: str | None = None, workers: int | None = None,
               synth_params: synth.SynthParams = synth.SynthParams(),
               renderings: Sequence[synth.SynthParams |
                                    performance.Draw] = (),
               extra_splits: Sequence[str] | None = None,
               progress: bool = True, **kwargs):
    """Extra arguments (generation only; reading needs none of them).

    Args:
      splits: which splits to generate.
      limit: at most this many pieces per split (sorted by file name).
      cache_dir: stage cache (default ``<data_dir>/cache``).
      workers: processes for per-piece work (default: all cores).
      synth_params: soundfont, tempo factor, ... of the primary rendering
        (the audio of ``pairs`` and of ``spec_codes``).
      renderings: extra renderings of every piece (``pieces``' ``extra_*``
        features), in this order: fixed ``SynthParams`` or drawn slots
        (``performance.Draw``); each tag must differ from the primary's and
        the others'.  Pass the same to both configs: a piece one of them
        fails for is skipped.
      extra_splits: the splits that get the extra renderings (default:
        all).
      progress: progress bar.
      **kwargs: for ``tfds.core.GeneratorBasedBuilder``.

    Raises:
      pipeline.PrepareError: a rendering repeating the primary's or another
        one's tag.
    """
    self._splits, self._limit = tuple(splits), limit
    self._cache_dir, self._workers = cache_dir, workers
    self._synth_params, self._progress = synth_params, progress
    self._renderings = pipeline.check_renderings(synth_params, renderings)
    self._extra_splits = extra_splits
    self.items: list[pipeline.Item] = []
    self._root = os.fspath(kwargs.get('data_dir') or tfds.core.constants.DATA_DIR)
    super().__init__(**kwargs)

  @property
  def report_path(self) -> str:
    """The report beside the data, every input ok or skipped:
    ``prep_report.json`` (Nottingham), ``prep_report_<collection>.json``."""
    return source.report_path(self._root, self.builder_config.collection,
                              self.builder_config.engraving)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            features(self.builder_config.kind)),
        disable_shuffling=True,
        homepage='https://github.com/dccaflax/dccaflax',
        citation=(
            '@inproceedings{dorfer2016towards, title={Towards End-to-End '
            'Audio-Sheet-Music Retrieval}, author={Dorfer, Matthias and Arzt, '
            'Andreas and Widmer, Gerhard}, booktitle={NIPS End-to-end '
            'Learning for Speech and Audio Processing Workshop}, year={2016}}'
        ))

  def _download_and_prepare(self, dl_manager, download_config=None):
    # TFDS buffers a split's serialized examples in memory and spills them to
    # disk through tf.io.gfile past 1 GB, which needs TensorFlow. The train
    # split of `pairs` is about 1.1 GB, so the buffer limit is raised while
    # generating (memory stays well under the machine's 24 GB).
    limit = shuffle.MAX_MEM_BUFFER_SIZE
    shuffle.MAX_MEM_BUFFER_SIZE = max(limit, MEM_BUFFER_BYTES)
    try:
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      shuffle.MAX_MEM_BUFFER_SIZE = limit

  def _split_generators(self, dl_manager):
    manual = dl_manager.manual_dir
    midi_dir = source.resolve(os.fspath(manual) if manual else None,
                              os.path.join(self._root, 'downloads'),
                              collection=self.builder_config.collection)
    files = pipeline.list_midi(midi_dir, self._splits, self._limit)
    cache_dir = self._cache_dir or os.path.join(self._root, 'cache')
    # Pieces stream in from the worker processes while this process writes
    # the examples of those already done.
    self._stream = pipeline.run_iter(files, cache_dir, self._synth_params,
                                     workers=self._workers,
                                     progress=self._progress,
                                     renderings=self._renderings,
                                     extra_splits=self._extra_splits,
                                     engraving=self.builder_config.engraving)
    self._pending = {split: collections.deque() for split in files}
    self._report_extra = dict(midi_dir=midi_dir, splits=list(files),
                              limit=self._limit,
                              synth=self._synth_params.tag,
                              engraving=self.builder_config.engraving,
                              renderings=[r.tag for r in (
                                  self._synth_params, *self._renderings)],
                              extra_splits=(list(files) if self._extra_splits
                                            is None else
                                            list(self._extra_splits)))
    self.items = []
    return {split: self._generate_examples(split) for split in files}

  def _next_item(self, split: str) -> pipeline.Item | None:
    """The next item of ``split``, in file order; None when none is left."""
    while not self._pending[split]:
      it = next(self._stream, None)
      if it is None:
        self._finish()
        return None
      self.items.append(it)
      self._pending[it.split].append(it)
    return self._pending[split].popleft()

  def _finish(self) -> None:
    """After the last piece: the report, and an error if nothing is usable."""
    if getattr(self, '_finished', False):
      return
    self._finished = True
    pipeline.write_report(self.items, self.report_path, **self._report_extra)
    if not any(it.status == 'ok' for it in self.items):
      raise pipeline.PrepareError(
          f'no usable piece among {len(self.items)} inputs in '
          f'{self._report_extra["midi_dir"]} (see {self.report_path}): '
          + '; '.join(f'{it.name}: {it.reason}' for it in self.items[:5]))

  def _pieces(self, split: str) -> Iterator[dict]:
    """The prepared pieces of a split, in file order (``piece_features``)."""
    while (it := self._next_item(split)) is not None:
      if it.status == 'ok':
        yield piece_features(piece_cache.load_piece(it.piece_path))

  def _generate_examples(self, split: str):
    for piece in self._pieces(split):
      yield from piece_examples(self.builder_config.kind, piece)
