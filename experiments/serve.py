r"""A page in the browser: a recording and score pages -> where the music is.

  python -m experiments.serve [--model nottingham_paper] \
      [--pages DIR_OR_IMAGES | --index pages.npz] [--port 8000]

then open http://127.0.0.1:8000/ (``--model`` is ``--workdir``, as the
other commands call it).  Give it score pages (PNG, JPEG, or PDF;
or the bundled test pieces' pages, engraved on the fly; or --pages /
--index at start: ``experiments.index --pages``) and a recording (any file
librosa reads; or a bundled test piece rendered on the fly): it names the
page the recording plays, highlights the matching place on the page as
the recording plays (the ``experiments.identify`` timeline), draws the top
snippets of any 3.2 s excerpt (the paper's Figure 3), and a box drawn on a
page finds the matching 3.2 s of the recordings.  Every long step shows its
progress; bad input is a message on the page.

The server is the standard library's ``http.server`` with one static page
(``serve_page.html``, plain JavaScript): no web framework to install, and
the page draws the highlights and boxes itself.  What it does is
``experiments.serve_app`` (its jobs and files: ``serve_session``); reading
PDFs needs the ``demo`` extra (``pip install -e '.[demo]'``: pypdfium2).
It listens on 127.0.0.1 only unless --host says otherwise: it is a local
tool, with no authentication.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import sys
import tempfile
import urllib.parse

from absl import app
from absl import flags

from dccaflax import page_index
from experiments import serve_app

_WORKDIR = flags.DEFINE_string('workdir', 'nottingham_paper', 'Trained '
                               'model: a workdir, or the name of a shipped '
                               'model (models/).')
flags.DEFINE_alias('model', 'workdir')
_PAGES = flags.DEFINE_list('pages', None, 'Score pages to search from the '
                           'start: a folder of images or images in one '
                           'folder (indexed at start).')
_INDEX = flags.DEFINE_string('index', None, 'A page index to search from '
                             'the start (experiments.index --pages).')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on.')
_PORT = flags.DEFINE_integer('port', 8000, 'Port to listen on (0: any '
                             'free one).')
_MAX_UPLOAD_MB = flags.DEFINE_float('max_upload_mb', 50.0, 'Largest file '
                                    'accepted (MB).')
_PIECES = flags.DEFINE_integer('pieces', 8, 'Bundled test pieces offered '
                               '(the first N of the test split).')
_MIDI_DIR = flags.DEFINE_string('midi_dir', None, 'Nottingham MIDI folder '
                                '(default: the bundled one).')
_CACHE_DIR = flags.DEFINE_string(
    'cache_dir', os.path.join(tempfile.gettempdir(), 'dccaflax_serve'),
    'Where uploads, renderings and figures are kept.')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'last'], 'Checkpoint.')

PAGE = os.path.join(os.path.dirname(__file__), 'serve_page.html')
_TYPES = {'.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg',
          '.wav': 'audio/wav', '.mp3': 'audio/mpeg', '.ogg': 'audio/ogg',
          '.flac': 'audio/flac', '.html': 'text/html; charset=utf-8'}


def handler(the_app: serve_app.App):
  """The request handler class bound to an ``App``."""

  class Handler(http.server.BaseHTTPRequestHandler):
    """GET: the page, /api/state, /api/job/N, /files/...; POST: /api/..."""

    def log_message(self, fmt, *args):  # quieter than stderr per request
      logging.debug('%s ' + fmt, self.address_string(), *args)

    def _send(self, code: int, body: bytes, kind: str) -> None:
      self.send_response(code)
      self.send_header('Content-Type', kind)
      self.send_header('Content-Length', str(len(body)))
      self.send_header('Cache-Control', 'no-store')
      try:
        self.end_headers()
        self.wfile.write(body)
      except (BrokenPipeError, ConnectionResetError):   # the browser left
        logging.debug('%s left before %s', self.address_string(), self.path)

    def _json(self, obj, code: int = 200) -> None:
      self._send(code, json.dumps(obj).encode(), 'application/json')

    def do_GET(self):  # pylint: disable=invalid-name
      path = urllib.parse.urlparse(self.path).path
      try:
        if path in ('/', '/index.html'):
          with open(PAGE, 'rb') as f:
            self._send(200, f.read(), _TYPES['.html'])
        elif path == '/api/state':
          self._json(the_app.state())
        elif m := re.fullmatch(r'/api/job/(\d+)', path):
          self._json(the_app.jobs.get(int(m.group(1))))
        elif path.startswith('/files/'):
          local = the_app.files.path(urllib.parse.unquote(path[7:]))
          with open(local, 'rb') as f:
            self._send(200, f.read(), _TYPES.get(
                os.path.splitext(local)[1].lower(),
                'application/octet-stream'))
        else:
          self._json({'error': f'no such page {path}'}, 404)
      except serve_app.UserError as e:
        self._json({'error': str(e)}, 404)

    def do_POST(self):  # pylint: disable=invalid-name
      path = urllib.parse.urlparse(self.path).path
      size = int(self.headers.get('Content-Length') or 0)
      try:
        if path == '/api/upload':
          name = urllib.parse.unquote(self.headers.get('X-Filename', ''))
          if size > the_app.files.max_bytes:  # read and dropped, then refused
            left = size
            while left > 0:
              chunk = self.rfile.read(min(1 << 20, left))
              left = left - len(chunk) if chunk else 0
            raise serve_app.UserError(the_app.files.too_big(name, size))
          token = the_app.files.save_upload(name, self.rfile.read(size))
          self._json({'token': token})
          return
        args = json.loads(self.rfile.read(size) or b'{}')
        jobs = {
            '/api/pages': ('indexing the pages', lambda p: the_app.index_pages(
                list(args['tokens']), p)),
            '/api/bundled_pages': ('engraving and indexing the bundled pages',
                                   the_app.bundled_pages),
            '/api/index': ('opening the index', lambda p: the_app.open_index(
                args['token'], p)),
            '/api/recording': ('identifying the recording',
                               lambda p: the_app.add_recording(
                                   args['token'], p)),
            '/api/render': ('rendering and identifying',
                            lambda p: the_app.render_piece(
                                args['piece'], args['soundfont'], p)),
            '/api/excerpt': ('finding the excerpt in the pages',
                             lambda p: the_app.excerpt(
                                 int(args['recording']),
                                 float(args['time_s']), p)),
            '/api/box': ('finding the box in the recordings',
                         lambda p: the_app.box_query(
                             args['page'], args['box'], p)),
        }
        if path not in jobs:
          self._json({'error': f'no such action {path}'}, 404)
          return
        title, fn = jobs[path]
        self._json({'job': the_app.jobs.start(title, fn)})
      except serve_app.UserError as e:
        self._json({'error': str(e)}, 400)
      except (ValueError, KeyError, TypeError) as e:
        self._json({'error': f'bad request to {path}: {e!r}'}, 400)

  return Handler


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _PAGES.value and _INDEX.value:
    sys.exit('error: give --pages or --index, not both')
  pages = None
  if _PAGES.value:
    try:
      pages = page_index.page_paths(_PAGES.value)
    except ValueError as e:
      sys.exit(f'error: --pages: {e}')
  the_app = serve_app.App(_WORKDIR.value, _CACHE_DIR.value,
                          which=_WHICH.value,
                          max_upload_mb=_MAX_UPLOAD_MB.value,
                          n_pieces=_PIECES.value, midi_dir=_MIDI_DIR.value)

  def startup(progress):
    out = the_app.load_model(progress)
    if pages:
      out.update(the_app.use_pages(pages, ', '.join(_PAGES.value),
                                   progress))
    elif _INDEX.value:
      out.update(the_app.use_index(_INDEX.value))
    return out

  the_app.startup_job = the_app.jobs.start('loading the model', startup)
  server = http.server.ThreadingHTTPServer((_HOST.value, _PORT.value),
                                           handler(the_app))
  host, port = server.server_address[:2]
  print(f'serving {_WORKDIR.value} at http://{host}:{port}/ (Ctrl-C stops)',
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


if __name__ == '__main__':
  app.run(main)
