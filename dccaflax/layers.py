"""The towers' convolution and max pooling, with gradients XLA:CPU runs fast.

Same maths as ``lax.conv_general_dilated`` ('SAME', stride 1) and
``flax.linen.max_pool`` (2 x 2, stride 2, 'VALID'), forward and backward,
written so that XLA:CPU does not take its slow paths.  Measured on the
paper's full-width towers at batch 100 on a 2-core x86-64 CPU
(``jax.profiler`` traces of the step and per-layer timings, in
``docs/cpu_training.md``), the plain step spent most of its time here:

* **the kernel gradient of a convolution.**  XLA lowers it to a
  convolution whose "kernel" is the whole (B, H, W) batch of output
  gradients and whose output is 3 x 3; the CPU backend runs that 5-12x
  slower than the forward convolution of the same FLOPs.  Here it is one
  matrix product per kernel tap on the *flattened* padded batch: padding
  every image by one pixel on each side and flattening (B, H + 2, W + 2)
  into one axis of P positions turns the tap (i, j) into a plain offset
  ``i * (W + 2) + j`` along that axis, so each tap's input is a
  contiguous row slice of a (P, C) matrix; the output gradient is padded
  with zeros at the same positions, so the rows that straddle two images
  or the padding contribute exactly nothing.  ``dk[i, j] = X[off:off +
  P]^T @ dY`` -- the same sum as XLA's, in another order.
* **the gradient of max pooling.**  XLA's ``select-and-scatter`` is a
  scalar loop on the CPU (0.5 s for one full-resolution layer, 50x its
  forward).  Here the 2 x 2 windows are a reshape, and the gradient goes to
  the first maximum of each window in row-major order -- the element
  ``select-and-scatter`` with ``>=`` picks -- as one elementwise fusion.
* **the first convolution** (one input channel) ran at 2 GFLOP/s as a
  convolution; it is nine shifted multiply-adds here (its input gradient is
  never needed).

The input gradient of a convolution stays XLA's (a convolution with the
flipped kernel, as fast as the forward one).  On other platforms
(``jax.default_backend() != 'cpu'``), and on several CPU devices (see
``use_cpu_kernels``), ``conv`` and ``max_pool`` are the stock XLA
operations: cuDNN has no such slow paths.
"""

from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

_DIMS = ('NHWC', 'HWIO', 'NHWC')


def use_cpu_kernels(flag: Optional[bool] = None) -> bool:
  """Whether to use this module's formulations: ``flag``, or by default
  whether JAX's default backend is the CPU with a single device.

  Several (simulated) CPU devices keep XLA's layers: with the batch split
  over a 4-device mesh, the gradients of a step with these layers differed
  from one device's by 20 % (the loss agreed, and each layer alone agreed
  when sharded; ``tests/test_sharding.py``), which is not understood yet.
  """
  if flag is not None:
    return bool(flag)
  return jax.default_backend() == 'cpu' and jax.device_count() == 1


def _xla_conv(x: jax.Array, k: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME',
                                      dimension_numbers=_DIMS)


def _flat_taps(x: jax.Array, kh: int, kw: int):
  """The padded batch flattened to rows, and each tap's row offset.

  Args:
    x: ``(B, H, W, C)``.
    kh, kw: odd kernel size ('SAME' padding of ``kh // 2``, ``kw // 2``).

  Returns:
    ``(X, P, offsets, (Hp, Wp))``: X ``((B + 1) * Hp * Wp, C)``, the images
    padded to ``(B, Hp, Wp, C)`` and one all-zero image more (so every
    tap's slice ``X[o:o + P]``, ``P = B * Hp * Wp``, is in bounds),
    flattened: a bitcast of one pad, so each tap's slice is a plain copy;
    ``offsets[i * kw + j] = i * Wp + j``.
  """
  b, h, w, c = x.shape
  ph, pw = kh // 2, kw // 2
  hp, wp = h + 2 * ph, w + 2 * pw
  offsets = [i * wp + j for i in range(kh) for j in range(kw)]
  xf = jnp.pad(x, ((0, 1), (ph, ph), (pw, pw), (0, 0))).reshape(-1, c)
  return xf, b * hp * wp, offsets, (hp, wp)


