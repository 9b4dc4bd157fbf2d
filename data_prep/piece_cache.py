"""The data pipeline's cache: stage results under ``cache_dir`` by content.

Every stage result is stored by a SHA-256 of its inputs and of the source
code of the modules that compute it, so a re-run redoes only what changed
(a new soundfont re-synthesizes but does not re-engrave; an extra rendering
reuses the cached primary).  Stages: ``engrave`` (:func:`engrave_cached`:
a strip and its noteheads, or the piece's engraving error), ``audio``
(:func:`spectrogram_cached`) and ``pieces`` (an aligned :class:`Piece`:
:func:`piece_path`, :func:`save_piece`, :func:`load_piece`).  Deterministic
failures (an error in the piece's own LilyPond source) are cached too; a
failure of the machine (the engraver's ``uncached_errors``, e.g.
``lilypond.LilyPondRunError``: a timeout, a crash, a font error, no output)
never is, so the next run tries the piece again.  Every file is written
atomically: a killed run never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from typing import Sequence

import numpy as np

from data_prep import engraving as engraving_lib
from data_prep import synth as synth_lib
from dccaflax import audio


@dataclasses.dataclass(frozen=True)
class Piece:
  """An aligned piece, as stored in the cache.

  Attributes:
    name: file stem, e.g. 'ashover_simple_chords_11'.
    strip: ``(STRIP_HEIGHT, W)`` uint8 unrolled score, 255 = paper.
    spec: ``(136, T)`` float32 log spectrogram.
    onset_frames: ``(P,)`` int32 strictly increasing.
    notehead_x: ``(P,)`` float32 px in the strip.
    onset_bars: ``(P,)`` int32 1-based bar number of each onset (a pickup bar
      is bar 0).
    renderings: ``SynthParams.tag`` of every rendering, the primary (``spec``,
      ``onset_frames``) first, e.g. ``('fluidr3_t1.00', 'fluidr3_t0.90')``.
    extra_specs: ``E = len(renderings) - 1`` spectrograms ``(136, T_e)``
      float32 of the extra renderings, in tag order.
    extra_onsets: ``(E, P)`` int32: row ``e`` holds the onset frame of each
      of the ``P`` pairs in ``extra_specs[e]`` (non-decreasing).
    rendering_params: per rendering (primary first), its ``SynthParams`` as
      JSON (a drawn slot's drawn values).
  """
  name: str
  strip: np.ndarray
  spec: np.ndarray
  onset_frames: np.ndarray
  notehead_x: np.ndarray
  onset_bars: np.ndarray
  renderings: tuple[str, ...]
  extra_specs: tuple[np.ndarray, ...]
  extra_onsets: np.ndarray
  rendering_params: tuple[str, ...] = ()


def save_piece(path: str, name: str, strip, spec, al, bars,
                renderings: Sequence[synth_lib.SynthParams], extra_specs,
                extra_onsets) -> None:
  """Writes an aligned piece; the extra spectrograms concatenated in time."""
  frames = np.array([s.shape[1] for s in extra_specs], np.int32)
  extra = (np.concatenate(extra_specs, axis=1) if extra_specs else
           np.zeros((spec.shape[0], 0), np.float32))
  onsets = np.array(extra_onsets, np.int32).reshape(
      len(extra_specs), len(al.onset_frames))
  _save(path, name=np.array(name), strip=strip, spec=spec,
        onset_frames=al.onset_frames, notehead_x=al.notehead_x,
        onset_bars=bars, renderings=np.array([r.tag for r in renderings]),
        rendering_params=np.array([json.dumps(r.to_json(), sort_keys=True)
                                   for r in renderings]),
        extra_spec=extra.astype(np.float32, copy=False), extra_frames=frames,
        extra_onsets=onsets)


def load_piece(path: str) -> Piece:
  """Reads a cached aligned piece."""
  with np.load(path) as z:
    ends = np.cumsum(z['extra_frames'])
    extra = z['extra_spec']
    return Piece(name=str(z['name']), strip=z['strip'], spec=z['spec'],
                 onset_frames=z['onset_frames'], notehead_x=z['notehead_x'],
                 onset_bars=z['onset_bars'],
                 renderings=tuple(str(t) for t in z['renderings']),
                 extra_specs=tuple(extra[:, e - n:e] for n, e in
                                   zip(z['extra_frames'], ends)),
                 extra_onsets=z['extra_onsets'],
                 rendering_params=tuple(str(t) for t in z['rendering_params'])
                 if 'rendering_params' in z.files else ())


def _code_hash(*modules) -> str:
  h = hashlib.sha256()
  for m in modules:
    h.update(inspect.getsource(m).encode())
  return h.hexdigest()[:16]


_AUDIO_CODE = None
_ENGRAVER_CODES: dict[str, str] = {}


def _audio_code() -> str:
  global _AUDIO_CODE
  if _AUDIO_CODE is None:
    _AUDIO_CODE = _code_hash(synth_lib, audio)
  return _AUDIO_CODE


def _engraver_code(engraver) -> str:
  if engraver.name not in _ENGRAVER_CODES:
    _ENGRAVER_CODES[engraver.name] = _code_hash(*engraver.modules)
  return _ENGRAVER_CODES[engraver.name]


def _key(*parts) -> str:
  h = hashlib.sha256()
  for p in parts:
    h.update(repr(p).encode())
    h.update(b'\0')
  return h.hexdigest()[:32]


def _cache_path(cache_dir: str, stage: str, key: str) -> str:
  d = os.path.join(cache_dir, stage, key[:2])
  os.makedirs(d, exist_ok=True)
  return os.path.join(d, key + '.npz')


def _save(path: str, **arrays) -> None:
  tmp = path + f'.tmp{os.getpid()}.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)  # atomic: a killed run never leaves half a file


def _soundfont_id(name: str) -> tuple[str, int]:
  path = synth_lib.soundfont_path(name)
  return os.path.basename(path), os.path.getsize(path)


def engrave_cached(melodies, cache_dir: str, timeout_s: float,
                   engraving: str) -> list:
  """Engravings of melodies in an engraving, from cache or one run of its
  engraver over those not cached.

  Every outcome is cached except the engraver's ``uncached_errors``
  (failures of the machine) and a melody it cannot write (not engraved).

  Returns:
    Per melody, ``(key, strip, noteheads)`` or the exception.
  """
  engraver = engraving_lib.engraver_of(engraving)
  code = _engraver_code(engraver)
  settings = [engraver.settings(engraving, mel.name) for mel in melodies]
  keys, out, todo = [None] * len(melodies), [None] * len(melodies), []
  for i, mel in enumerate(melodies):
    try:
      src = engraver.source(mel, settings[i])
    except (ValueError, KeyError, engraving_lib.EngraveError) as e:
      out[i] = engraving_lib.EngraveError(f'{mel.name}: {e}')
      continue
    keys[i] = _key('engrave', engraver.name, code, engraver.version(),
                   settings[i], src)
    path = _cache_path(cache_dir, 'engrave', keys[i])
    if os.path.exists(path):
      with np.load(path, allow_pickle=False) as z:
        if 'error' in z:
          out[i] = engraving_lib.EngraveError(str(z['error']))
        else:
          out[i] = (keys[i], z['strip'], _unflatten(z['heads'], z['counts']))
    else:
      todo.append(i)
  if todo:
    results = engraver.engrave_many([melodies[i] for i in todo],
                                    [settings[i] for i in todo],
                                    timeout_s=timeout_s)
    for i, res in zip(todo, results):
      path = _cache_path(cache_dir, 'engrave', keys[i])
      if isinstance(res, Exception):
        if not isinstance(res, engraver.uncached_errors):
          _save(path, error=np.array(str(res)))
        out[i] = res
      else:
        heads, counts = _flatten(res.noteheads)
        _save(path, strip=res.strip, heads=heads, counts=counts)
        out[i] = (keys[i], res.strip, res.noteheads)
  return out


def _flatten(noteheads):
  counts = np.array([len(h) for h in noteheads], np.int32)
  heads = np.array([x for h in noteheads for x in h], np.float32)
  return heads, counts


def _unflatten(heads, counts):
  ends = np.cumsum(counts)
  return tuple(tuple(heads[e - c:e].tolist()) for c, e in zip(counts, ends))


def spectrogram_cached(mel, params: synth_lib.SynthParams, cache_dir: str
                       ) -> tuple[str, np.ndarray]:
  """The audio key and ``(136, T)`` spectrogram of a melody in a rendering,
  from cache or synthesized."""
  code = _audio_code()
  notes = tuple((n.pitch, n.start_s, n.end_s) for n in mel.notes)
  key = _key('audio', code, notes, dataclasses.astuple(params),
             _soundfont_id(params.soundfont))
  path = _cache_path(cache_dir, 'audio', key)
  if os.path.exists(path):
    with np.load(path) as z:
      return key, z['spec']
  spec, = synth_lib.render_spectrograms(mel.notes, params, name=mel.name)
  _save(path, spec=spec)
  return key, spec


def piece_path(cache_dir: str, name: str, engrave_key: str, audio_key: str,
               extra_keys: tuple[str, ...]) -> str:
  """Where the aligned piece of these stage results is cached.

  The name is part of the key: two files with the same melody (the data
  set has a few) must not share one cached piece under one name.  The extra
  audio keys are too: another set of renderings is another piece.
  """
  return _cache_path(cache_dir, 'pieces',
                     _key('piece', name, engrave_key, audio_key, extra_keys))
