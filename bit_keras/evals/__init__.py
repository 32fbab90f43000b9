"""Evaluations of frozen representations: the few-shot linear probe (BiT's and big_vision's "fewshot_lsr").

* :mod:`bit_keras.evals.lsr`: the closed-form L2-regularised least-squares classifier, and the choice of its
  regulariser on the training pool (never the test set). NumPy only.
* :mod:`bit_keras.evals.features`: the frozen features of a model (pre-logits of a zoo model), the zoo entry's
  preprocessing, and a per-image feature cache (in memory and on disk) that makes shots and seeds free and
  lets an interrupted run resume.
* :mod:`bit_keras.evals.fewshot`: :func:`~bit_keras.evals.fewshot.fewshot_probe`, the runner.
* :mod:`bit_keras.evals.objectnet`: :func:`~bit_keras.evals.objectnet.objectnet`, an ILSVRC-2012 classifier on
  ObjectNet's 113 classes that overlap ImageNet-1k (the release's mappings ship in ``evals/data``).

At the recipes' level: imports errors, atomic, backend, plots, models and data; ``bit_keras.recipes.demo``
uses it.
"""