def kernel_grad(x: jax.Array, dy: jax.Array, kh: int, kw: int) -> jax.Array:
  """Gradient of a 'SAME' stride-1 convolution with respect to its kernel.

  Args:
    x: ``(B, H, W, C)`` the convolution's input.
    dy: ``(B, H, W, O)`` the gradient of its output.
    kh, kw: odd kernel size.

  Returns:
    ``(kh, kw, C, O)`` in ``dy``'s dtype, float32 accumulation: equal to
    XLA's up to the order of the sum over B * H * W.
  """
  b, h, w, c = x.shape
  xf, p, offsets, (hp, wp) = _flat_taps(x, kh, kw)
  # dy at the top-left of each padded image, zero at the pad positions.
  dyf = jnp.pad(dy, ((0, 0), (0, hp - h), (0, wp - w), (0, 0))).reshape(
      p, dy.shape[-1])
  flat = xf.reshape(-1)   # a 1-D slice is one contiguous copy
  taps = [jax.lax.dot_general(flat[o * c:(o + p) * c].reshape(p, c), dyf,
                              (((0,), (0,)), ((), ())),
                              preferred_element_type=jnp.float32)
          for o in offsets]
  return jnp.stack(taps).reshape(kh, kw, c, -1).astype(dy.dtype)


def _shifted_sum_conv(x: jax.Array, k: jax.Array) -> jax.Array:
  """'SAME' convolution of a one-channel input as shifted multiply-adds."""
  kh, kw = k.shape[:2]
  h, w = x.shape[1:3]
  xp = jnp.pad(x[..., 0], ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
  out = None
  for i in range(kh):
    for j in range(kw):
      term = xp[:, i:i + h, j:j + w, None] * k[i, j, 0]
      out = term if out is None else out + term
  return out


@jax.custom_vjp
def _conv(x: jax.Array, k: jax.Array) -> jax.Array:
  if x.shape[-1] == 1:
    return _shifted_sum_conv(x, k)
  return _xla_conv(x, k)


def _conv_fwd(x, k):
  return _conv(x, k), (x, k)


def flat_kernel_grad_pays(shape: tuple[int, ...], features: int) -> bool:
  """Whether ``kernel_grad`` beats XLA's kernel gradient for an input of
  ``shape`` (B, H, W, C) and ``features`` outputs.

  Measured per layer of the paper's towers at batch 100 on a 2-core
  x86-64 CPU (the table in ``docs/cpu_training.md``): the flat
  products won by 1.6-4.9x where the output has >= 32 features on >= 500
  positions per image (e.g. 34 x 25, 64 -> 64: 287 vs 1,339 ms); XLA's
  won on the 16 -> 16 layers, on the one-channel first layer and on the
  small last blocks (e.g. 136 x 100, 16 -> 16: 521 vs 718 ms).
  """
  return features >= 32 and shape[1] * shape[2] >= 500


def _conv_bwd(res, dy):
  x, k = res
  if x.shape[-1] == 1:                 # the input layer: dx is never used
    dx = jnp.zeros_like(x)
  else:
    dx = jax.vjp(lambda x: _xla_conv(x, k), x)[1](dy)[0]
  if flat_kernel_grad_pays(x.shape, k.shape[-1]):
    dk = kernel_grad(x, dy, *k.shape[:2]).astype(k.dtype)
  else:
    dk = jax.vjp(lambda k: _xla_conv(x, k), k)[1](dy)[0]
  return dx, dk


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x: jax.Array, k: jax.Array, cpu_kernels: Optional[bool] = None
         ) -> jax.Array:
  """'SAME', stride-1 convolution, NHWC x HWIO -> NHWC.

  Args:
    x: ``(B, H, W, C)``; k: ``(kh, kw, C, O)``, odd kh, kw, same dtype.
    cpu_kernels: this module's formulation (True), XLA's (False), or by
      the default backend (None, see ``use_cpu_kernels``).

  Returns:
    ``(B, H, W, O)``.
  """
  if use_cpu_kernels(cpu_kernels) and k.shape[0] % 2 and k.shape[1] % 2:
    return _conv(x, k)
  return _xla_conv(x, k)


