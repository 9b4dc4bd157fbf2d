"""The library's layers read one way: the settings (``dccaflax.config``) sit
on leaf modules only, so checking a setting loads neither the input pipeline
nor the model (nor TFDS or Flax), and nothing it imports imports it back."""

import ast
import os
import pathlib
import subprocess
import sys

_LIB = pathlib.Path(__file__).resolve().parents[1] / 'dccaflax'

# What dccaflax.config may import from the library: the CCA defaults, the
# level-normalisation methods, the augmentation registry, the objectives'
# registry and the data-source names.
_CONFIG_IMPORTS = {'augment', 'cca', 'level', 'objectives', 'sources'}


def _library_imports(module: str) -> set[str]:
  """The ``dccaflax`` modules that ``dccaflax/<module>.py`` imports, at top
  level or inside a function."""
  tree = ast.parse((_LIB / f'{module}.py').read_text())
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module == 'dccaflax':
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and (
        node.module or '').startswith('dccaflax.'):
      out.add(node.module.split('.')[1])
    elif isinstance(node, ast.Import):
      out |= {a.name.split('.')[1] for a in node.names
              if a.name.startswith('dccaflax.')}
  return out


def test_config_imports_only_leaf_modules():
  assert _library_imports('config') == _CONFIG_IMPORTS
  assert not _library_imports('sources')
  assert _library_imports('objectives') == {'cca'}
  # Below config, transitively: neither config (no cycle) nor the pipeline
  # or the model.
  seen, todo = set(), set(_CONFIG_IMPORTS)
  while todo:
    module = todo.pop()
    seen.add(module)
    todo |= _library_imports(module) - seen
  assert not seen & {'config', 'input_pipeline', 'models'}, sorted(seen)


def test_importing_config_loads_no_pipeline_model_tfds_or_flax():
  code = ('import sys; import dccaflax.config; '
          'c = dccaflax.config.TrainConfig(collections="oneills, nottingham"); '
          'assert c.collections == "oneills,nottingham", c.collections; '
          'loaded = sorted(m for m in ("dccaflax.input_pipeline", '
          '"dccaflax.models", "tensorflow_datasets", "flax") '
          'if m in sys.modules); print("LOADED", loaded)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=False, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'LOADED []' in out.stdout, out.stdout
