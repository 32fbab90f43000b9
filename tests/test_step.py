"""TrainStep under batch_split: the same update as one batch, with the kernels standardized once per step."""

import numpy as np
import tensorflow as tf

import bit_keras.models.layers as layers_module
from bit_keras.models import native
from bit_keras.models.layers import StandardizedConv2D
from bit_keras.models.policy import seeded_init
from bit_keras.models.resnet import resnet_v2
from bit_keras.train.step import TrainStep, make_optimizer


def _step(batch_split: int, data, remat: bool = False):
    with seeded_init(3):
        model = resnet_v2((1, 1, 1, 1), width=0.25, num_classes=4, groups=8)
    rng = np.random.default_rng(0)
    for v in model.weights:  # a non-zero head, so that every layer gets a gradient
        if v.path.startswith("head"):
            v.assign(rng.normal(0, 0.1, tuple(v.shape)).astype("float32"))
    step = TrainStep(model, make_optimizer(model, momentum=0.9), tf.distribute.get_strategy(), batch_size=8,
                     batch_split=batch_split, remat=remat, weight_decay=1e-3)
    step.optimizer.learning_rate.assign(0.1)
    losses = [float(step(data)) for _ in range(2)]
    return model, losses


def test_batch_split_standardizes_once_per_step_and_matches_one_batch(monkeypatch):
    rng = np.random.default_rng(1)
    data = (rng.uniform(0, 1, (8, 32, 32, 3)).astype("float32"), tf.one_hot(rng.integers(0, 4, 8), 4))
    whole, whole_losses = _step(1, data)

    graphs = []
    original, original_native = layers_module.standardize_kernel, native.standardize

    def recording(kernel, epsilon=layers_module.WS_EPSILON):
        graphs.append(tf.compat.v1.get_default_graph().name)
        return original(kernel, epsilon)

    def recording_native(kernel, epsilon=layers_module.WS_EPSILON, dtype="float32"):
        graphs.append(tf.compat.v1.get_default_graph().name)
        return original_native(kernel, epsilon, dtype)

    # either path counts: the Keras ops, or the native kernel on TensorFlow's CPU
    monkeypatch.setattr(layers_module, "standardize_kernel", recording)
    monkeypatch.setattr(native, "standardize", recording_native)
    split, split_losses = _step(4, data)
    convs = [layer for layer in split.layers if isinstance(layer, StandardizedConv2D)]
    # traced once: one standardization per convolution, none inside the micro-batch loop's body
    assert len(graphs) == len(convs) and not any("while" in g for g in graphs), graphs
    np.testing.assert_allclose(split_losses, whole_losses, rtol=1e-5)
    for a, b in zip(whole.weights, split.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=2e-6, err_msg=a.path)
    assert np.abs(whole.get_layer("head").kernel.numpy()).max() > 0.1  # the steps did move the weights

    graphs.clear()
    remat, remat_losses = _step(4, data, remat=True)  # rematerialised units standardize in the loop, as before
    assert graphs and any("while" in g for g in graphs)
    np.testing.assert_allclose(remat_losses, whole_losses, rtol=1e-5)
