"""``python -m rerank_plugins.cli``: the ``rerank-plugins`` command."""

import sys

from rerank_plugins.cli import main

sys.exit(main())
