"""Where the Nottingham MIDI files come from: the repository, a folder, a
zip, or a download.

The data set is Boulanger-Lewandowski et al.'s Nottingham MIDI split (ICML
2012): 694/173/170 pieces in ``{train,valid,test}/*.mid``.  The repository
ships it in ``datasets/nottingham/`` (GPL v3, apart from the code; see the
README there), with a SHA-256 manifest that is checked on every use; it is
the default wherever a MIDI folder is needed.  ``--midi_dir`` or
``$DCCAFLAX_NOTTINGHAM`` override it with a folder holding train/valid/test
or a ``Nottingham.zip``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import urllib.request
import zipfile

from data_prep import pipeline
from dccaflax import sources

NOTTINGHAM_URL = 'http://www-etud.iro.umontreal.ca/~boulanni/Nottingham.zip'
ENV_VAR = 'DCCAFLAX_NOTTINGHAM'
DATASETS = str(pathlib.Path(__file__).resolve().parents[1] / 'datasets')
BUNDLED = os.path.join(DATASETS, 'nottingham')
NOTTINGHAM = sources.NOTTINGHAM
# The collections the repository ships: Nottingham, and the tune books
# converted from the music21 corpus (data_prep.convert_tunebooks).
COLLECTIONS = ('nottingham', 'oneills', 'airds')
MANIFEST = 'MANIFEST.sha256'
WHERE_TO_GET = (
    f'The Nottingham MIDI data set is not here: the repository keeps it in '
    f'{BUNDLED} (a clone of the repository has it). Else get Nottingham.zip '
    f'(Boulanger-Lewandowski et al., ICML 2012) from {NOTTINGHAM_URL}, then '
    'pass the zip or the folder holding train/valid/test by --midi_dir or the '
    f'environment variable {ENV_VAR}, or add --download to fetch it.')


def verify(root: str = BUNDLED) -> str:
  """Checks the MIDI files under ``root`` against ``root/MANIFEST.sha256``.

  Args:
    root: a data set folder holding the manifest and ``midi/``.

  Returns:
    ``root/midi``, the folder holding train/valid/test.

  Raises:
    pipeline.PrepareError: no manifest, or files missing, altered (another
      SHA-256) or not listed in it, each named.
  """
  manifest = os.path.join(root, MANIFEST)
  if not os.path.isfile(manifest):
    raise pipeline.PrepareError(f'{manifest}: no such file; it lists the '
                                'SHA-256 of every MIDI file. ' + WHERE_TO_GET)
  listed = {}
  with open(manifest, encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      digest, _, rel = line.rstrip('\n').partition('  ')
      if len(digest) != 64 or not rel:
        raise pipeline.PrepareError(f'{manifest}:{n}: not a "SHA-256  path" '
                                    f'line: {line.strip()!r}')
      listed[os.path.normpath(rel)] = digest
  problems = []
  for rel, digest in sorted(listed.items()):
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
      problems.append(f'{path}: missing')
      continue
    with open(path, 'rb') as f:
      if hashlib.sha256(f.read()).hexdigest() != digest:
        problems.append(f'{path}: altered (its SHA-256 is not the one in '
                        f'{MANIFEST})')
  midi = os.path.join(root, 'midi')
  for folder, _, names in os.walk(midi):
    for name in sorted(names):
      rel = os.path.relpath(os.path.join(folder, name), root)
      if name.lower().endswith(('.mid', '.midi')) and rel not in listed:
        problems.append(f'{os.path.join(root, rel)}: not listed in {MANIFEST}')
  if problems:
    shown = '\n  '.join(problems[:20])
    more = f'\n  ... and {len(problems) - 20} more' if len(problems) > 20 else ''
    raise pipeline.PrepareError(
        f'the MIDI files in {root} do not match {manifest} ({len(problems)} '
        f'problems):\n  {shown}{more}')
  return midi


def _split_root(folder: str) -> str | None:
  """The folder at or below ``folder`` that holds train/valid/test."""
  for root, dirs, _ in os.walk(folder):
    if all(s in dirs for s in pipeline.SPLITS):
      return root
  return None


def extract_zip(zip_path: str, dest: str) -> str:
  """Extracts a Nottingham zip into ``dest``; returns the split folder.

  Raises:
    pipeline.PrepareError: not a zip, an unsafe member path, or no
      train/valid/test folders inside.
  """
  if not zipfile.is_zipfile(zip_path):
    raise pipeline.PrepareError(f'{zip_path}: not a zip file')
  with zipfile.ZipFile(zip_path) as z:
    for name in z.namelist():
      target = os.path.realpath(os.path.join(dest, name))
      if not target.startswith(os.path.realpath(dest) + os.sep):
        raise pipeline.PrepareError(f'{zip_path}: unsafe member path {name!r}')
    z.extractall(dest)
  root = _split_root(dest)
  if root is None:
    raise pipeline.PrepareError(f'{zip_path}: no train/valid/test folders '
                                'inside')
  return root


def download_zip(dest_dir: str, url: str = NOTTINGHAM_URL) -> str:
  """Downloads the zip into ``dest_dir`` (once); returns its path."""
  os.makedirs(dest_dir, exist_ok=True)
  path = os.path.join(dest_dir, os.path.basename(url))
  if not os.path.exists(path):
    tmp = path + '.part'
    try:
      with urllib.request.urlopen(url, timeout=60) as r, open(tmp, 'wb') as f:
        shutil.copyfileobj(r, f)
    except OSError as e:
      raise pipeline.PrepareError(f'cannot download {url}: {e}. '
                                  + WHERE_TO_GET) from e
    os.replace(tmp, path)
  return path


def bundled(collection: str) -> str:
  """The repository's folder of a collection, e.g. ``datasets/oneills``.

  Raises:
    pipeline.PrepareError: not a known collection.
  """
  if collection not in COLLECTIONS:
    raise pipeline.PrepareError(f'unknown collection {collection!r}; the '
                                f'repository has {list(COLLECTIONS)}')
  return os.path.join(DATASETS, collection)


def report_path(data_dir: str, collection: str = NOTTINGHAM,
                engraving: str = pipeline.LILYPOND) -> str:
  """Where a collection's preparation report goes in ``data_dir``:
  ``prep_report.json`` (Nottingham by LilyPond), else
  ``prep_report_<collection>[_<engraving>].json`` (LilyPond's unnamed)."""
  parts = sources.name_parts(sources.source_name(collection, engraving))
  name = 'prep_report' + ''.join('_' + p for p in parts) + '.json'
  return os.path.join(os.fspath(data_dir), name)


def resolve(midi_dir: str | None, work_dir: str,
            download: bool = False, collection: str = NOTTINGHAM) -> str:
  """The folder holding train/valid/test.

  Args:
    midi_dir: folder or zip; None: for Nottingham ``$ENV_VAR``, else the
      bundled data set (checked against its manifest), else the download if
      ``download``; for another collection its bundled folder.
    work_dir: where a zip is extracted (and downloaded).
    download: fetch the zip when nothing else is there (Nottingham).
    collection: which of ``COLLECTIONS``.

  Raises:
    pipeline.PrepareError: nothing there, the path does not exist, an
      unknown collection, or the bundled files do not match their manifest.
  """
  if collection != NOTTINGHAM and not midi_dir:
    root = bundled(collection)
    if not os.path.isfile(os.path.join(root, MANIFEST)):
      raise pipeline.PrepareError(
          f'{root}: the {collection} MIDI files are not there; write them '
          'with python -m data_prep.convert_tunebooks (needs music21)')
    return verify(root)
  midi_dir = midi_dir or os.environ.get(ENV_VAR)
  if not midi_dir:
    if os.path.isdir(BUNDLED):
      return verify(BUNDLED)
    if not download:
      raise pipeline.PrepareError(WHERE_TO_GET)
    midi_dir = download_zip(work_dir)
  if not os.path.exists(midi_dir):
    raise pipeline.PrepareError(f'{midi_dir}: no such file or folder (a MIDI '
                                'folder or zip was expected). ' + WHERE_TO_GET)
  if os.path.isfile(midi_dir):
    return extract_zip(midi_dir, os.path.join(work_dir, 'extracted'))
  return _split_root(midi_dir) or midi_dir
