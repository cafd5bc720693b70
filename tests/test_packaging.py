"""The wheel carries every package (a `pip install` without -e once lacked moep_sglang.asyncep)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("moep_sglang", "moep_router") for p in (ROOT / top).rglob("__init__.py")}
    assert "moep_router.policies" in found  # the folders are named as the packages import
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"
    assert tool["package-data"]["moep_sglang.kernels"] == ["configs/*/*.json"]
