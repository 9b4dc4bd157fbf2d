r"""Speed of training, embedding and retrieval on this machine's accelerator.

  python -m experiments.benchmark [--width 1.0] [--out bench.json] [--quick] \
      [--torch_peer PEER.py]
  python -m experiments.benchmark --objectives [--width 1.0] \
      [--batch_sizes 100] [--repeats 5] [--noobjective_steps]

Measures, on synthetic device arrays shaped like the real ones (no data
needed; the numbers do not depend on the content):

* training: pairs/s of an epoch through the training loop's own code path
  (``training.Stepper``: the host's epoch order, one jitted step per call or
  the device loop of ``--steps_per_dispatch`` steps, metrics read one
  dispatch late; inside a step: window cutting, both towers forward, DCCA
  loss, backward, momentum update, the non-finite check) for each batch size
  x dtype x steps per dispatch, then ``--models`` K models side by side
  (aggregate pairs/s) at the first batch size, and the time of one epoch of
  the training split extrapolated from it (``--train_pairs``);
* embedding: pairs/s of both towers in eval mode (cut windows -> (B, h) x 2);
* retrieval: latency of ``retrieval.top_k`` (exact, chunked, k = 10) for 1
  and 1,000 audio queries against 16,000 and 1,000,000 random unit-vector
  sheet candidates (the host-side normalisation and chunking included).

Every number is the median of ``--repeats`` timed calls after a warm-up call
(compilation excluded), each ended by ``block_until_ready``.  ``--quick``:
narrow towers, one batch size, few repeats, smaller candidate sets (a smoke
run for a CPU; about a minute or two).

``--objectives`` measures instead what each training objective
(``dccaflax.objectives``, ``--objective`` of ``experiments.train``) costs per
step, at ``--width`` and the first of ``--batch_sizes``: the objective's loss
and gradient alone on the (B, 32) tower outputs, and
``steps.loss_and_grads`` with it (the step without window cutting and
optimizer update); the objectives are timed in turn in each of ``--repeats``
rounds, so that they share the machine's conditions, and the fastest round
counts.
``--noobjective_steps``: the objectives alone (no towers' step to compile).

``--torch_peer PATH`` also runs a PyTorch peer script of the paper's model
(one that prints JSON lines of pairs/s; needs torch and a CUDA GPU; not part
of this project) in the same call and prints our
pairs/s over its pairs/s at the same batch size (float32 vs its compiled
float32, bfloat16 vs its compiled bf16 autocast); skipped with a message when
torch is not importable.

Prints a table and writes JSON (``--out``).  The measurements live in
``dccaflax.benchmark``.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
import jax

from dccaflax import benchmark

# The defaults: the accelerator preset (flags take lists of strings).
_GPU = {k: [str(x) for x in v] if isinstance(v, list) else v
        for k, v in benchmark.PRESETS['gpu'].items()}

_WIDTH = flags.DEFINE_float('width', _GPU['width'], 'Tower width multiplier '
                            "(1 = the paper's model).")
_OUT = flags.DEFINE_string('out', None, 'Write the results as JSON here.')
_QUICK = flags.DEFINE_bool('quick', False, 'Small CPU smoke run: width '
                           '0.125 (unless --width is given), batch 50, steps '
                           'per dispatch 1 and 4, 1 and 2 models, 2 repeats, '
                           '16,000 and 100,000 candidates.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', _GPU['batch_sizes'],
                                 'Training batch sizes.')
_DTYPES = flags.DEFINE_list('dtypes', _GPU['dtypes'],
                            'Tower compute dtypes.')
_SPD = flags.DEFINE_list('steps_per_dispatch', _GPU['steps_per_dispatch'],
                         'Fused SGD steps per jitted call.')
_CANDIDATES = flags.DEFINE_list('candidates', _GPU['candidates'],
                                'Retrieval candidate set sizes.')
_QUERIES = flags.DEFINE_list('queries', _GPU['queries'],
                             'Retrieval query counts.')
_REPEATS = flags.DEFINE_integer('repeats', _GPU['repeats'], 'Timed calls per '
                                 'number.')
_TRAIN_PAIRS = flags.DEFINE_integer('train_pairs', benchmark.TRAIN_PAIRS,
                                    'Training pairs of one epoch for the '
                                    'epoch time.')
_MODELS = flags.DEFINE_list('models', _GPU['models_side_by_side'], 'Models '
                            'side by side (K > 1: one vmapped step, '
                            'aggregate pairs/s) at the first batch size.')
_RENDERINGS = flags.DEFINE_integer('renderings', 1, 'Audio renderings in '
                                   'the synthetic training arrays (> 1: each '
                                   'step also draws one per pair, as '
                                   '--renderings=all training does).')
_TORCH_PEER = flags.DEFINE_string('torch_peer', None, 'Path of a PyTorch '
                                  'peer script (torch_peer.py on a GPU, '
                                  'torch_cpu_peer.py on a CPU) to run side '
                                  'by side.')
_STOCK = flags.DEFINE_bool('stock_layers', False, 'Also time the one-model '
                           "rows with XLA's own convolution and pooling "
                           'gradients (the step before dccaflax.layers): '
                           'before and after in one run.')
_CPU = flags.DEFINE_bool('cpu', False, 'The CPU preset: the paper\'s width, '
                         'batch 100, float32 and bfloat16, one step per '
                         'call, one model, 2 repeats, 16,000 candidates '
                         '(about 10 minutes on 2 cores with --stock_layers '
                         'and the peer).')
_OBJECTIVES = flags.DEFINE_bool('objectives', False, 'Instead: the cost '
                                'per step of each training objective '
                                '(dccaflax.objectives) at --width and the '
                                'first of --batch_sizes, --repeats rounds.')
_OBJECTIVE_STEPS = flags.DEFINE_bool(
    'objective_steps', True, 'With --objectives: also time the towers\' step '
    'with each objective (at full width on a 2-core CPU, about ten minutes '
    'of compilation); --noobjective_steps: the objectives alone.')


def objectives_table(rows) -> str:
  """``benchmark.bench_objectives``'s rows as a Markdown table."""
  lines = [f'tower width {rows[0]["width"]:g}, batch {rows[0]["batch"]}, '
           f'{jax.devices()[0].platform}; fastest of the rounds (ms)', '',
           '| objective | loss + gradient alone | loss_and_grads (towers '
           'forward + backward) | share of the step |', '|---|---|---|---|']
  lines += [f'| {r["objective"]} | {r["loss_s"] * 1e3:.2f} | '
            + (f'{r["step_s"] * 1e3:.0f} | {r["share"]:.2%} |'
               if 'step_s' in r else 'not timed | |') for r in rows]
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _OBJECTIVES.value:
    rows = benchmark.bench_objectives(_WIDTH.value, int(_BATCH_SIZES.value[0]),
                                      _REPEATS.value,
                                      with_step=_OBJECTIVE_STEPS.value)
    print(objectives_table(rows))
    _write(rows)
    return
  if _QUICK.value or _CPU.value:
    settings = dict(benchmark.PRESETS['quick' if _QUICK.value else 'cpu'])
    if _DTYPES.present:
      settings['dtypes'] = _DTYPES.value
  else:
    settings = dict(width=_WIDTH.value,
                    batch_sizes=[int(b) for b in _BATCH_SIZES.value],
                    steps_per_dispatch=[int(k) for k in _SPD.value],
                    queries=[int(q) for q in _QUERIES.value],
                    candidates=[int(c) for c in _CANDIDATES.value],
                    repeats=_REPEATS.value,
                    models_side_by_side=[int(m) for m in _MODELS.value],
                    dtypes=_DTYPES.value)
  if (_QUICK.value or _CPU.value) and _WIDTH.present:   # a preset at W
    settings['width'] = _WIDTH.value
  result = benchmark.run_all(train_pairs=_TRAIN_PAIRS.value,
                             renderings=_RENDERINGS.value,
                             stock_layers=_STOCK.value, **settings)
  if _TORCH_PEER.value:
    peer = benchmark.run_torch_peer(_TORCH_PEER.value)
    if peer is not None:
      result['torch_peer'] = peer
      result['torch_ratio'] = benchmark.peer_ratios(result['train'], peer)
  print(benchmark.format_table(result))
  _write(result)


def _write(result) -> None:
  """``result`` as JSON to ``--out``, if given."""
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
