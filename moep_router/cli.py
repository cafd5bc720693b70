"""`moep-router`: see `moep-router --help`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from moep_router.config import parse_router_args
    from moep_router.server import run_router_process

    run_router_process(parse_router_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
