"""The public API: load a trained model, embed sheets and audio.

::

  import dccaflax
  model = dccaflax.load(workdir)                 # a trained run's workdir
  s = dccaflax.embed_sheet(model, sheets)        # (N, 40, 100) -> (N, 32)
  a = dccaflax.embed_audio(model, specs)         # (N, 136, 100) -> (N, 32)
  similarity = a @ s.T                           # cosine similarity

Both embeddings live in the CCA space fitted on training pairs and are
L2-normalised, so a dot product is the cosine similarity of the paper's
Eq. 4.  ``load`` reads the workdir through ``dccaflax.checkpoints`` alone:
neither the trainer nor any data-preparation code is imported.  The
four names are implemented in ``dccaflax.embedding``, which the library's
own modules use.
"""

from dccaflax.embedding import embed_audio
from dccaflax.embedding import embed_sheet
from dccaflax.embedding import load
from dccaflax.embedding import Model

__all__ = ['Model', 'load', 'embed_sheet', 'embed_audio']
