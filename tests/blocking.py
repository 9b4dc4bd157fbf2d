"""Runs Python in a fresh interpreter where some packages cannot be imported.

As on a machine that lacks them: a meta-path finder raises ImportError for
every module under the blocked top-level names, and the script checks it
blocks before running the body.
"""

import os
import subprocess
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRELUDE = r'''
import importlib.abc, sys
BLOCKED = tuple(sys.argv.pop(1).split(','))

class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in BLOCKED:
      raise ImportError(f'{name} is blocked by the test')
    return None

sys.meta_path.insert(0, Blocker())
try:
  __import__(BLOCKED[0])
  raise SystemExit('the blocker does not block')
except ImportError:
  pass
'''


def run_without(blocked, body: str, *args: str, timeout: float = 300,
                env=None) -> subprocess.CompletedProcess:
  """Runs ``body`` (Python source; ``sys.argv[1:]`` are ``args``) with the
  top-level packages ``blocked`` unimportable, in the repository root."""
  return subprocess.run(
      [sys.executable, '-c', _PRELUDE + body, ','.join(blocked),
       *map(str, args)], capture_output=True, text=True, cwd=_REPO,
      timeout=timeout, check=False, env=env)
