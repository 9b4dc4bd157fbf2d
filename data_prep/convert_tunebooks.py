r"""Converts the tune books to MIDI and splits them by melody group.

  python -m data_prep.convert_tunebooks [--collections oneills,airds] \
      [--out datasets] [--workers N]

For each collection of ``tunebooks.COLLECTIONS`` (read from the installed
``music21`` corpus), writes ``OUT/<name>/midi/{train,valid,test}/*.mid``
(the form ``data_prep.prepare --collection <name>`` reads),
``OUT/<name>/MANIFEST.sha256`` and ``OUT/<name>/conversion_report.json``:
every tune of the book, converted (with its split, its melody group and its
near-duplicates) or skipped (with the reason).  ``OUT/melody_groups.json``
lists every group of near-duplicate melodies across all collections,
Nottingham's included (``data_prep.tunesplits``), with the split each got.

Nottingham's split is the paper's and is read, not made: a group holding a
Nottingham tune takes its split.  A rerun with the same music21 gives the
same files.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from absl import app
from absl import flags

from data_prep import melody as melody_lib
from data_prep import pipeline
from data_prep import source
from data_prep import tunebooks
from data_prep import tunesplits

_COLLECTIONS = flags.DEFINE_list(
    'collections', sorted(tunebooks.COLLECTIONS),
    f'Tune books to convert, of {sorted(tunebooks.COLLECTIONS)}.')
_OUT = flags.DEFINE_string('out', source.DATASETS, 'Output folder (one '
                           'sub-folder per collection).')
_WORKERS = flags.DEFINE_integer('workers', None, 'Processes (default: all '
                                'cores).')
_LIMIT = flags.DEFINE_integer('limit', None, 'At most N tunes per book (for '
                              'a quick look; the splits then differ).')


def nottingham_melodies() -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
  """Pitches and split of every bundled Nottingham melody, by piece name."""
  midi = source.verify(source.BUNDLED)
  files = pipeline.list_midi(midi)
  pitches, split = {}, {}
  for s, paths in files.items():
    for path in paths:
      mel = melody_lib.read_melody(path)
      pitches[mel.name] = tuple(n.pitch for n in mel.notes)
      split[mel.name] = s
  return pitches, split


def write_collection(out: str, collection: tunebooks.Collection, tunes,
                     split: dict, pairs_of: dict, group_of: dict,
                     extra: dict) -> dict:
  """Writes a collection's MIDI files, manifest and report; returns the
  report's summary."""
  import music21  # pylint: disable=g-import-not-at-top
  root = os.path.join(out, collection.name)
  shutil.rmtree(os.path.join(root, 'midi'), ignore_errors=True)
  manifest = []
  counts = {s: 0 for s in tunesplits.SPLITS}
  rows = []
  for t in tunes:
    row = t.row()
    if t.status == 'ok':
      s = split[t.name]
      rel = os.path.join('midi', s, t.name + '.mid')
      os.makedirs(os.path.join(root, 'midi', s), exist_ok=True)
      with open(os.path.join(root, rel), 'wb') as f:
        f.write(t.midi)
      manifest.append(f'{tunebooks.content_hash(t.midi)}  {rel}')
      counts[s] += 1
      row.update(split=s, group=group_of[t.name],
                 near_duplicates=pairs_of.get(t.name, []))
    rows.append(row)
  with open(os.path.join(root, source.MANIFEST), 'w') as f:
    f.write('\n'.join(sorted(manifest, key=lambda l: l.split('  ')[1]))
            + '\n')
  summary = {'collection': collection.name, 'title': collection.title,
             'corpus': f'music21 {music21.__version__} corpus/'
                       f'{collection.corpus_dir}',
             **tunebooks.summary(tunes), 'splits': counts,
             'tempo_qpm': tunebooks.TEMPO_QPM, **extra}
  with open(os.path.join(root, 'conversion_report.json'), 'w') as f:
    json.dump({**summary, 'tunes': rows}, f, indent=1)
  return summary


def main(argv):
  del argv
  unknown = sorted(set(_COLLECTIONS.value) - set(tunebooks.COLLECTIONS))
  if unknown:
    raise app.UsageError(f'unknown collections {unknown}; have '
                         f'{sorted(tunebooks.COLLECTIONS)}')
  t0 = time.time()
  workers = _WORKERS.value or os.cpu_count() or 1
  converted = {}
  for name in _COLLECTIONS.value:
    tunes = tunebooks.convert_collection(tunebooks.COLLECTIONS[name],
                                         limit=_LIMIT.value, workers=workers)
    converted[name] = tunes
    for t in tunes:
      if t.status != 'ok':
        print(f'WARNING: skipped {name} {t.file} X:{t.number} '
              f'({t.title}): {t.reason}', file=sys.stderr)
    print(f'{name}: {json.dumps(tunebooks.summary(tunes))}', flush=True)
  pitches, fixed = nottingham_melodies()
  for tunes in converted.values():
    for t in tunes:
      if t.status == 'ok':
        pitches[t.name] = t.pitches   # as the pipeline reads its MIDI
  prints = {n: tunesplits.fingerprint(p) for n, p in pitches.items()}
  pairs = tunesplits.near_duplicates(prints)
  groups = tunesplits.groups(prints, pairs)
  split, conflicts = tunesplits.assign(groups, fixed)
  pairs_of: dict[str, list] = {}
  for a, b, s in pairs:
    pairs_of.setdefault(a, []).append([b, round(s, 3)])
    pairs_of.setdefault(b, []).append([a, round(s, 3)])
  group_of = {n: g[0] for g in groups for n in g}
  settings = {'n_gram': tunesplits.N_GRAM, 'threshold': tunesplits.THRESHOLD,
              'common_df': tunesplits.COMMON_DF,
              'split_fractions': list(tunesplits.SPLIT_FRACTIONS)}
  for name, tunes in converted.items():
    s = write_collection(_OUT.value, tunebooks.COLLECTIONS[name], tunes,
                         split, pairs_of, group_of, {'screen': settings})
    print(f'{name}: {s["ok"]} of {s["inputs"]} tunes written, splits '
          f'{s["splits"]}')
  multi = [g for g in groups if len(g) > 1]
  with open(os.path.join(_OUT.value, 'melody_groups.json'), 'w') as f:
    json.dump({'screen': settings, 'groups': [
        {'members': g, 'split': split[g[0]],
         'pairs': [[a, b, round(s, 3)] for a, b, s in pairs
                   if a in g]} for g in multi],
               'nottingham_conflicts': conflicts}, f, indent=1)
  print(f'{len(multi)} groups of near-duplicate melodies '
        f'({sum(len(g) for g in multi)} melodies), '
        f'{len(conflicts)} that Nottingham\'s own split puts in two splits; '
        f'{time.time() - t0:.0f} s')


if __name__ == '__main__':
  app.run(main)
