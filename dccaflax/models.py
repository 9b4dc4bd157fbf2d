"""The two DCCA towers of Dorfer, Arzt & Widmer (2016), Table 1.

Each view (sheet image, spectrogram) gets its own VGG-style tower::

  4 x [2 x (Conv 3x3 'SAME', no bias -> BatchNorm -> ELU) -> MaxPool 2x2/2]
      with 16, 32, 64, 64 feature maps
  Conv 1x1 -> h (= 32), no bias -> BatchNorm -> LINEAR (no nonlinearity)
  global average pooling -> (N, h)

Spatial sizes (H x W) through a full tower::

  sheet  40 x 100 -> 20 x 50 -> 10 x 25 -> 5 x 12 -> 2 x 6 -> GAP
  spec  136 x 100 -> 68 x 50 -> 34 x 25 -> 17 x 12 -> 8 x 6 -> GAP

Inputs are 2-D per example; the channel axis is added inside:

* sheets ``(N, 40, 100)``, uint8 or float, pixel values in ``[0, 255]`` with
  255 = white paper (the ``dccaflax.snippets`` convention).  They are mapped to
  ``1 - x / 255`` (ink 1, paper 0) in float32, whatever the input dtype.
* spectrograms ``(N, 136, 100)`` float32, ``log(1 + magnitude)`` (frequency
  bins x frames).  The paper feeds them as they are (the BatchNorm after the
  first conv takes care of scale), so a recording's loudness changes the
  input; with ``level_norm='peak'`` (or ``'mean'``) each excerpt is first
  brought to a reference level (``dccaflax.level.normalize``), which makes
  the audio tower's output independent of a global gain by construction.

Mixed precision: convolutions run in ``dtype`` (e.g. ``jnp.bfloat16``) with
float32 parameters; every BatchNorm (statistics, normalisation, output) runs in
float32, so the tower output ``(N, out_dim)`` is always float32.

BatchNorm follows Lasagne's defaults (the paper's framework): running-average
update ``new = 0.9 * old + 0.1 * batch`` (``bn_momentum=0.9``) and
``epsilon=1e-4``.  The paper's Lasagne BN used exponential moving averages as
well, so 0.9 is the faithful choice; it also settles within ~50 steps.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence, Tuple

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp

from dccaflax import cca
from dccaflax import layers
from dccaflax import level
from dccaflax import snippets

PAPER_WIDTHS = (16, 32, 64, 64)   # feature maps of the four conv blocks
PAPER_BN_MOMENTUM = 0.9           # Lasagne BatchNormLayer alpha = 0.1
PAPER_BN_EPSILON = 1e-4           # Lasagne BatchNormLayer epsilon

SHEET = 'sheet'
AUDIO = 'audio'


def normalize_sheet(x: jax.Array) -> jax.Array:
  """Sheet pixels ``[0, 255]`` (255 = paper) -> float32 ink map in ``[0, 1]``.

  Args:
    x: ``(..., H, W)`` uint8 or float, 255 = white paper, 0 = black ink.

  Returns:
    ``(..., H, W)`` float32, ``1 - x / 255`` (ink 1, paper 0).
  """
  return 1.0 - jnp.asarray(x, jnp.float32) / 255.0


def normalize_spec(x: jax.Array, level_norm: str = level.NONE) -> jax.Array:
  """Spectrogram ``log(1 + magnitude)`` -> float32 tower input.

  Args:
    x: ``(..., bins, frames)`` float, one excerpt per leading index.
    level_norm: ``'peak'`` or ``'mean'``: each excerpt to the reference level
      by that statistic (``level.normalize``); ``'none'``: as is (the paper).

  Returns:
    ``(..., bins, frames)`` float32.
  """
  return level.normalize(x, level_norm)


_INPUT_KINDS = (SHEET, AUDIO, None)


class Tower(nn.Module):
  """One view's network: 2-D input ``(N, H, W)`` -> embedding ``(N, out_dim)``.

  Attributes:
    widths: feature maps of the conv blocks (each block: 2 convs + max pool).
    out_dim: h, feature maps of the final 1x1 conv = embedding size.
    dtype: computation dtype of the convolutions; params stay float32.
    bn_momentum: running-average decay of BatchNorm statistics.
    bn_epsilon: BatchNorm epsilon.
    axis_name: passed to every BatchNorm (cross-device batch statistics under
      ``pmap``/``shard_map``); None for per-device statistics.
    input_kind: ``'sheet'`` (pixels -> ``1 - x/255``), ``'audio'``
      (``normalize_spec``) or None (cast to float32 only).
    level_norm: for ``'audio'``: each excerpt to the reference level by
      this ``dccaflax.level`` method (``'none'``: the paper's input).
    cpu_kernels: convolutions, max pooling and BatchNorm + ELU as
      ``dccaflax.layers`` writes them for XLA:CPU (True), XLA's and flax's
      own (False), or by the default backend (None); the same maths either
      way.
  """
  widths: Sequence[int] = PAPER_WIDTHS
  out_dim: int = cca.PAPER_DIM
  dtype: Any = jnp.float32
  bn_momentum: float = PAPER_BN_MOMENTUM
  bn_epsilon: float = PAPER_BN_EPSILON
  axis_name: Optional[str] = None
  input_kind: Optional[str] = None
  level_norm: str = level.NONE
  cpu_kernels: Optional[bool] = None

  def _bn(self, train: bool, elu: bool) -> nn.BatchNorm:
    """Float32 BatchNorm (statistics, scale/bias and output), then an ELU
    if ``elu`` (fused on XLA:CPU, ``layers.BatchNorm``)."""
    return layers.BatchNorm(use_running_average=not train,
                            momentum=self.bn_momentum,
                            epsilon=self.bn_epsilon, dtype=jnp.float32,
                            param_dtype=jnp.float32, axis_name=self.axis_name,
                            elu=elu, cpu_kernels=self.cpu_kernels)

  def _conv(self, features: int, size: int) -> nn.Conv:
    """Bias-free conv (a BatchNorm follows) computing in ``self.dtype``."""
    return nn.Conv(features, (size, size), padding='SAME', use_bias=False,
                   dtype=self.dtype, param_dtype=jnp.float32,
                   conv_general_dilated=layers.flax_conv(self.cpu_kernels))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Embeds a batch of 2-D inputs.

    Args:
      x: ``(N, H, W)`` sheets (pixels, 255 = paper) or spectrograms
        (bins x frames), see ``input_kind``.
      train: True uses batch statistics and updates ``batch_stats`` (apply
        with ``mutable=['batch_stats']``); False uses the running averages.

    Returns:
      ``(N, out_dim)`` float32 embeddings (linear, not L2-normalised).
    """
    if x.ndim != 3:
      raise ValueError(f'expected (N, H, W) input, got shape {x.shape}')
    if self.input_kind not in _INPUT_KINDS:
      raise ValueError(f'unknown input_kind {self.input_kind!r}')
    if self.input_kind == SHEET:
      x = normalize_sheet(x)
    elif self.input_kind == AUDIO:
      x = normalize_spec(x, self.level_norm)
    else:
      x = jnp.asarray(x, jnp.float32)
    x = x[..., None]                                   # (N, H, W, 1)
    for features in self.widths:
      for _ in range(2):
        x = self._conv(features, 3)(x)
        x = self._bn(train, elu=True)(x).astype(self.dtype)
      x = layers.max_pool(x, self.cpu_kernels)
    x = self._conv(self.out_dim, 1)(x)
    x = self._bn(train, elu=False)(x)                  # float32, LINEAR
    return jnp.mean(x, axis=(1, 2))                    # (N, out_dim)


class DCCAModel(nn.Module):
  """Sheet tower and audio tower; outputs the two views' embeddings.

  Parameters live under ``params/sheet_tower`` and ``params/audio_tower``
  (same for ``batch_stats``).

  Attributes:
    widths: conv block feature maps, shared by both towers.
    out_dim: embedding size h.
    dtype: convolution computation dtype (params and outputs float32).
    bn_momentum: BatchNorm running-average decay.
    axis_name: BatchNorm cross-device axis name, or None.
    level_norm: audio excerpts to the reference level by this method
      (``normalize_spec``); ``'none'``: the paper's input.
    cpu_kernels: ``Tower.cpu_kernels`` (None: by the default backend).
  """
  widths: Sequence[int] = PAPER_WIDTHS
  out_dim: int = cca.PAPER_DIM
  dtype: Any = jnp.float32
  bn_momentum: float = PAPER_BN_MOMENTUM
  axis_name: Optional[str] = None
  level_norm: str = level.NONE
  cpu_kernels: Optional[bool] = None

  def setup(self):
    kw = dict(widths=tuple(self.widths), out_dim=self.out_dim,
              dtype=self.dtype, bn_momentum=self.bn_momentum,
              axis_name=self.axis_name, cpu_kernels=self.cpu_kernels)
    self.sheet_tower = Tower(input_kind=SHEET, **kw)
    self.audio_tower = Tower(input_kind=AUDIO, level_norm=self.level_norm,
                             **kw)

  def __call__(self, sheets: jax.Array, specs: jax.Array,
               train: bool) -> Tuple[jax.Array, jax.Array]:
    """Embeds paired sheets and spectrograms.

    Args:
      sheets: ``(N, 40, 100)`` uint8/float pixels, 255 = paper.
      specs: ``(N, 136, 100)`` float32 log-spectrogram excerpts.
      train: batch statistics + ``batch_stats`` update if True.

    Returns:
      ``(fx, gy)``: ``(N, out_dim)`` float32 sheet and audio embeddings.
    """
    return self.sheet_tower(sheets, train), self.audio_tower(specs, train)

  def embed_sheet(self, sheets: jax.Array, train: bool = False) -> jax.Array:
    """``(N, 40, 100)`` sheets -> ``(N, out_dim)`` float32 (``method=``)."""
    return self.sheet_tower(sheets, train)

  def embed_audio(self, specs: jax.Array, train: bool = False) -> jax.Array:
    """``(N, 136, 100)`` spectrograms -> ``(N, out_dim)`` float32."""
    return self.audio_tower(specs, train)


def scaled_widths(width: float, base: Sequence[int] = PAPER_WIDTHS
                  ) -> Tuple[int, ...]:
  """``base`` feature maps times ``width``, rounded, at least 1 each.

  E.g. ``scaled_widths(0.25) == (4, 8, 16, 16)``.
  """
  if width <= 0:
    raise ValueError(f'width must be positive, got {width}')
  return tuple(max(1, int(round(w * width))) for w in base)


def create_model(width: float = 1.0, out_dim: int = cca.PAPER_DIM,
                 dtype: Any = jnp.float32,
                 axis_name: Optional[str] = None,
                 bn_momentum: float = PAPER_BN_MOMENTUM,
                 level_norm: str = level.NONE) -> DCCAModel:
  """The paper's model (``width=1``) or a slimmer one for quick CPU runs.

  Args:
    width: multiplier of the block widths (16, 32, 64, 64); 0.25 gives
      (4, 8, 16, 16).  ``out_dim`` is not scaled.
    out_dim: embedding size h (paper: 32).
    dtype: convolution computation dtype, e.g. ``jnp.bfloat16``.
    axis_name: BatchNorm cross-device axis name, or None.
    bn_momentum: BatchNorm running-average decay.
    level_norm: audio excerpts to the reference level before the audio tower
      (independent of the recording's loudness), by ``'peak'`` or ``'mean'``
      (``dccaflax.level``); ``'none'``: the paper's input.  A bool is read
      as ``check_method`` reads it (True: ``'mean'``).
  """
  return DCCAModel(widths=scaled_widths(width), out_dim=out_dim, dtype=dtype,
                   bn_momentum=bn_momentum, axis_name=axis_name,
                   level_norm=level.check_method(level_norm))


def from_config(config) -> DCCAModel:
  """The towers a run's settings describe: anything with ``width``,
  ``out_dim``, ``dtype`` (a name, e.g. 'bfloat16') and ``level_norm``, as a
  ``dccaflax.config.TrainConfig`` has."""
  return create_model(width=config.width, out_dim=config.out_dim,
                      dtype=jnp.dtype(config.dtype),
                      level_norm=config.level_norm)


# Conv kernels start LeCun normal, as flax's ``nn.Conv`` initialises them
# (``nn.initializers.lecun_normal``): a standard normal truncated at +-2,
# rescaled to unit variance, times ``fan_in ** -0.5``.
_TRUNCATION = 2.0
_TRUNCATED_STD = 0.87962566103423978   # sd of N(0, 1) truncated to [-2, 2]


def _example_inputs() -> Tuple[jax.Array, jax.Array]:
  """Two blank sheets and two silent excerpts: what ``init`` traces."""
  return (jnp.zeros((2, snippets.SHEET_HEIGHT, snippets.SHEET_WIDTH),
                    jnp.uint8),
          jnp.zeros((2, snippets.SPEC_BINS, snippets.SPEC_FRAMES),
                    jnp.float32))


def variable_shapes(model: DCCAModel) -> dict:
  """``{'params', 'batch_stats'}`` of ``model`` as ``jax.ShapeDtypeStruct``
  leaves: the structure a checkpoint is restored into (nothing computed or
  compiled)."""
  return jax.eval_shape(functools.partial(model.init, train=False),
                        jax.random.key(0), *_example_inputs())


@functools.partial(jax.jit, static_argnames=('model',))
def init_variables(rng: jax.Array, model: DCCAModel) -> dict:
  """Fresh ``{'params', 'batch_stats'}`` of ``model`` (compiled once per
  model).

  BatchNorm variables are flax's (scale 1, bias 0, mean 0, var 1).  The conv
  kernels are LeCun normal, as flax draws them, but from one draw of ``rng``
  cut into the kernels: flax draws each kernel with its own key, and
  XLA:CPU compiles each of those threefry programs on its own (15 s for the
  18 kernels on a 2-core CPU, against ~1.5 s for one draw), a cost every
  ``train`` start and test paid.  Flax's own draws are traced but unused,
  so they are not compiled.
  """
  variables = model.init(rng, *_example_inputs(), train=False)
  flat = traverse_util.flatten_dict(variables)
  kernels = [k for k in flat if k[-1] == 'kernel']
  sizes = [flat[k].size for k in kernels]
  z = jax.random.truncated_normal(rng, -_TRUNCATION, _TRUNCATION,
                                  (sum(sizes),), jnp.float32)
  start = 0
  for k, size in zip(kernels, sizes):
    shape = flat[k].shape
    fan_in = math.prod(shape[:-1])
    flat[k] = (z[start:start + size].reshape(shape)
               * (fan_in ** -0.5 / _TRUNCATED_STD))
    start += size
  return traverse_util.unflatten_dict(flat)
