"""Evaluations of a trained model: one module per question.

Each evaluator is a function ``run(model(s), ...) -> rows`` and a
``markdown(rows, title)`` of its table; ``results.write`` puts the table
and the rows (``<name>.md`` / ``<name>.json``) next to the model.
``experiments.eval --evals ...`` is their one command.

* ``paper``: the paper's protocol (Table 2): the first 16,000 pairs of each
  split, both directions, and optionally every pair of the split.
* ``level``: the same at other audio levels and under gain curves.
* ``collections``: the paper's protocol on each collection's test split,
  in one or more engravings, with the engravings' geometry.
* ``robust``: snippet retrieval and piece identification on renderings no
  training data holds (held-out conditions, rendered by a callable that
  ``data_prep.heldout`` passes in: the library needs no synthesizer).
* ``identification``: piece identification on fresh renderings.

Validation during training is ``dccaflax.validation``.
"""
