"""Where the Nottingham MIDI files come from: a folder, a zip, or a download.

The data set is Boulanger-Lewandowski et al.'s Nottingham MIDI split (ICML
2012), published as ``Nottingham.zip`` holding ``Nottingham/{train,valid,
test}/*.mid`` (694/173/170 pieces).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
import zipfile

from data_prep import pipeline

NOTTINGHAM_URL = 'http://www-etud.iro.umontreal.ca/~boulanni/Nottingham.zip'
ENV_VAR = 'DCCAFLAX_NOTTINGHAM'
WHERE_TO_GET = (
    'The Nottingham MIDI data set is not here. Get Nottingham.zip (Boulanger-'
    f'Lewandowski et al., ICML 2012) from {NOTTINGHAM_URL}, then pass the zip '
    'or the folder holding train/valid/test by --midi_dir or the environment '
    f'variable {ENV_VAR}, or add --download to fetch it.')


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


def download(dest_dir: str, url: str = NOTTINGHAM_URL) -> str:
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


def resolve(midi_dir: str | None, work_dir: str) -> str:
  """The folder holding train/valid/test, from a folder, a zip or $ENV_VAR.

  Args:
    midi_dir: folder or zip; None to use the environment variable.
    work_dir: where a zip is extracted.

  Raises:
    pipeline.PrepareError: nothing given, or the path does not exist.
  """
  midi_dir = midi_dir or os.environ.get(ENV_VAR)
  if not midi_dir:
    raise pipeline.PrepareError(WHERE_TO_GET)
  if not os.path.exists(midi_dir):
    raise pipeline.PrepareError(f'{midi_dir}: no such file or folder. '
                                + WHERE_TO_GET)
  if os.path.isfile(midi_dir):
    return extract_zip(midi_dir, os.path.join(work_dir, 'extracted'))
  return _split_root(midi_dir) or midi_dir
