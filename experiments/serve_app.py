"""What the browser app (``experiments.serve``) does, without HTTP.

One ``App`` holds the model, the score pages being searched (a page index:
``dccaflax.page_index``) and the recordings given so far; each long step
runs as a ``Job`` in a thread, reporting its progress, and every step calls
the library functions the command-line tools call (the jobs and the
files: ``experiments.serve_session``):

* pages: ``page_index.pdf_pages`` for PDFs, ``page_index.build``
  (``experiments.index --pages``); or an index file, checked against the
  model (``index.Index.check_model``); or the pages of the bundled test
  pieces, engraved by LilyPond (``data_prep.engraving.lilypond.page_png``);
* a recording: ``frontends.read_span`` -> ``identify.identify``
  (``experiments.identify``), or a bundled test piece rendered by
  FluidSynth (``data_prep.synth``, as ``experiments.render``);
* one excerpt's top snippets: ``frontends.audio_query`` ->
  ``ranking.rank`` -> ``commands.draw_figure`` (``experiments.retrieve
  --figure``, the paper's Figure 3);
* a box drawn on a page: the page index's snippet nearest its centre queries
  the 3.2 s windows of the recordings (``identify.windows``).

Errors a person can cause (an unreadable file, a silent recording, a page
without staves, another model's index, a file over the size limit) are
``UserError``s whose message the page shows.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import threading
from typing import Optional

import numpy as np

from dccaflax import api
from dccaflax import audio
from dccaflax import frontends
from dccaflax import identify
from dccaflax import index as index_lib
from dccaflax import page_index
from dccaflax import ranking as ranking_lib
from dccaflax import snippets
from experiments import commands
from experiments import serve_session

PAGE_TYPES = ('.png', '.jpg', '.jpeg', '.pdf')
TOP = 10             # snippets / excerpts shown per query
UserError = serve_session.UserError
Progress = serve_session.Progress


# What the library raises about its input: shown as messages, not bugs.
_INPUT_ERRORS = (frontends.QueryError, audio.AudioError,
                 index_lib.IndexFileError, index_lib.ModelMismatchError,
                 FileNotFoundError, UserError)


@dataclasses.dataclass
class Recording:
  """A recording given to the app and what was computed from it."""
  id: int
  name: str
  path: str
  spec: np.ndarray            # (136, T) log spectrogram
  ident: Optional[identify.Identification] = None
  window_s: Optional[np.ndarray] = None      # (W,) centres of its windows
  window_emb: Optional[np.ndarray] = None    # (W, d) their embeddings


class App:
  """The app's state and operations (module doc); thread-safe."""

  def __init__(self, workdir: str, cache_dir: str, *, which: str = 'best',
               max_upload_mb: float = 50.0, n_pieces: int = 8,
               midi_dir: Optional[str] = None):
    self.workdir, self.which = workdir, which
    self.n_pieces, self.midi_dir = n_pieces, midi_dir
    self.files = serve_session.Files(cache_dir, max_upload_mb)
    self.jobs = serve_session.Jobs(_INPUT_ERRORS, self.files.public)
    self.model = None
    self.fingerprint: Optional[str] = None
    self.index: Optional[index_lib.Index] = None
    self.pages: list[dict] = []     # {'name', 'url', 'width', 'height'}
    self.collection = ''
    self.recordings: dict[int, Recording] = {}
    self.startup_job: Optional[int] = None   # loading the model (serve)
    self._lock = threading.Lock()

  # ----------------------------------------------------------------- model

  def load_model(self, progress: Progress) -> dict:
    progress(0.1, f'loading the model {self.workdir}')
    try:
      model = api.load(self.workdir, self.which)
    except (FileNotFoundError, ValueError) as e:
      raise UserError(f'cannot load a model from {self.workdir}: {e}') from e
    self.fingerprint = index_lib.model_fingerprint(model)
    self.model = model
    return {'model': self.workdir}

  def state(self) -> dict:
    """What the page shows: model, pages, recordings, bundled pieces."""
    return {'model': self.workdir, 'fingerprint': self.fingerprint,
            'ready': self.model is not None, 'startup_job': self.startup_job,
            'collection': self.collection,
            'pages': self.pages, 'pieces': self.bundled_pieces(),
            'soundfonts': _soundfonts(),
            'max_upload_mb': self.files.max_bytes / 1e6,
            'recordings': [{'id': r.id, 'name': r.name}
                           for r in self.recordings.values()]}

  def _need_model(self):
    if self.model is None:
      raise UserError('the model is still loading; try again in a moment')

  # ----------------------------------------------------------------- pages

  def index_pages(self, tokens: list[str], progress: Progress) -> dict:
    """Indexes uploaded pages (PNG, JPEG, PDF) as the pages searched."""
    self._need_model()
    if not tokens:
      raise UserError('no page given')
    folder = self.files.new_folder('pages')
    paths = []
    for i, token in enumerate(tokens):
      src = self.files.upload_path(token)
      name = os.path.basename(src)
      ext = os.path.splitext(name)[1].lower()
      if ext not in PAGE_TYPES:
        raise UserError(f'{name}: not a score page ({", ".join(PAGE_TYPES)})')
      progress(0.05 + 0.2 * i / len(tokens), f'reading {name}')
      if ext == '.pdf':
        paths += page_index.pdf_pages(src, folder)
      else:
        paths.append(os.path.join(folder, name))
        os.replace(src, paths[-1])
    return self.use_pages(paths, f'{len(tokens)} uploaded file(s)', progress)

  def bundled_pages(self, progress: Progress) -> dict:
    """The bundled test pieces' pages, engraved by LilyPond (cached)."""
    self._need_model()
    from data_prep.engraving import lilypond  # pylint: disable=g-import-not-at-top
    folder = os.path.join(self.files.root, 'bundled_pages')
    os.makedirs(folder, exist_ok=True)
    files = self._bundled_midi()
    paths = []
    for i, f in enumerate(files):
      mel = self._melody(f)
      path = os.path.join(folder, f'{mel.name}.png')
      progress(0.5 * i / len(files), f'engraving {mel.name} ({i + 1}/'
               f'{len(files)})')
      if not os.path.exists(path):
        lilypond.page_png(mel, path + '.tmp.png', title=mel.name)
        os.replace(path + '.tmp.png', path)
      paths.append(path)
    return self.use_pages(paths, f'the first {len(files)} bundled test '
                           'pieces (LilyPond)', progress, start=0.5)

  def use_pages(self, paths, label, progress, start=0.25) -> dict:
    """Indexes page images (``page_index.build``) as the pages searched."""
    def step(done, total, seconds):
      progress(start + (1 - start) * done / total,
               f'indexed {done}/{total} pages ({seconds:.0f} s)')
    progress(start, f'finding the staves of {len(paths)} page(s)')
    try:
      index = page_index.build(self.model, paths, workdir=self.workdir,
                               progress=step)
    except ValueError as e:     # frontends.QueryError included
      raise UserError(str(e)) from e
    self._set_pages(index, label)
    return {'pages': len(self.pages), 'snippets': len(index)}

  def open_index(self, token: str, progress: Progress) -> dict:
    """An index file (``experiments.index --pages``) as the pages searched.

    Raises:
      UserError: not an index, another model's, not of pages, or its
        pages are gone.
    """
    self._need_model()
    path = self.files.upload_path(token)
    progress(0.3, 'checking the index against the model')
    return self.use_index(path, label=os.path.basename(path))

  def use_index(self, path: str, label: str = '') -> dict:
    try:
      index = index_lib.load(path)
      index.check_model(self.model)
    except index_lib.ModelMismatchError as e:
      raise UserError(f'{label or path}: {e}') from e
    if not index.is_pages:
      raise UserError(f'{label or path}: an index of prepared pairs, not of '
                      'score pages; this app shows pages: index them with '
                      'python -m experiments.index --pages DIR')
    missing = [p for p in index.pieces
               if not os.path.isfile(os.path.join(index.data_dir, p))]
    if missing:
      raise UserError(f'{label or path}: its pages are not in '
                      f'{index.data_dir} ({", ".join(missing[:3])})')
    self._set_pages(index, f'{label or path} ({index.data_dir})')
    return {'pages': len(self.pages), 'snippets': len(index)}

  def _set_pages(self, index, label):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    pages = []
    for name in index.pieces:
      path = os.path.join(index.data_dir, name)
      with Image.open(path) as im:
        width, height = im.size
      pages.append({'name': name, 'width': width, 'height': height,
                    'url': self.files.link(path)})
    with self._lock:
      self.index, self.pages, self.collection = index, pages, label
      for r in self.recordings.values():
        r.ident = None

  # ------------------------------------------------------------ recordings

  def bundled_pieces(self) -> list[str]:
    try:
      return [os.path.basename(f)[:-4] for f in self._bundled_midi()]
    except (FileNotFoundError, ValueError):
      return []

  def _bundled_midi(self) -> list[str]:
    from data_prep import source  # pylint: disable=g-import-not-at-top
    root = source.resolve(self.midi_dir, work_dir=os.path.join(
        self.files.root, 'midi'))
    return sorted(glob.glob(os.path.join(root, 'test', '*.mid')))[
        :self.n_pieces]

  @staticmethod
  def _melody(path):
    from data_prep import melody  # pylint: disable=g-import-not-at-top
    return melody.read_melody(path)

  def render_piece(self, piece: str, soundfont: str, progress: Progress
                   ) -> dict:
    """A bundled test piece's melody rendered by FluidSynth, identified."""
    from data_prep import synth  # pylint: disable=g-import-not-at-top
    import soundfile  # pylint: disable=g-import-not-at-top
    files = {os.path.basename(f)[:-4]: f for f in self._bundled_midi()}
    if piece not in files:
      raise UserError(f'unknown bundled piece {piece!r}')
    progress(0.05, f'rendering {piece} with {soundfont}')
    try:
      params = synth.SynthParams(soundfont=synth.soundfont_path(
          soundfont, synth.ALL_SOUNDFONTS))
      wave = synth.synthesize(self._melody(files[piece]).notes, params)
    except synth.SynthError as e:
      raise UserError(f'{piece}: {e}') from e
    path = os.path.join(self.files.new_folder('rendered'), f'{piece}.wav')
    soundfile.write(path, wave, snippets.SAMPLE_RATE)
    return self._identify(path, f'{piece} ({soundfont})', progress, 0.3)

  def add_recording(self, token: str, progress: Progress) -> dict:
    """An uploaded recording (any format librosa reads), identified."""
    path = self.files.upload_path(token)
    return self._identify(path, os.path.basename(path), progress, 0.05)

  def _identify(self, path, name, progress, start) -> dict:
    self._need_model()
    if self.index is None:
      raise UserError('no score pages yet: upload pages or use the bundled '
                      'ones first')
    progress(start, f'reading {name}')
    spec = audio.spectrogram(frontends.read_span(path))   # refuses silence
    rec = Recording(self.files.next_id(), name, path, spec)
    progress(start + 0.3 * (1 - start), 'identifying: 3.2 s windows every '
             f'{identify.HOP_FRAMES / snippets.FPS:.2f} s against '
             f'{len(self.index):,} snippets')
    rec.ident = identify.identify(self.model, self.index, spec)
    with self._lock:
      self.recordings[rec.id] = rec
    return self.identification(rec)

  def identification(self, rec: Recording) -> dict:
    """JSON of a recording's identification: ranked pages, the timeline
    (the winning page's best snippet per window, boxed on the page)."""
    ident = rec.ident
    rows = ident.best_row
    boxes = page_index.snippet_boxes(self.index, np.maximum(rows, 0))
    timeline = [{'t': float(t), 'voting': bool(v), 'system': int(b),
                 'rank': int(r), 'box': [round(float(x), 1) for x in box]}
                for t, v, b, r, box, row in zip(
                    ident.centre_s, ident.voting, ident.best_bar,
                    ident.best_rank, boxes, rows) if row >= 0]
    return {'recording': {'id': rec.id, 'name': rec.name,
                          'url': self.files.link(rec.path),
                          'seconds': rec.spec.shape[1] / snippets.FPS},
            'ranking': [{'page': p, 'score': round(s, 3)}
                        for p, s in ident.ranking[:5]],
            'page': ident.ranking[0][0], 'timeline': timeline,
            'windows': len(ident.centre_s),
            'voting': int(ident.voting.sum())}

  def _recording(self, rec_id: int) -> Recording:
    with self._lock:
      if rec_id not in self.recordings:
        raise UserError(f'no recording {rec_id}')
      return self.recordings[rec_id]

  # ------------------------------------------------------------- queries

  def excerpt(self, rec_id: int, time_s: float, progress: Progress,
              top: int = TOP) -> dict:
    """The top snippets of the 3.2 s of a recording around ``time_s``, as
    the paper's Figure 3 and as boxes on the pages."""
    self._need_model()
    rec = self._recording(rec_id)
    progress(0.2, f'embedding the 3.2 s around {time_s:.1f} s')
    half = frontends.EXCERPT_S / 2
    start = max(0.0, time_s - half)
    q = frontends.audio_query(rec.path, start, time_s + half - start)
    emb = api.embed_audio(self.model, q.excerpt[None])
    ranking = ranking_lib.rank(self.index, emb, 'audio->sheet',
                               min(top, len(self.index)))
    progress(0.6, 'drawing the figure')
    folder = self.files.new_folder('figure')
    figure = os.path.join(folder, 'figure3.png')
    commands.draw_figure(ranking, self.index, q.excerpt, figure,
                         f'{rec.name} @ {q.centre_s:.2f} s')
    rows = [r.row for r in ranking.results]
    boxes = page_index.snippet_boxes(self.index, rows)
    return {'figure': self.files.link(figure), 'time_s': q.centre_s,
            'notes': list(q.notes),
            'results': [{'rank': r.rank, 'page': r.piece, 'system': r.bar,
                         'score': round(r.score, 3),
                         'box': [round(float(x), 1) for x in box]}
                        for r, box in zip(ranking.results, boxes)]}

  def box_query(self, page: str, box, progress: Progress,
                top: int = TOP) -> dict:
    """The recordings' 3.2 s windows that best match a box on a page.

    The page index's snippet whose centre lies in the box, nearest its
    centre, is the query; every window of every recording given so far is a
    candidate.
    """
    self._need_model()
    if self.index is None:
      raise UserError('no score pages yet')
    if not self.recordings:
      raise UserError('no recording yet: the box is matched against the '
                      'recordings given so far')
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    try:
      rows = self.index.rows_of(page)
    except KeyError as e:
      raise UserError(f'no page {page!r}') from e
    xy = self.index.page_xy[rows]
    inside = ((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0)
              & (xy[:, 1] <= y1))
    if not inside.any():
      raise UserError(f'{page}: no staff in the box: draw it around a '
                      'staff (its middle line inside the box)')
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    cand = rows[inside]
    row = int(cand[np.argmin(np.linalg.norm(xy[inside] - centre, axis=1))])
    recs = list(self.recordings.values())
    for i, rec in enumerate(recs):
      if rec.window_emb is None:
        progress(0.1 + 0.7 * i / len(recs), f'embedding the windows of '
                 f'{rec.name}')
        centres, excerpts, _ = identify.windows(rec.spec)
        rec.window_s = centres / snippets.FPS
        rec.window_emb = api.embed_audio(self.model, excerpts)
    owner = np.concatenate([[i] * len(r.window_s) for i, r in
                            enumerate(recs)])
    emb = np.concatenate([r.window_emb for r in recs])
    scores, hits = index_lib.search(self.index.sheet_emb[row][None], emb,
                                    min(top, len(emb)))
    results = []
    for rank, (score, hit) in enumerate(zip(scores[0], hits[0]), 1):
      rec = recs[owner[hit]]
      w = int(hit - np.flatnonzero(owner == owner[hit])[0])
      results.append({'rank': rank, 'recording': rec.id, 'name': rec.name,
                      'url': self.files.link(rec.path),
                      'time_s': round(float(rec.window_s[w]), 2),
                      'score': round(float(score), 3),
                      'image': self._spectrogram_png(
                          snippets.spec_excerpt(
                              rec.spec, int(rec.window_s[w] * snippets.FPS)))})
    box_px = page_index.snippet_boxes(self.index, [row])[0]
    return {'page': page, 'system': int(self.index.bar[row]),
            'query_box': [round(float(x), 1) for x in box_px],
            'results': results}

  def _spectrogram_png(self, excerpt: np.ndarray) -> str:
    """A (136, 100) excerpt as a PNG (low frequencies at the bottom)."""
    from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
    from PIL import Image  # pylint: disable=g-import-not-at-top
    peak = float(excerpt.max()) or 1.0
    rgb = colormaps['magma'](np.flipud(excerpt) / peak)[..., :3]
    path = os.path.join(self.files.new_folder('excerpt'), 'spec.png')
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return self.files.link(path)


def _soundfonts() -> list[str]:
  """The soundfonts a bundled piece can be rendered with (installed ones)."""
  try:
    from data_prep import synth  # pylint: disable=g-import-not-at-top
  except ImportError:
    return []
  out = []
  for name in dict.fromkeys([*synth.EVAL_SOUNDFONTS, *synth.SOUNDFONTS]):
    try:
      synth.soundfont_path(name, synth.ALL_SOUNDFONTS)
      out.append(name)
    except FileNotFoundError:
      pass
  return out