def flax_conv(cpu_kernels: Optional[bool] = None):
  """``conv`` with ``lax.conv_general_dilated``'s signature, for
  ``flax.linen.Conv(conv_general_dilated=...)`` ('SAME', stride 1, no
  dilation or groups; anything else is refused)."""
  return functools.partial(_flax_conv, cpu_kernels=cpu_kernels)


def _flax_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
               rhs_dilation=None, dimension_numbers=None,
               feature_group_count=1, precision=None,
               preferred_element_type=None, *, cpu_kernels=None):
  # The towers set neither: XLA's default precision, the input dtype.
  del precision, preferred_element_type
  if (tuple(window_strides) != (1, 1) or feature_group_count != 1
      or any(d not in (None, 1, (1, 1)) and tuple(d) != (1, 1)
             for d in (lhs_dilation, rhs_dilation))):
    raise ValueError('layers.conv: stride 1, no dilation and no groups only')
  kh, kw = rhs.shape[:2]
  same = [(kh // 2, kh // 2), (kw // 2, kw // 2)]
  if padding != 'SAME' and [tuple(p) for p in padding] != same:
    raise ValueError(f"layers.conv: 'SAME' padding only, got {padding}")
  if dimension_numbers is not None and (
      tuple(dimension_numbers.lhs_spec) != (0, 3, 1, 2)
      or tuple(dimension_numbers.rhs_spec) != (3, 2, 0, 1)):
    raise ValueError('layers.conv: NHWC x HWIO only')
  return conv(lhs, rhs, cpu_kernels)


# --------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------


def _windows(x: jax.Array) -> jax.Array:
  """``(B, H, W, C)`` -> ``(B, H // 2, 2, W // 2, 2, C)`` (odd edge cut)."""
  b, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _max_pool(x: jax.Array) -> jax.Array:
  a = _windows(x)
  return jnp.maximum(jnp.maximum(a[:, :, 0, :, 0], a[:, :, 0, :, 1]),
                     jnp.maximum(a[:, :, 1, :, 0], a[:, :, 1, :, 1]))


def _max_pool_fwd(x):
  y = _max_pool(x)
  return y, (x, y)


def _max_pool_bwd(res, dy):
  x, y = res
  a = _windows(x)
  taken = jnp.zeros(y.shape, bool)
  grads = []
  for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
    first = (a[:, :, i, :, j] == y) & ~taken      # first maximum wins
    taken = taken | first
    grads.append(jnp.where(first, dy, jnp.zeros_like(dy)))
  g = jnp.stack(grads, axis=-2)                    # (B, H2, W2, 4, C)
  b, h2, w2, _, c = g.shape
  g = g.reshape(b, h2, w2, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(
      b, 2 * h2, 2 * w2, c)
  h, w = x.shape[1:3]
  return (jnp.pad(g, ((0, 0), (0, h - 2 * h2), (0, w - 2 * w2), (0, 0))),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, cpu_kernels: Optional[bool] = None) -> jax.Array:
  """2 x 2 max pooling, stride 2, 'VALID' (an odd last row/column dropped).

  Args:
    x: ``(B, H, W, C)``.
    cpu_kernels: as ``conv``.

  Returns:
    ``(B, H // 2, W // 2, C)``; its gradient goes to the first maximum of
    each window in row-major order, as XLA's ``select-and-scatter`` does.
  """
  if use_cpu_kernels(cpu_kernels):
    return _max_pool(x)
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')


# --------------------------------------------------------------------------
# BatchNorm + ELU
# --------------------------------------------------------------------------


def _bn_elu_fwd(x, scale, bias, epsilon):
  """Float32 ``(B, H, W, C)``: batch statistics, normalisation and ELU in
  two passes over ``x`` (one reduction, one elementwise fusion)."""
  c = x.shape[-1]
  n = x.size // c
  x2 = x.reshape(-1, c)
  mean = jnp.sum(x2, 0) / n
  # flax's fast variance: E[x^2] - E[x]^2 in float32, clipped at 0.
  var = jnp.maximum(jnp.sum(x2 * x2, 0) / n - mean * mean, 0.)
  r = jax.lax.rsqrt(var + epsilon)
  z = (x - mean) * (r * scale) + bias
  y = jnp.where(z > 0, z, jnp.expm1(z))
  return (y, mean, var), (x, y, mean, r, scale, bias)


def _bn_elu_bwd(epsilon, res, g):
  """The gradient in two passes: the per-channel sums of ``dz`` and
  ``dz * xhat``, then one elementwise fusion for ``dx``."""
  del epsilon
  x, y, mean, r, scale, bias = res
  dy, dmean, dvar = g
  c = x.shape[-1]
  n = x.size // c
  xhat = (x - mean) * r
  dz = jnp.where(xhat * scale + bias > 0, dy, dy * (y + 1))  # elu' = y + 1
  dz2, xhat2 = dz.reshape(-1, c), xhat.reshape(-1, c)
  sdz = jnp.sum(dz2, 0)
  sdzx = jnp.sum(dz2 * xhat2, 0)
  dx = (scale * r) * (dz - sdz / n - xhat * (sdzx / n))
  # The statistics are outputs too (zero cotangents in training, where
  # they only feed the running averages; exact if anything uses them).
  dx = dx + dmean / n + dvar * (2. / n) * (x - mean)
  return dx, sdzx, sdz


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def bn_elu(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
           ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """ELU of a training-mode BatchNorm over all axes but the last.

  Args:
    x: ``(..., C)`` float32.
    scale, bias: ``(C,)`` float32.
    epsilon: added to the variance.

  Returns:
    ``(y, mean, var)``: ``y = elu((x - mean) / sqrt(var + epsilon) * scale
    + bias)`` in float32, and the batch mean and biased variance ``(C,)``
    (``flax.linen.BatchNorm``'s statistics, ``use_fast_variance``).  The
    gradient is the closed form of BatchNorm's, so XLA:CPU makes two passes
    forward and two backward instead of autodiff's chain of reductions and
    broadcasts (``docs/cpu_training.md``).
  """
  return _bn_elu_fwd(x, scale, bias, epsilon)[0]


bn_elu.defvjp(_bn_elu_fwd, _bn_elu_bwd)


class BatchNorm(nn.BatchNorm):
  """``flax.linen.BatchNorm``, optionally followed by an ELU, fused on XLA:CPU.

  The same variables as flax's (``params``: ``scale``, ``bias``;
  ``batch_stats``: ``mean``, ``var``) under the same automatic names
  (``BatchNorm_0``, ...), so checkpoints load either way.  With ``elu``,
  in training mode, over the last axis, without a cross-device
  ``axis_name``, and where ``use_cpu_kernels(cpu_kernels)``, the output is
  ``bn_elu`` computed in float32 (whatever ``dtype`` asks: the towers'
  BatchNorms are float32); otherwise flax's BatchNorm, then ``nn.elu``.

  Attributes (besides flax's):
    elu: apply an ELU to the output.
    cpu_kernels: as ``conv``.
  """
  elu: bool = False
  cpu_kernels: Optional[bool] = None

  @nn.compact
  def __call__(self, x, use_running_average: Optional[bool] = None, *,
               mask=None):
    use_ra = nn.merge_param('use_running_average', self.use_running_average,
                            use_running_average)
    fused = (self.elu and not use_ra and mask is None
             and self.axis_name is None and self.axis in (-1, x.ndim - 1)
             and self.use_scale and self.use_bias
             and use_cpu_kernels(self.cpu_kernels))
    if not fused:
      y = super().__call__(x, use_running_average, mask=mask)
      return nn.elu(y) if self.elu else y
    c = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean',
                            lambda s: jnp.zeros(s, jnp.float32), (c,))
    ra_var = self.variable('batch_stats', 'var',
                           lambda s: jnp.ones(s, jnp.float32), (c,))
    scale = self.param('scale', self.scale_init, (c,), self.param_dtype)
    bias = self.param('bias', self.bias_init, (c,), self.param_dtype)
    y, mean, var = bn_elu(x.astype(jnp.float32), scale.astype(jnp.float32),
                          bias.astype(jnp.float32), self.epsilon)
    if not self.is_initializing():
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
      ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var)
    return y
