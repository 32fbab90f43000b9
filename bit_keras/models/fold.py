"""The folded (serving) form of a BiT model: weight standardization applied once, into plain ``Conv2D`` kernels.

A :class:`~bit_keras.models.layers.StandardizedConv2D` standardizes its kernel at every call, so that training
sees the raw kernel. A model that only serves (``training=False``, weights frozen) repeats the same work on
every batch: 23.5 M kernel values for an R50x1, a fixed cost that dominates serving one image at a time.
:func:`fold_standardization` builds the same network with plain ``keras.layers.Conv2D`` layers holding the
standardized kernels, so serving pays nothing for it; ``hub_export.export(..., fold_standardization=True)``
writes the same form as a SavedModel.

Example:
    >>> import numpy as np
    >>> from bit_keras.models.resnet import resnet_v2
    >>> model = resnet_v2((1, 1, 1, 1), width=0.25, num_classes=3, groups=8)
    >>> folded = fold_standardization(model)
    >>> x = np.random.rand(2, 32, 32, 3).astype("float32")
    >>> bool(np.allclose(model(x), folded(x), atol=1e-5))
    True
"""

from __future__ import annotations

import keras
from keras import ops

from bit_keras.errors import ConfigError, WeightFileError
from bit_keras.models.layers import StandardizedConv2D, standardize_kernel
from bit_keras.models.policy import dtype_policy
from bit_keras.models.resnet import model_input_range, resnet_v2
from bit_keras.models.spec import ArchSpec, get_arch
from bit_keras.models.weights import head_layer, model_spec


def folded_arch(model: keras.Model, arch: ArchSpec | str | None = None, action: str = "fold") -> ArchSpec:
    """The architecture of ``model``: ``arch`` when given (checked against the model), else read from its weights.

    ``action`` names what the caller does with the model in the error message (``hub_export`` says "export").

    Example:
        >>> from bit_keras.models.resnet import resnet_v2
        >>> folded_arch(resnet_v2((1, 1, 1, 1), width=0.25, groups=8)).describe()
        'R14x0.25'
    """
    try:
        found = model_spec(model)
    except WeightFileError as err:
        raise ConfigError(f"model {model.name!r} is not a BiT ResNet-v2 built by bit_keras ({err}); {action} a model "
                          "from bit_keras.create_model / resnet_v2 / transfer") from err
    if arch is None:
        return found
    given = get_arch(arch)
    if given != found:
        raise ConfigError(f"arch={given.describe()} does not match the model, which is a {found.describe()} network")
    return given


def fold_standardization(model: keras.Model, arch: ArchSpec | str | None = None) -> keras.Model:
    """The same network with plain ``Conv2D`` layers whose kernels are ``model``'s standardized kernels.

    The serving form: the same outputs (within float32 rounding, ~1e-6) with no weight standardization per call,
    under the model's dtype policy, layer names unchanged (feature layers, ``pre_logits``, ``head``). It is a new
    model holding copies: later changes to ``model`` do not reach it, and training it would no longer
    standardize (fine-tune ``model``, then fold again). Works on every Keras backend.

    Args:
        model: a BiT model from :func:`bit_keras.create_model`, :func:`bit_keras.resnet_v2` or
            :func:`bit_keras.transfer` (with or without its head).
        arch: the architecture, when known (checked against the model); read from the weights otherwise.

    Example:
        >>> import bit_keras
        >>> model = bit_keras.resnet_v2("R14x0.25", num_classes=10)
        >>> sorted({type(layer).__name__ for layer in fold_standardization(model).layers} & {"Conv2D", "StandardizedConv2D"})
        ['Conv2D']
    """
    head = head_layer(model)
    spec = folded_arch(model, arch)
    with dtype_policy(model.dtype_policy.name):
        folded = resnet_v2(spec, num_classes=head.units if head is not None else None,
                           input_range=model_input_range(model), conv_layer=keras.layers.Conv2D, name=model.name)
    for layer in folded.layers:
        if not layer.weights:
            continue
        source = model.get_layer(layer.name)
        if isinstance(source, StandardizedConv2D):
            kernel = ops.cast(source.kernel.value, "float64" if source.kernel.dtype == "float64" else "float32")
            layer.kernel.assign(ops.cast(standardize_kernel(kernel, source.epsilon), layer.kernel.dtype))
        else:
            layer.set_weights(source.get_weights())
    return folded
