"""The wheel carries every package (a `pip install` without -e once lacked moep_sglang.asyncep)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    dirs = tool["package-dir"]
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "moep_sglang").rglob("__init__.py")}
    found |= {name for name, folder in dirs.items() if (ROOT / folder / "__init__.py").exists()}
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"
    assert tool["package-data"]["moep_sglang.kernels"] == ["configs/*/*.json"]
