"""The browser app's jobs and files (``experiments.serve_app``).

``Jobs`` runs each long step in a thread, one computation at a time, and
keeps its progress (0-1 and a line of text) and its result or error message
for the page to poll.  ``Files`` keeps what the app is given and makes
(uploads, pages, renderings, figures) in one cache folder, under the names
the page links to, and refuses a file over the size limit.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import threading
import traceback
from typing import Callable, Optional

Progress = Callable[[float, str], None]


class UserError(Exception):
  """Input the app cannot use; the message is shown on the page."""


@dataclasses.dataclass
class Job:
  """A long step: its progress, then its result (JSON-able) or the error
  message."""
  id: int
  title: str
  fraction: float = 0.0
  message: str = 'waiting'
  done: bool = False
  result: Optional[dict] = None
  error: Optional[str] = None


class Jobs:
  """Long steps in threads, run one at a time (they share the model)."""

  def __init__(self, input_errors: tuple, public: Callable[[str], str]):
    """
    Args:
      input_errors: exception types about the user's input: their message
        is the job's error; any other exception is logged with its
        traceback and reported in one line.
      public: rewrites a message for the page (``Files.public``).
    """
    self._input_errors, self._public = input_errors, public
    self._jobs: dict[int, Job] = {}
    self._ids = itertools.count(1)
    self._lock = threading.Lock()
    self._compute = threading.Lock()

  def start(self, title: str, fn: Callable[[Progress], dict]) -> int:
    """Runs ``fn(progress)`` in a thread as a new job; returns its id."""
    with self._lock:
      job = Job(next(self._ids), title)
      self._jobs[job.id] = job

    def progress(fraction: float, message: str) -> None:
      job.fraction, job.message = float(fraction), message

    def run():
      try:
        with self._compute:
          job.result = fn(progress)
        job.fraction, job.message = 1.0, 'done'
      except self._input_errors as e:
        job.error = self._public(str(e))
      except Exception as e:  # pylint: disable=broad-except
        logging.error('%s failed:\n%s', title, traceback.format_exc())
        job.error = (f'{title} failed: {type(e).__name__}: '
                     f'{self._public(str(e))} (the server log has the '
                     'details)')
      finally:
        job.done = True
    threading.Thread(target=run, daemon=True).start()
    return job.id

  def get(self, job_id: int) -> dict:
    """A job as JSON: id, title, fraction, message, done, result, error."""
    with self._lock:
      if job_id not in self._jobs:
        raise UserError(f'no job {job_id}')
      return dataclasses.asdict(self._jobs[job_id])


class Files:
  """The app's files, in numbered folders of one cache folder."""

  def __init__(self, cache_dir: str, max_upload_mb: float):
    self.root = os.path.abspath(cache_dir)
    self.max_bytes = int(max_upload_mb * 1e6)
    self._ids = itertools.count(1)
    self._lock = threading.Lock()
    os.makedirs(self.root, exist_ok=True)

  def next_id(self) -> int:
    with self._lock:
      return next(self._ids)

  def new_folder(self, kind: str) -> str:
    """A new empty folder ``<kind>_<n>`` in the cache folder."""
    while True:
      folder = os.path.join(self.root, f'{kind}_{self.next_id()}')
      if not os.path.exists(folder):    # a cache folder used before
        os.makedirs(folder)
        return folder

  def too_big(self, name: str, size: int) -> str:
    """The message for a file over the limit."""
    return (f'{name}: {size / 1e6:.1f} MB, over the limit of '
            f'{self.max_bytes / 1e6:g} MB (--max_upload_mb)')

  def save_upload(self, name: str, data: bytes) -> str:
    """Stores an uploaded file under its own name; returns its token.

    Raises:
      UserError: over the size limit, or no file name.
    """
    base = os.path.basename(name.replace('\\', '/')).strip()
    if not base or base.startswith('.'):
      raise UserError(f'bad file name {name!r}')
    if len(data) > self.max_bytes:
      raise UserError(self.too_big(base, len(data)))
    path = os.path.join(self.new_folder('upload'), base)
    with open(path, 'wb') as f:
      f.write(data)
    return os.path.relpath(path, self.root)

  def upload_path(self, token: str) -> str:
    """The file of an upload token (``save_upload``)."""
    if not str(token).startswith('upload_'):
      raise UserError(f'no uploaded file {token!r}')
    return self.path(token)

  def path(self, relative: str) -> str:
    """A file in the cache folder, by its path relative to it."""
    path = os.path.abspath(os.path.join(self.root, relative))
    if not path.startswith(self.root + os.sep) or not os.path.isfile(path):
      raise UserError(f'no such file {relative!r}')
    return path

  def link(self, path: str) -> str:
    """The URL of a file; one outside the cache folder is linked into it."""
    path = os.path.abspath(path)
    if not path.startswith(self.root + os.sep):
      target = os.path.join(self.new_folder('linked'),
                            os.path.basename(path))
      os.symlink(path, target)
      path = target
    return '/files/' + os.path.relpath(path, self.root)

  def public(self, message: str) -> str:
    """A message with the cache folder left out of file paths (the user
    knows a file by the name it was given)."""
    return re.sub(re.escape(self.root + os.sep) + r'[^/\s]+/', '', message)
