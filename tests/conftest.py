"""Shared fixtures: the Nottingham MIDI folder and small real pieces."""

import os
import pathlib

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[1]


def nottingham_midi_dir() -> pathlib.Path:
  """$DCCAFLAX_NOTTINGHAM, else ../shared/data/nottingham/midi beside the repo."""
  path = os.environ.get('DCCAFLAX_NOTTINGHAM') or (
      _REPO.parent / 'shared' / 'data' / 'nottingham' / 'midi')
  path = pathlib.Path(path)
  if not (path / 'test').is_dir():
    raise RuntimeError(
        f'Nottingham MIDI folder not found at {path}: set DCCAFLAX_NOTTINGHAM '
        'to the folder holding train/valid/test')
  return path


@pytest.fixture(scope='session')
def midi_dir() -> pathlib.Path:
  return nottingham_midi_dir()


@pytest.fixture(scope='session')
def test_pieces(midi_dir) -> list[pathlib.Path]:
  """The first few test-split pieces, sorted by name."""
  return sorted((midi_dir / 'test').glob('*.mid'))[:4]
