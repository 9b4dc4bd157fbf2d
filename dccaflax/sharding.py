"""Several devices: a 1-D data mesh and where each array of a step goes.

The batch is split over a 1-D mesh (axis 'data'); parameters, optimizer
state and the pieces' arrays are replicated.  The model is applied to the
global batch under ``jit``, so BatchNorm statistics and the DCCA covariances
are over the whole batch (XLA adds the all-reduces) and the step equals the
one-device step up to rounding.  Several hosts: call
``jax.distributed.initialize()`` first; the mesh spans all processes'
devices and every process feeds the same (seeded) data, keeping only its own
shards (``put_global``).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from absl import logging
import jax
import numpy as np

DATA_AXIS = 'data'


def data_mesh(batch_size: int, devices=None) -> Optional[jax.sharding.Mesh]:
  """A 1-D ``Mesh`` (axis 'data') for data-parallel steps, or None.

  Uses the largest number of the visible devices (all processes' after
  ``jax.distributed.initialize``) that divides ``batch_size``; None when that
  is one device.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
  if n < len(devices):
    logging.warning('batch %d is not divisible by the %d devices: using %d',
                    batch_size, len(devices), n)
  if n == 1:
    return None
  return jax.sharding.Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def put_global(x, sharding) -> jax.Array:
  """Host array -> global ``jax.Array`` with ``sharding`` (multi-host safe:
  every process passes the same ``x`` and keeps only its own shards)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def replicate(tree, mesh: Optional[jax.sharding.Mesh]):
  """Every leaf copied to all devices of ``mesh`` (None: left as is)."""
  if mesh is None:
    return tree
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda a: put_global(jax.device_get(a), sharding), tree)


class Placement(NamedTuple):
  """Where a training step's inputs live.

  Attributes:
    mesh: the data mesh, or None (one device: everything on the default
      device, no shardings).
    batch: ``NamedSharding`` of a (B,) batch of pair indices (split over
      'data'), or None; the steps' static ``batch_sharding``.
    order: ``NamedSharding`` of an epoch's (S, B) batch order (rows split
      like ``batch``), or None.
  """
  mesh: Optional[jax.sharding.Mesh]
  batch: Optional[jax.sharding.NamedSharding]
  order: Optional[jax.sharding.NamedSharding]

  def replicated(self, tree):
    """``tree`` on every device of the mesh (one device: ``device_put``)."""
    return jax.device_put(tree) if self.mesh is None else replicate(
        tree, self.mesh)

  def batches(self, x, sharding) -> jax.Array:
    """Host indices -> device array split along the batch axis."""
    return jax.numpy.asarray(x) if sharding is None else put_global(
        x, sharding)


def placement(batch_size: int, devices=None) -> Placement:
  """The ``Placement`` of a step of ``batch_size`` pairs on the visible
  devices (``data_mesh``); logs the split when there are several."""
  mesh = data_mesh(batch_size, devices)
  if mesh is None:
    return Placement(None, None, None)
  spec = jax.sharding.PartitionSpec
  logging.info('data parallel over %d devices (%d processes): %d pairs per '
               'device and step', mesh.size, jax.process_count(),
               batch_size // mesh.size)
  return Placement(mesh, jax.sharding.NamedSharding(mesh, spec(DATA_AXIS)),
                   jax.sharding.NamedSharding(mesh, spec(None, DATA_AXIS)))
