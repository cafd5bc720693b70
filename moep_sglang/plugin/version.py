"""The SGLang version this plugin's hooks were written against, and the startup check."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

SGLANG_PIN = "0.5.17"  # every hook target in hooks.HOOKS is checked against this release


class SGLangVersionError(RuntimeError):
    pass


def check_sglang_version(installed: str | None = None) -> str:
    """Return the installed SGLang version; raise SGLangVersionError if it is not the pin."""
    if installed is None:
        try:
            installed = version("sglang")
        except PackageNotFoundError as exc:
            raise SGLangVersionError("moep-sglang needs SGLang, which is not installed") from exc
    if installed != SGLANG_PIN:
        raise SGLangVersionError(
            f"moep-sglang's SGLang plugin is pinned to sglang=={SGLANG_PIN}, but sglang=="
            f"{installed} is installed. Its hooks patch SGLang internals that change between "
            f"releases (see patches/README.md). Install sglang=={SGLANG_PIN} "
            "(`make install` does), or disable the plugin with SGLANG_PLUGINS=<other plugins>."
        )
    return installed
