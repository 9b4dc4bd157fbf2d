"""Tests for dccaflax.models: shapes, parameter counts, dtypes, BatchNorm."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dccaflax import models

N = 2  # small batches keep the tests fast on CPU


def _inputs(n=N, seed=0):
  rng = np.random.default_rng(seed)
  sheets = rng.integers(0, 256, size=(n, 40, 100), dtype=np.uint8)
  specs = rng.random((n, 136, 100), dtype=np.float32)
  return sheets, specs


def _n_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _jit_apply(model, train, method=None):
  """Jitted ``model.apply`` (one compile beats op-by-op dispatch on CPU)."""
  kw = dict(mutable=['batch_stats']) if train else {}
  if method is not None:
    kw['method'] = method
  return jax.jit(functools.partial(model.apply, train=train, **kw))


@pytest.fixture(scope='module')
def quarter():
  """Width-0.25 model and its variables (built once)."""
  model = models.create_model(width=0.25)
  return model, models.init_variables(jax.random.key(0), model)


def _tower_params(widths, out_dim, cin=1):
  """Hand count for one tower: 3x3 convs (no bias), BN scale+bias, 1x1 conv."""
  total = 0
  for w in widths:
    total += 3 * 3 * cin * w + 2 * w    # conv a + its BN
    total += 3 * 3 * w * w + 2 * w      # conv b + its BN
    cin = w
  total += 1 * 1 * cin * out_dim + 2 * out_dim   # 1x1 conv + BN
  return total


def test_init_variables_are_flax_init_with_lecun_normal_kernels():
  # One draw cut into the kernels (fast to compile): flax's tree (its
  # ``model.init`` traced by ``eval_shape``), flax's BatchNorm values, and
  # kernels from flax's law for them (LeCun normal: |w| <= 2 sd / 0.8796,
  # sd = fan_in ** -0.5).  (Compiling flax's own init for a side-by-side
  # draw would cost 15 s: one threefry program per kernel.)
  model = models.create_model(width=0.5)
  mine = models.init_variables(jax.random.key(0), model)
  sheets, specs = _inputs(2)
  flax_shapes = jax.eval_shape(functools.partial(model.init, train=False),
                               jax.random.key(0), sheets, specs)
  assert (jax.tree_util.tree_structure(mine)
          == jax.tree_util.tree_structure(flax_shapes)
          == jax.tree_util.tree_structure(models.variable_shapes(model)))
  kernels = []
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(mine),
                          jax.tree_util.tree_leaves(flax_shapes)):
    name, a = jax.tree_util.keystr(path), np.asarray(a)
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32, name
    if 'kernel' not in name:   # flax's BatchNorm initial values
      one = name.endswith("['scale']") or name.endswith("['var']")
      np.testing.assert_array_equal(a, np.full(a.shape, float(one)), name)
      continue
    sd = np.prod(a.shape[:-1]) ** -0.5
    assert np.abs(a).max() <= 2 * sd / 0.8796 * (1 + 1e-5), name
    if a.size >= 1000:   # sample sd within 10 % (> 7 standard errors)
      assert abs(a.std() / sd - 1) < 0.1 and abs(a.mean()) < 0.1 * sd, name
    kernels.append(a.ravel())
  assert len(kernels) == 18
  # Each kernel its own part of the draw: no two start alike.
  firsts = np.array([k[:4] for k in kernels])
  assert len(np.unique(firsts, axis=0)) == len(kernels)
  # Another key, other kernels.
  other = models.init_variables(jax.random.key(1), model)
  assert not np.allclose(jax.tree_util.tree_leaves(other)[-1],
                         jax.tree_util.tree_leaves(mine)[-1])


def test_full_model_param_count():
  # One tower, full width (16, 32, 64, 64), h = 32, input channels 1:
  #   block 1: 3*3*1*16   =   144 + 32 (BN)   | 3*3*16*16 =  2304 + 32
  #   block 2: 3*3*16*32  =  4608 + 64        | 3*3*32*32 =  9216 + 64
  #   block 3: 3*3*32*64  = 18432 + 128       | 3*3*64*64 = 36864 + 128
  #   block 4: 3*3*64*64  = 36864 + 128       | 3*3*64*64 = 36864 + 128
  #   1x1:     64*32      =  2048 + 64
  #   convs 147344 + BN 768 = 148112 per tower; two towers = 296224.
  per_tower = (144 + 2304 + 4608 + 9216 + 18432 + 36864 * 3 + 2048
               + 2 * (16 + 16 + 32 + 32 + 64 + 64 + 64 + 64 + 32))
  assert per_tower == 148112
  assert _tower_params((16, 32, 64, 64), 32) == per_tower
  model = models.create_model()
  sheets, specs = _inputs(1)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), sheets, specs, train=False))
  assert _n_params(shapes['params']) == 2 * per_tower == 296224
  assert _n_params(shapes['params']['sheet_tower']) == per_tower
  assert _n_params(shapes['params']['audio_tower']) == per_tower
  # Running mean + var: one pair per BN channel.
  assert _n_params(shapes['batch_stats']) == 2 * 768
  # No biases on convs; every conv kernel is float32.
  kernels = shapes['params']['sheet_tower']
  assert not any('bias' in v for k, v in kernels.items() if 'Conv' in k)


def test_quarter_width(quarter):
  model, variables = quarter
  assert model.widths == (4, 8, 16, 16)
  assert models.scaled_widths(0.25) == (4, 8, 16, 16)
  assert models.scaled_widths(0.5) == (8, 16, 32, 32)
  assert _n_params(variables['params']) == 2 * _tower_params(
      (4, 8, 16, 16), 32)


@pytest.mark.parametrize('train', [False, True])
def test_output_shapes(quarter, train):
  model, variables = quarter
  sheets, specs = _inputs(3, seed=1)
  out = _jit_apply(model, train)(variables, sheets, specs)
  fx, gy = out[0] if train else out
  assert fx.shape == (3, 32) and gy.shape == (3, 32)
  assert fx.dtype == jnp.float32 and gy.dtype == jnp.float32
  assert np.all(np.isfinite(fx)) and np.all(np.isfinite(gy))
  fs = _jit_apply(model, train, models.DCCAModel.embed_sheet)(
      variables, sheets)
  ga = _jit_apply(model, train, models.DCCAModel.embed_audio)(
      variables, specs)
  fs, ga = (fs[0], ga[0]) if train else (fs, ga)
  np.testing.assert_allclose(fs, fx, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ga, gy, rtol=1e-5, atol=1e-5)


def test_sheet_normalization_and_float_input(quarter):
  model, variables = quarter
  x = np.array([[0, 255], [128, 51]], np.uint8)
  np.testing.assert_allclose(
      models.normalize_sheet(x), [[1.0, 0.0], [1 - 128 / 255, 0.8]],
      rtol=1e-6)
  sheets, _ = _inputs()
  embed = _jit_apply(model, False, models.DCCAModel.embed_sheet)
  a = embed(variables, sheets)
  b = embed(variables, sheets.astype(np.float32))
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_batch_stats_update_in_train_mode(quarter):
  model, variables = quarter
  sheets, specs = _inputs(4, seed=2)
  _, updates = _jit_apply(model, True)(variables, sheets, specs)
  old = jax.tree_util.tree_leaves(variables['batch_stats'])
  new = jax.tree_util.tree_leaves(updates['batch_stats'])
  assert len(old) == len(new)
  assert all(not np.allclose(o, n) for o, n in zip(old, new))
  # The 0.9 momentum: new_mean = 0.9 * 0 + 0.1 * batch_mean of the first BN.
  bs = updates['batch_stats']['sheet_tower']['BatchNorm_0']
  assert np.all(np.abs(bs['mean']) > 0)


def test_eval_mode_deterministic_and_per_example(quarter):
  model, variables = quarter
  sheets, specs = _inputs(3, seed=3)
  apply = _jit_apply(model, False)
  a = apply(variables, sheets, specs)
  b = apply(variables, sheets, specs)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  # Eval mode uses running statistics: an example's embedding does not
  # depend on the rest of the batch.
  c = apply(variables, sheets[:1], specs[:1])
  np.testing.assert_allclose(c[0], a[0][:1], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(c[1], a[1][:1], rtol=1e-5, atol=1e-5)


def test_bfloat16_compute(quarter):
  f32_model, variables = quarter
  model = models.create_model(width=0.25, dtype=jnp.bfloat16)
  sheets, specs = _inputs(3, seed=4)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(1), sheets, specs, train=False))
  leaves = jax.tree_util.tree_leaves(shapes)
  assert all(leaf.dtype == jnp.float32 for leaf in leaves)
  (fx, gy), updates = _jit_apply(model, True)(variables, sheets, specs)
  for out in (fx, gy):
    assert out.dtype == jnp.float32 and out.shape == (3, 32)
    assert np.all(np.isfinite(out))
  assert all(leaf.dtype == jnp.float32
             for leaf in jax.tree_util.tree_leaves(updates))
  # Close to the float32 model with the same parameters.
  ref = _jit_apply(f32_model, False)(variables, sheets, specs)
  out = _jit_apply(model, False)(variables, sheets, specs)
  for x, y in zip(out, ref):
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(x, y, atol=0.1, rtol=0.1)


def test_axis_name_cross_device_stats(quarter):
  f32_model, variables = quarter
  model = models.create_model(width=0.25, axis_name='batch')
  sheets, specs = _inputs(4, seed=5)

  def step(s, a):
    return model.apply(variables, s, a, train=True,
                       mutable=['batch_stats'])[1]

  # Four "devices" with one example each share batch statistics, so the
  # updated running mean equals that of a single batch of four.
  upd = jax.jit(jax.vmap(step, axis_name='batch'))(sheets[:, None],
                                                   specs[:, None])
  local = _jit_apply(f32_model, True)(variables, sheets, specs)[1]
  for x, y in zip(jax.tree_util.tree_leaves(upd),
                  jax.tree_util.tree_leaves(local)):
    np.testing.assert_allclose(x[0], y, rtol=1e-4, atol=1e-5)


def test_bad_input_rank(quarter):
  model, variables = quarter
  with pytest.raises(ValueError, match='N, H, W'):
    model.apply(variables, np.zeros((2, 40, 100, 1), np.uint8),
                method=models.DCCAModel.embed_sheet)  # fails before any op
