"""Rematerialised residual units (bit_keras.train.remat): same outputs and gradients, less memory kept."""

import numpy as np
import pytest
import tensorflow as tf

from bit_keras.errors import ConfigError
from bit_keras.train.remat import remat_forward
from bit_keras.models.resnet import resnet_v2


def _model():
    model = resnet_v2((1, 2, 1, 1), width=0.25, num_classes=5, groups=8)
    rng = np.random.default_rng(0)
    # non-trivial weights everywhere (the head is zero-initialised, GroupNorm gammas are ones)
    model.set_weights([rng.normal(1.0 if w.ndim == 1 else 0.0, 0.3, w.shape).astype("float32")
                       for w in model.get_weights()])
    return model


def _loss_and_grads(model, forward, images, labels):
    @tf.function(autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = forward(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        return loss, tape.gradient(loss, model.trainable_variables)

    return step(images, labels)


def test_remat_gives_the_same_loss_and_gradients_inside_tf_function():
    model = _model()
    images = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1, 2, 3])
    forward = remat_forward(model)
    assert [u.name for u in forward.units] == ["block1-unit01_remat", "block2-unit01_remat",
                                                "block2-unit02_remat", "block3-unit01_remat",
                                                "block4-unit01_remat"]
    loss, grads = _loss_and_grads(model, model, images, labels)
    r_loss, r_grads = _loss_and_grads(model, forward, images, labels)
    np.testing.assert_allclose(float(r_loss), float(loss), rtol=1e-6)
    assert len(r_grads) == len(grads) == len(model.trainable_variables)
    for g, r, v in zip(grads, r_grads, model.trainable_variables):
        assert r is not None, v.path
        np.testing.assert_allclose(np.asarray(r), np.asarray(g), atol=1e-5 * (np.abs(g).max() + 1e-3),
                                   err_msg=v.path)


def test_remat_recomputes_in_the_backward_pass():
    """The gradient graph contains each unit's forward ops a second time (that is what saves the memory)."""
    model = _model()
    spec = (tf.TensorSpec((2, 32, 32, 3)), tf.TensorSpec((2,), tf.int32))

    def conv_count(forward):
        @tf.function(autograph=False)
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=y, logits=forward(x, training=True)))
            return tape.gradient(loss, model.trainable_variables)

        graph = step.get_concrete_function(*spec).graph
        return sum(op.type == "Conv2D" for op in graph.get_operations())

    unit_convs = sum(1 for layer in model.layers
                     if layer.name.startswith("block") and layer.name.endswith("standardized_conv2d"))
    assert unit_convs == 19
    # every convolution inside a unit runs once more (its recomputation); the root convolution does not
    assert conv_count(remat_forward(model)) == conv_count(model) + unit_convs


def test_remat_refuses_a_model_without_units():
    import keras

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ConfigError, match="no residual units .* remat=False"):
        remat_forward(model)
