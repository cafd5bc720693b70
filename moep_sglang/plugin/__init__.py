"""moep-sglang's SGLang plugin: entry point `moep` in group `sglang.srt.plugins`.

SGLang runs `register()` in every one of its processes (HTTP server, scheduler, ...) before it
starts serving; it then applies the hooks registered here.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("moep_sglang.plugin")


def register() -> None:
    from moep_sglang.plugin.hooks import active_hooks, register_hooks
    from moep_sglang.plugin.version import SGLangVersionError, check_sglang_version

    try:
        installed = check_sglang_version()
    except SGLangVersionError as exc:
        # SGLang logs and swallows Exceptions raised by plugins; a wrong version must stop the
        # server at startup instead of failing mid-request, so exit with the message.
        logger.error("%s", exc)
        raise SystemExit(f"moep-sglang: {exc}") from exc
    register_hooks()
    logger.info("moep-sglang plugin active on sglang %s: %d hooks", installed, len(active_hooks()))
