"""dccaflax.layers: the CPU formulations equal XLA's, forward and backward;
and the training step built on them equals the stock one to rounding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dccaflax import cca
from dccaflax import layers
from dccaflax import models


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize('shape,features', [
    ((3, 9, 7, 1), 5),        # one input channel: shifted multiply-adds
    ((2, 20, 30, 4), 32),     # flat kernel gradient (>= 32 features, >= 500)
    ((2, 11, 8, 6), 3),       # XLA's kernel gradient
])
def test_conv_equals_xla_forward_and_backward(shape, features):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, shape[-1], features)), jnp.float32)
  dy = jnp.asarray(rng.normal(size=shape[:3] + (features,)), jnp.float32)
  assert layers.flat_kernel_grad_pays(shape, features) == (features == 32)
  outs = {}
  for cpu in (False, True):
    y, vjp = jax.vjp(lambda x, k, cpu=cpu: layers.conv(x, k, cpu), x, k)
    outs[cpu] = (y, *vjp(dy))
  for got, want in zip(outs[True][:1] + outs[True][2:],
                       outs[False][:1] + outs[False][2:]):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert _rel(got, want) < 1e-5
  if shape[-1] > 1:   # the input layer's dx is never used, so not computed
    assert _rel(outs[True][1], outs[False][1]) < 1e-5


def test_kernel_grad_is_the_sum_over_positions():
  """Independent reference: dk[i, j] = sum over (b, h, w) of the padded
  input at (h + i, w + j) times dy at (h, w), in float64."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
  dy = rng.normal(size=(2, 5, 4, 2)).astype(np.float32)
  xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = np.stack([np.einsum('bhwc,bhwo->co', xp[:, i:i + 5, j:j + 4],
                             dy.astype(np.float64))
                   for i in range(3) for j in range(3)]).reshape(3, 3, 3, 2)
  got = layers.kernel_grad(jnp.asarray(x), jnp.asarray(dy), 3, 3)
  assert _rel(got, want) < 1e-5


@pytest.mark.parametrize('shape', [(2, 8, 10, 3), (2, 17, 12, 2),
                                   (1, 5, 13, 4)])
def test_max_pool_equals_flax_with_ties(shape):
  """Odd edges dropped; on ties (blank paper gives many) the gradient goes
  to the first maximum in row-major order, as XLA's select-and-scatter."""
  rng = np.random.default_rng(2)
  x = rng.integers(0, 3, shape).astype(np.float32)   # many ties
  x[0, :4] = 1.0                                      # all-equal windows
  x = jnp.asarray(x)
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2),
                                    padding='VALID')
  dy = jnp.asarray(rng.normal(size=flax_pool(x).shape), jnp.float32)
  y0, vjp0 = jax.vjp(flax_pool, x)
  y1, vjp1 = jax.vjp(lambda x: layers.max_pool(x, True), x)
  np.testing.assert_array_equal(y1, y0)
  np.testing.assert_array_equal(vjp1(dy)[0], vjp0(dy)[0])
  # each window passes its gradient to exactly one element
  assert int(jnp.sum(vjp1(jnp.ones_like(dy))[0] != 0)) == dy.size


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_batchnorm_elu_equals_flax(dtype):
  """The fused BatchNorm + ELU has flax's variables, output, running
  averages and gradients (input, scale, bias) to float rounding."""
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(0.5, 2.0, (6, 9, 7, 5)), dtype)
  w = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  kw = dict(use_running_average=False, momentum=0.9, epsilon=1e-4,
            dtype=jnp.float32)
  stock = nn.BatchNorm(**kw)
  fused = layers.BatchNorm(elu=True, cpu_kernels=True, **kw)
  variables = stock.init(jax.random.key(0), x)
  assert (jax.tree.structure(fused.init(jax.random.key(0), x))
          == jax.tree.structure(variables))
  params = {'scale': jnp.linspace(0.5, 1.5, 5),
            'bias': jnp.linspace(-0.2, 0.2, 5)}
  stats = {'mean': jnp.linspace(-1, 1, 5), 'var': jnp.linspace(1, 2, 5)}

  def run(module, act):
    def loss(params, x):
      y, upd = module.apply({'params': params, 'batch_stats': stats}, x,
                            mutable=['batch_stats'])
      return jnp.sum(act(y) * w), (act(y), upd['batch_stats'])
    return jax.value_and_grad(loss, (0, 1), has_aux=True)(params, x)

  (l0, (y0, s0)), g0 = run(stock, nn.elu)
  (l1, (y1, s1)), g1 = run(fused, lambda y: y)
  assert y1.dtype == jnp.float32
  assert _rel(l1, l0) < 1e-5
  assert _rel(y1, y0) < 1e-5
  for k in ('mean', 'var'):
    assert _rel(s1[k], s0[k]) < 1e-5, k
  tol = 1e-4 if dtype == jnp.float32 else 1e-2   # dx rounds to bfloat16
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    assert _rel(a, b) < tol


def test_bn_elu_statistics_are_differentiable():
  """``bn_elu``'s mean and variance outputs carry their own gradients."""
  x = jnp.asarray(np.random.default_rng(5).normal(size=(4, 3, 2)),
                  jnp.float32)
  s, b = jnp.ones(2), jnp.zeros(2)

  def ref(x):
    mean = jnp.mean(x, (0, 1))
    return jnp.sum(mean ** 2) + jnp.sum(jnp.var(x, (0, 1)) * jnp.arange(2.))

  def fused(x):
    _, mean, var = layers.bn_elu(x, s, b, 1e-4)
    return jnp.sum(mean ** 2) + jnp.sum(var * jnp.arange(2.))

  assert _rel(jax.grad(fused)(x), jax.grad(ref)(x)) < 1e-5


def test_step_gradients_equal_the_stock_step():
  """The loss and every gradient of the DCCA step with the CPU layers equal
  those of XLA's layers to float rounding (sheets with blank paper, where
  max pooling ties)."""
  rng = np.random.default_rng(3)
  sheets = rng.integers(0, 256, (24, 40, 100)).astype(np.uint8)
  sheets[:, :, :40] = 255
  specs = rng.random((24, 136, 100)).astype(np.float32) * 3
  results = {}
  for cpu in (False, True):
    model = models.create_model(0.25, level_norm='peak').clone(
        cpu_kernels=cpu)
    variables = models.init_variables(jax.random.key(0), model)

    def loss(params, model=model, variables=variables):
      (fx, gy), _ = model.apply(
          {'params': params, 'batch_stats': variables['batch_stats']},
          sheets, specs, train=True, mutable=['batch_stats'])
      return cca.dcca_loss(fx, gy, 1e-3)
    results[cpu] = jax.jit(jax.value_and_grad(loss))(variables['params'])
  (l0, g0), (l1, g1) = results[False], results[True]
  assert abs(float(l0) - float(l1)) < 1e-4 * abs(float(l0))
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g0))
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g0)[0],
                          jax.tree.leaves(g1)):
    err = float(jnp.max(jnp.abs(a - b)))
    assert err <= 2e-3 * float(jnp.max(jnp.abs(a))) + 1e-5 * scale, (
        jax.tree_util.keystr(path), err)


def test_flax_conv_refuses_what_it_does_not_compute():
  x = jnp.zeros((1, 8, 8, 2))
  with pytest.raises(ValueError, match='stride 1'):
    nn.Conv(4, (3, 3), strides=2, conv_general_dilated=layers.flax_conv(
        True)).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='SAME'):
    nn.Conv(4, (3, 3), padding='VALID', conv_general_dilated=(
        layers.flax_conv(True))).init(jax.random.key(0), x)
