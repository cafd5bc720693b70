"""Every hook target exists in the installed (pinned) SGLang, and the manifest lists it."""

import pkgutil
from importlib.metadata import entry_points, version
from pathlib import Path

import pytest

from moep_sglang.plugin import register
from moep_sglang.plugin.hooks import HOOKS
from moep_sglang.plugin.version import SGLANG_PIN, SGLangVersionError, check_sglang_version

MANIFEST = Path(__file__).resolve().parents[2] / "patches" / "README.md"


@pytest.mark.parametrize("spec", HOOKS, ids=lambda s: s.target.rsplit(".", 2)[-2:][-1])
def test_hook_target_imports(spec):
    owner, attr = spec.target.rsplit(".", 1)
    assert callable(getattr(pkgutil.resolve_name(owner), attr))
    assert spec.kind in ("BEFORE", "AFTER", "AROUND", "REPLACE")


@pytest.mark.parametrize("spec", HOOKS, ids=lambda s: s.target.rsplit(".", 1)[-1])
def test_manifest_lists_hook(spec):
    text = MANIFEST.read_text()
    assert f"`{spec.target}` | {spec.kind} |" in text


def test_installed_sglang_is_the_pin():
    assert version("sglang") == SGLANG_PIN == check_sglang_version()


def test_wrong_version_message_says_what_to_do():
    with pytest.raises(SGLangVersionError, match=r"pinned to sglang==0\.5\.17.*0\.6\.0.*Install"):
        check_sglang_version("0.6.0")


def test_register_exits_on_wrong_version(monkeypatch):
    import moep_sglang.plugin.version as v

    monkeypatch.setattr(v, "version", lambda _: "0.5.16")
    with pytest.raises(SystemExit, match="sglang==0.5.16"):
        register()


def test_entry_point_is_installed():
    eps = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    assert eps.get("moep") == "moep_sglang.plugin:register"
