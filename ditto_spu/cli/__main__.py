"""``python -m ditto_spu.cli ARGS`` is ``ditto-spu ARGS``."""

import sys

from .main import main

sys.exit(main())
