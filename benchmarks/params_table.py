"""Print the markdown table of parameter counts and bytes for every flavor (docs/params.md).

    python benchmarks/params_table.py            # every flavor in trillion.flavors.FLAVORS
    python benchmarks/params_table.py v4-pro     # only the named ones

Counts come from `trillion.params.count_params` (the model built on the meta device).
"""

from __future__ import annotations

import sys

from trillion.flavors import FLAVORS, get_flavor
from trillion.params import count_params, markdown_table


def main(argv: list[str]) -> int:
    names = argv or list(FLAVORS)
    print(markdown_table([count_params(get_flavor(n)) for n in names]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
