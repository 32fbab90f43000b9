"""The model core: the BiT architecture, the zoo, weight files and downloads, the Keras layers and builder.

``spec`` (the architecture as data), ``presets`` (the zoo table), ``download``, ``fetch``, ``labels`` and ``npz``
import no TensorFlow; ``layers``, ``resnet``, ``weights`` and ``create`` are the Keras side. Nothing here imports the
data, training, recipe, hub or command-line code.
"""
