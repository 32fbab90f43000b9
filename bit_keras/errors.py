"""Every error bit-keras raises on purpose, under one root: :class:`BitKerasError`.

Each message names the thing that is wrong (a file, a key, a model name, an option) and the fix. The classes
also derive from the built-in exception a caller would expect (``ValueError`` for bad input, ``OSError`` for
downloads, ``RuntimeError`` for a stopped run), so ``except ValueError`` keeps working. The command line turns
any of them into one line on stderr and a non-zero exit code (``--debug`` shows the traceback).

This module imports nothing from bit_keras and nothing heavy: every layer of the package may use it.

Example:
    >>> from bit_keras.errors import BitKerasError, DataError
    >>> issubclass(DataError, BitKerasError), issubclass(DataError, ValueError)
    (True, True)
    >>> try:
    ...     raise DataError("class folder data/cat is empty: add images or remove the folder")
    ... except BitKerasError as err:
    ...     print(err)
    class folder data/cat is empty: add images or remove the folder
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BitKerasError",
    "ConfigError",
    "DataError",
    "DownloadError",
    "ExportError",
    "HandleNotFoundError",
    "InvalidHandleError",
    "LabelFileError",
    "MissingDependencyError",
    "MissingFileError",
    "NativeOpsError",
    "Preempted",
    "RegistryError",
    "TfdsError",
    "TrainingDivergedError",
    "UnknownModelError",
    "VersionExistsError",
    "WeightFileError",
    "WeightsUnavailableError",
]


class BitKerasError(Exception):
    """The root of every error bit-keras raises on purpose; the message says what is wrong and how to fix it."""


class ConfigError(BitKerasError, ValueError, TypeError):
    """Options that do not fit together, a value out of range or of the wrong type (named, with the valid choices).

    Also a ``TypeError``, since a wrong keyword or argument type is one.
    """


class BackendError(BitKerasError, RuntimeError):
    """A TensorFlow-only part (tf.distribute pre-training, SavedModel export, the hub server...) called on
    another Keras backend; the message names the backend to use (``KERAS_BACKEND=tensorflow``)."""


class MissingDependencyError(BitKerasError, ImportError):
    """An optional package the call needs is not installed (named, with the ``pip install`` that adds it)."""


class MissingFileError(BitKerasError, FileNotFoundError):
    """A file or folder the call needs does not exist (named, with what to pass instead)."""


class UnknownModelError(BitKerasError, ValueError):
    """A model name that is not in the zoo; the message lists the closest names."""


class WeightsUnavailableError(BitKerasError, ValueError):
    """A zoo entry whose weights were never published (BiT-L)."""


class WeightFileError(BitKerasError, ValueError):
    """A weight file that cannot be loaded into the model: corrupt, not an ``.npz``, or with missing, extra,
    misshapen, non-float or non-finite arrays (each named with its key)."""


class DownloadError(BitKerasError, OSError):
    """A download failed; the message names the URL, the destination, the cause and the fix."""


class LabelFileError(DownloadError, ValueError):
    """A label-name file that is not UTF-8 text with one non-empty line per class; it is never left in the cache."""


class DataError(BitKerasError, ValueError):
    """Bad or unusable input data; the message names the culprit (a file, a class, an example) and the fix."""


class TfdsError(DataError):
    """A tensorflow-datasets source that cannot be used (unknown, not prepared and offline, not image classification)."""


class ExportError(BitKerasError, ValueError):
    """A model or arguments that cannot be exported as asked; the message says why and what to do."""


class NativeOpsError(BitKerasError, RuntimeError):
    """bit-keras's native CPU kernels could not be built or loaded (the compiler's error, and how to build without
    them: ``BIT_KERAS_NATIVE_OPS=0``)."""


class TrainingDivergedError(BitKerasError, RuntimeError):
    """The training loss (or the weights) became NaN or infinite; the last good checkpoint is kept.

    Attributes:
        step: the step whose loss (or resulting weights) was not finite.
        lr: the learning rate at that step.
        loss: the offending loss value.
        checkpoint: path of the last good checkpoint, or None when none was saved.
    """

    def __init__(self, step: int, lr: float, loss: float, checkpoint: str | None, what: str = "loss") -> None:
        self.step, self.lr, self.loss, self.checkpoint = step, lr, loss, checkpoint
        kept = (
            f"the last good checkpoint {checkpoint} is kept (a new run on the same output_dir resumes from it)"
            if checkpoint
            else "no checkpoint was saved before it"
        )
        super().__init__(
            f"training diverged at step {step}: the {what} is {loss} with learning rate {lr:.6g}; {kept}. "
            "Fix: lower base_lr (e.g. base_lr=0.001), enlarge batch_size, or use mixed_precision=None"
        )


class Preempted(BitKerasError, RuntimeError):
    """The run was told to stop (SIGTERM, a maintenance event); a checkpoint of the last step was saved."""


class RegistryError(BitKerasError):
    """A registry operation failed; the message names the handle or path and the fix."""


class InvalidHandleError(RegistryError, ValueError):
    """A handle that is not ``publisher/name/variant/version`` with safe segments."""


class HandleNotFoundError(RegistryError, LookupError):
    """No published version under that handle."""


class VersionExistsError(RegistryError, FileExistsError):
    """The version is already published; versions are never overwritten."""
