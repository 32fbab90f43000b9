"""``python -m bit_keras.cli``: the ``bit-keras`` command."""

import sys

from bit_keras.cli import main

sys.exit(main())
