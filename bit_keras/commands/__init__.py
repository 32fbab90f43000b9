"""Sub-commands of the ``bit-keras`` command line (see :mod:`bit_keras.cli`)."""
