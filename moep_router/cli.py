"""`moep-router`: see `moep-router --help`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from moep_router.config import parse_router_args

    config = parse_router_args(sys.argv[1:] if argv is None else argv)
    if config.processes > 1:
        from moep_router.processes import run_router_processes

        run_router_processes(config)
    else:
        from moep_router.server import run_router_process

        run_router_process(config)


if __name__ == "__main__":
    main()
