r"""Data preparation speed, pieces/s per stage (no cache).

  python -m data_prep.benchmark [--midi_dir DIR] [--split test --n 16] \
      [--renderings] [--verovio]

Times each stage on ``--n`` pieces in one process, cold (nothing cached), and
estimates a full run (1,037 pieces) on all cores.  The real full-run time is
what ``python -m data_prep.prepare`` prints at the end.

--renderings also times the extra renderings per piece (synthesis,
spectrogram and onset frames, as the pipeline makes them): the five fixed
ones of ``--soundfonts fluidr3,timgm6mb --tempos 0.9,1.0,1.1`` against five
drawn performances (``--drawn 5``).

--verovio also times the Verovio engraving (``data_prep.engraving.verovio``:
MEI, engraving, SVG reading, rasterising, unrolling) of the same pieces in
each font, in core-seconds (this process's CPU time) and wall seconds per
piece.
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags

from data_prep import align
from data_prep import melody
from data_prep import performance
from data_prep import pipeline
from data_prep import source
from data_prep import synth
from data_prep.engraving import lilypond
from data_prep.engraving import lilypond_source
from data_prep.engraving import verovio
from dccaflax import audio

_MIDI_DIR = flags.DEFINE_string('midi_dir', None,
                                f'train/valid/test folder (default: ${source.ENV_VAR}, else '
                                'the bundled data set).')
_SPLIT = flags.DEFINE_string('split', 'test', 'Split to sample pieces from.')
_N = flags.DEFINE_integer('n', 16, 'Pieces to time.')
_OUT = flags.DEFINE_string('out', None, 'Also write the results as JSON here.')
_RENDERINGS = flags.DEFINE_bool('renderings', False, 'Also time fixed '
                                'against drawn extra renderings.')
_VEROVIO = flags.DEFINE_bool('verovio', False, 'Also time the Verovio '
                             'engraving in each font.')
N_FULL = 1037


def _timed(fn, *args):
  t = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - t


def run(midi_dir: str, split: str = 'test', n: int = 16) -> dict:
  """Seconds per piece of each stage and the estimated full-run minutes."""
  files = pipeline.list_midi(midi_dir, (split,), n)[split]
  mels, t_mel = _timed(lambda: [melody.read_melody(f) for f in files])
  _, t_src = _timed(lambda: [lilypond_source.lilypond_source(m) for m in mels])
  engs, t_eng = _timed(lilypond.engrave_many, mels)
  waves, t_syn = _timed(lambda: [synth.synthesize(m.notes) for m in mels])
  specs, t_spec = _timed(lambda: [audio.spectrogram(w) for w in waves])
  ok = 0
  t0 = time.perf_counter()
  for m, e, s in zip(mels, engs, specs):
    if not isinstance(e, Exception):
      try:
        align.align(m.notes, e.noteheads, s.shape[1])
        ok += 1
      except align.AlignmentError:
        pass
  t_align = time.perf_counter() - t0
  stages = {'melody': t_mel, 'lilypond_source': t_src, 'engrave': t_eng,
            'synthesize': t_syn, 'spectrogram': t_spec, 'align': t_align}
  per_piece = sum(stages.values()) / len(files)
  cores = os.cpu_count() or 1
  return {
      'pieces': len(files), 'aligned': ok, 'cores': cores,
      'seconds_per_piece': {k: v / len(files) for k, v in stages.items()},
      'pieces_per_s': {k: len(files) / v for k, v in stages.items()},
      'total_seconds_per_piece': per_piece,
      'estimated_full_run_minutes': per_piece * N_FULL / cores / 60,
  }


def renderings_run(midi_dir: str, split: str = 'test', n: int = 16) -> dict:
  """Seconds per extra rendering per piece: fixed (soundfont x tempo) vs
  drawn (``performance.Draw``), the same pieces, nothing cached."""
  files = pipeline.list_midi(midi_dir, (split,), n)[split]
  mels = [melody.read_melody(f) for f in files]
  fixed = [synth.SynthParams(sf, t) for sf in ('fluidr3', 'timgm6mb')
           for t in (0.9, 1.0, 1.1) if (sf, t) != ('fluidr3', 1.0)]
  drawn = performance.draws(len(fixed))
  out = {'fixed': 0.0, 'drawn': 0.0}
  for mel in mels:   # interleaved, so a change of load hits both alike
    _, note_index = align.pair_notes(mel.notes)
    for fixed_r, drawn_r in zip(fixed, drawn):
      for kind, params in (('fixed', fixed_r),
                           ('drawn', drawn_r.params_for(mel.name))):
        t0 = time.perf_counter()
        spec = audio.spectrogram(synth.synthesize(mel.notes, params))
        played, _ = synth.performed(mel.notes, params)
        align.onset_frames_at(played, note_index, 1.0, spec.shape[1])
        out[kind] += time.perf_counter() - t0
  out = {k: v / (len(mels) * len(fixed)) for k, v in out.items()}
  return {'pieces': len(mels), 'renderings': len(fixed),
          'seconds_per_rendering': out}


def verovio_run(midi_dir: str, split: str = 'test', n: int = 16) -> dict:
  """Core-seconds and wall seconds per piece of the Verovio engraving, per
  font, the same pieces, nothing cached."""
  files = pipeline.list_midi(midi_dir, (split,), n)[split]
  mels = [melody.read_melody(f) for f in files]
  verovio.engrave(mels[0], verovio.FONTS[0])   # warm up
  out = {}
  for font in verovio.FONTS:
    cpu, wall = time.process_time(), time.perf_counter()
    for mel in mels:
      verovio.engrave(mel, font)
    out[font] = {'core_s_per_piece': (time.process_time() - cpu) / len(mels),
                 'wall_s_per_piece': (time.perf_counter() - wall) / len(mels)}
  return {'pieces': len(mels), 'verovio': verovio.version(),
          'fonts': out}


def main(argv):
  del argv
  midi_dir = source.resolve(_MIDI_DIR.value, '/tmp/dccaflax_bench')
  r = run(midi_dir, _SPLIT.value, _N.value)
  print(f'{r["pieces"]} pieces from {_SPLIT.value} ({r["aligned"]} aligned), '
        'one process, nothing cached:')
  print(f'{"stage":<16} {"s/piece":>8} {"pieces/s":>9}')
  for k, v in r['seconds_per_piece'].items():
    print(f'{k:<16} {v:8.3f} {r["pieces_per_s"][k]:9.1f}')
  print(f'{"total":<16} {r["total_seconds_per_piece"]:8.3f}')
  print(f'estimated full run ({N_FULL} pieces, {r["cores"]} processes): '
        f'{r["estimated_full_run_minutes"]:.1f} min (+ TFDS writing)')
  if _RENDERINGS.value:
    rr = renderings_run(midi_dir, _SPLIT.value, _N.value)
    r['extra_renderings'] = rr
    print(f'extra renderings, {rr["renderings"]} per piece, s per rendering '
          'per piece: ' + ', '.join(
              f'{k} {v:.3f}' for k, v in rr['seconds_per_rendering'].items()))
  if _VEROVIO.value:
    vr = verovio_run(midi_dir, _SPLIT.value, _N.value)
    r['verovio'] = vr
    print(f'Verovio {vr["verovio"]} engraving, {vr["pieces"]} pieces, per '
          'piece: ' + ', '.join(
              f'{k} {v["core_s_per_piece"]:.3f} core-s '
              f'({v["wall_s_per_piece"]:.3f} s)' for k, v in
              vr['fonts'].items()))
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(r, f, indent=1)


if __name__ == '__main__':
  app.run(main)
