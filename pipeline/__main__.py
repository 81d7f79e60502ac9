"""``python -m pipeline IN OUT`` is ``derain-video IN OUT``."""
import sys

from .cli import main

sys.exit(main())
