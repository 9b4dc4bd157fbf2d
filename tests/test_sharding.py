"""Data parallelism (sharding): the step over 4 CPU devices equals the step
on one device, in a subprocess (the device count is fixed at JAX's start)."""

import os
import subprocess
import sys


_MULTI_DEVICE = r'''
import functools
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from dccaflax import augment
from dccaflax import input_pipeline as ip
from dccaflax import models
from dccaflax import pieceset
from dccaflax import sharding
from dccaflax import steps
from tests.conftest import synthetic_split

assert jax.device_count() == 4, jax.devices()
ps = pieceset.concat_pieces(synthetic_split(1, 6))
model = models.create_model(width=0.125, out_dim=8)
opt = steps.make_optimizer(0.1, 0.9, 25, 10)
state = steps.create_train_state(jax.random.key(0), model, opt)
batch = 64
order = ip.epoch_batches(0, 0, len(ps), batch)[:2]
one = jax.devices()[0]
arrays1 = jax.device_put(ps.arrays, one)
mesh = sharding.data_mesh(batch)
assert mesh is not None and mesh.size == 4
bsh = NamedSharding(mesh, P('data'))
arrays4 = sharding.replicate(ps.arrays, mesh)
state4 = sharding.replicate(state, mesh)

def rel_err(a, b):
  """||a - b|| / ||b|| over all leaves of two pytrees."""
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  num = sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64))
                   ** 2) for x, y in zip(la, lb))
  den = sum(np.sum(np.asarray(y, np.float64) ** 2) for y in lb)
  return float(np.sqrt(num / den))

# Loss, gradients and BatchNorm statistics of one global batch.
sheets, specs = jax.jit(ip.batch_windows)(arrays1, order[0])
grad_fn = jax.jit(functools.partial(steps.loss_and_grads, model=model,
                                    reg=1e-3))
(l1, bs1), g1 = grad_fn(state.params, state.batch_stats, sheets, specs)
sheets4 = jax.device_put(sheets, bsh)
specs4 = jax.device_put(specs, bsh)
assert len(sheets4.sharding.device_set) == 4
(l4, bs4), g4 = grad_fn(state4.params, state4.batch_stats, sheets4, specs4)
# The gradient of the second conv of each tower differs most (1e-4 of the
# tree's norm): float rounding of the BatchNorm statistics (summed in another
# order) flips max-pool ties on blank paper.  Two single-device compilations
# of the same step differ by as much; the typical leaf agrees to ~1e-5.
errs = {'loss': rel_err(l4, l1), 'grads': rel_err(g4, g1),
        'batch_stats': rel_err(bs4, bs1)}
leaf_errs = [rel_err(a, b) for a, b in zip(jax.tree.leaves(g4),
                                           jax.tree.leaves(g1))]
print('one batch, 4 devices vs 1, relative errors:', errs,
      'median leaf', np.median(leaf_errs))
assert errs['loss'] < 1e-5 and errs['batch_stats'] < 1e-5, errs
assert errs['grads'] < 5e-4 and np.median(leaf_errs) < 2e-5, errs

# Two training steps, indices sliced on the device from a sharded order (a
# small learning rate: at 0.1 the small batch's DCCA gradient turns rounding
# differences into 1e-3 parameter differences within two steps).
kw = dict(model=model, optimizer=steps.make_optimizer(0.01, 0.9, 25, 10),
          reg=1e-3, augment=augment.AugmentConfig(dx=2, dy=1, dframe=1),
          max_steps=2)
s1, m1 = steps.train_chunk(state, arrays1, jnp.asarray(order),
                           np.int32(0), np.int32(2), seed=3, **kw)
order4 = sharding.put_global(order, NamedSharding(mesh, P(None, 'data')))
args4 = (state4, arrays4, order4, np.int32(0), np.int32(2))
compiled = steps.train_chunk.lower(*args4, seed=3, batch_sharding=bsh,
                                   **kw).compile()
assert 'all-reduce' in compiled.as_text()   # the batch really is split
s4, m4 = compiled(*args4, seed=3)
errs = {'loss': rel_err(m4['loss'], m1['loss']),
        'state': rel_err((s4.params, s4.batch_stats),
                         (s1.params, s1.batch_stats))}
print('two steps, 4 devices vs 1, relative errors:', errs)
# Measured 2e-6 with one initialisation and 1.2e-4 with another (SSE4.2):
# the rounding of the first step's BatchNorm statistics, amplified by the
# second; a wrong batch on a device would differ by percents.
assert max(errs.values()) < 1e-3, errs
leaf = jax.tree.leaves(s4.params)[0]
assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
print('MULTI_DEVICE_OK')
'''


def test_data_parallel_over_4_cpu_devices_equals_one_device():
  # Added to the run's flags: an instruction-set limit stays in force.
  xla_flags = ' '.join(filter(None, (
      os.environ.get('XLA_FLAGS'), '--xla_force_host_platform_device_count=4')))
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags)
  out = subprocess.run([sys.executable, '-c', _MULTI_DEVICE], env=env,
                       cwd=os.path.dirname(os.path.dirname(__file__)),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and 'MULTI_DEVICE_OK' in out.stdout, (
      out.stdout[-3000:] + out.stderr[-3000:])
