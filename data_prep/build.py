"""Builds the TFDS configs of the Nottingham audio/sheet data set."""

from __future__ import annotations

import json
import os
import shutil
from typing import Sequence

from data_prep import performance
from data_prep import pipeline
from data_prep import source
from data_prep import synth
from dccaflax import sources


def prepare(midi_dir: str | None, data_dir: str, configs=('pairs', 'pieces'),
            splits=pipeline.SPLITS, limit: int | None = None,
            workers: int | None = None, download: bool = False,
            params: synth.SynthParams = synth.SynthParams(),
            progress: bool = True,
            renderings: Sequence[synth.SynthParams | performance.Draw] = (),
            extra_splits: Sequence[str] | None = None,
            collection: str = source.NOTTINGHAM,
            engraving: str = pipeline.LILYPOND) -> dict:
  """Builds a collection's TFDS configs; returns the report
  (``prep_report.json``, ``prep_report_<collection>.json``).

  Args:
    midi_dir: folder with train/valid/test (or Nottingham.zip); None: for
      Nottingham ``$DCCAFLAX_NOTTINGHAM``, else the data set bundled with
      the repository; for another collection its bundled folder
      (``source.resolve``).
    data_dir: output folder (TFDS data, ``cache/``, the report).
    configs: 'pairs' and/or 'pieces' (the collection's configs of these
      kinds: ``sources.config_name``).
    splits: which splits.
    limit: at most this many pieces per split.
    workers: processes (default: all cores).
    download: fetch Nottingham.zip when no data is given and none is
      bundled.
    params: the primary rendering (``pairs``, ``spec_codes``).
    progress: progress bar.
    renderings: extra renderings for the ``pieces`` config's ``extra_*``
      features (given to both configs, so both keep the same pieces): fixed
      ``SynthParams`` or drawn slots (``performance.Draw``).
    extra_splits: the splits that get them (default: all of ``splits``).
    collection: which of ``source.COLLECTIONS``.
    engraving: which of ``pipeline.ENGRAVINGS``; a held-out one only for
      the test split.

  Raises:
    pipeline.PrepareError: no data, an unknown collection, a missing folder, bundled files that do
      not match their manifest, no usable piece, a rendering repeating
      another's tag, a held-out instrument or soundfont for the train or
      valid split, an unknown engraving or a held-out one for those splits,
      or LilyPond unable to run.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_prep import nottingham_audio_sheet  # pylint: disable=g-import-not-at-top
  for split in splits:
    if split not in pipeline.SPLITS:
      raise pipeline.PrepareError(f'unknown split {split!r}; expected some '
                                  f'of {pipeline.SPLITS}')
  extra_splits = splits if extra_splits is None else tuple(extra_splits)
  unknown = sorted(set(extra_splits) - set(splits))
  if unknown:
    raise pipeline.PrepareError(f'extra renderings for {unknown}, which are '
                                f'not among the prepared splits {splits}')
  pipeline.check_engraving(engraving, splits)
  pipeline.check_renderings(params, (), splits)
  renderings = pipeline.check_renderings(params, renderings, extra_splits)
  midi_dir = source.resolve(midi_dir, os.path.join(data_dir, 'downloads'),
                            download, collection)
  builder = None
  for kind in configs:
    builder = nottingham_audio_sheet.NottinghamAudioSheet(
        config=sources.config_name(
            kind, sources.source_name(collection, engraving)),
        data_dir=data_dir, file_format='array_record',
        splits=splits, limit=limit, workers=workers, synth_params=params,
        renderings=renderings, extra_splits=extra_splits, progress=progress)
    # A prepare run always rebuilds from the (cached) pieces, so --pieces or
    # --splits changes take effect.
    shutil.rmtree(builder.data_dir, ignore_errors=True)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=midi_dir))
  with open(builder.report_path) as f:
    return json.load(f)
