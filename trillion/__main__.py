"""`python -m trillion ...`: the `trillion` command, as torchrun starts it (`torchrun ... -m trillion serve`)."""

import sys

from .cli.main import main

sys.exit(main())
