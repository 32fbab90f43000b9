"""Which Keras backend runs, and the one check TensorFlow-only code makes.

bit-keras's models (layers, the ResNet-v2 builder, weight files, ``.keras`` files) run on every Keras 3
backend: TensorFlow (the default), JAX and PyTorch, chosen as Keras chooses it (``KERAS_BACKEND`` or
``~/.keras/keras.json``). Fine-tuning (:func:`bit_keras.transfer`) runs on TensorFlow and JAX. What is
TensorFlow by nature (``tf.distribute`` pre-training, SavedModel export and the hub-style registry's
SavedModels, the ``hub.KerasLayer`` path) calls :func:`require_tensorflow`, which raises a
:class:`~bit_keras.errors.BackendError` naming the backend to use.

Example:
    >>> from bit_keras.backend import backend, require_tensorflow
    >>> backend() in ("tensorflow", "jax", "torch")
    True
    >>> require_tensorflow("pre-training") if backend() == "tensorflow" else None
"""

from __future__ import annotations

from bit_keras.errors import BackendError

BACKENDS = ("tensorflow", "jax", "torch")


def backend() -> str:
    """The Keras backend of this process: ``"tensorflow"``, ``"jax"`` or ``"torch"`` (imports Keras)."""
    import keras

    return keras.backend.backend()


def require_backend(backends: tuple[str, ...], what: str) -> None:
    """Raise :class:`~bit_keras.errors.BackendError` unless Keras runs on one of ``backends``.

    Args:
        backends: the backends that can run it, e.g. ``("tensorflow", "jax")``.
        what: the feature, as the message should name it (e.g. ``"Fine-tuning (bit_keras.transfer)"``).

    Example:
        >>> require_backend(BACKENDS, "the model zoo")  # runs everywhere: nothing raised
    """
    name = backend()
    if name not in backends:
        choices = " or ".join(f"KERAS_BACKEND={b}" for b in backends)
        raise BackendError(
            f"{what} runs on {', '.join(backends)}, and Keras runs on {name!r} here. Run it with {choices} "
            f"(a model moves between backends as a .keras or .npz file: bit_keras.save_npz / "
            f"keras.saving.load_model)."
        )


def require_tensorflow(what: str) -> None:
    """Raise :class:`~bit_keras.errors.BackendError` unless Keras runs on TensorFlow.

    Args:
        what: the feature, as the message should name it (e.g. ``"SavedModel export"``).

    Example:
        >>> import pytest, keras
        >>> if keras.backend.backend() != "tensorflow":
        ...     with pytest.raises(BackendError, match="KERAS_BACKEND=tensorflow"):
        ...         require_tensorflow("SavedModel export")
    """
    require_backend(("tensorflow",), what)
