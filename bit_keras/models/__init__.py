"""The model core: the BiT architecture, the zoo, weight files and downloads, the Keras layers and builder.

``spec`` (the architecture as data), ``presets`` (the zoo table), ``download``, ``fetch``, ``labels`` and ``npz``
import no TensorFlow; ``layers``, ``native`` (the layers' TensorFlow CPU kernels, ``kernels/*.cc``), ``resnet``,
``fold``, ``weights`` and ``create`` are the Keras side. Nothing here imports the
data, training, recipe, hub or command-line code.
"""
