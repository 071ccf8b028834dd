"""What a non-editable install (``pip install .``, a wheel) holds: the packages are listed by hand in
pyproject.toml, and a sub-package missing there works in the editable checkout but not installed
(``crm_cli.coco`` was missing, so `crm coco` and COCO scoring failed with an ImportError)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def setuptools_config() -> dict:
    """The [tool.setuptools] table of pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_in_the_source_tree_is_installed() -> None:
    listed = set(setuptools_config()["packages"])
    source = ROOT / "src"
    found = {".".join(init.parent.relative_to(source).parts) for init in (source / "crm_cli").rglob("__init__.py")}
    assert found - listed == set()


def test_the_shipped_weights_are_package_data() -> None:
    from crm_cli.checkpoint import DEFAULT_WEIGHTS_NAME

    config = setuptools_config()
    assert config["package-dir"]["crm_cli.weights"] == "weights"
    patterns = config["package-data"]["crm_cli.weights"]
    default = ROOT / "weights" / DEFAULT_WEIGHTS_NAME
    shipped = [default, default.with_suffix(".json"), default.with_suffix(".encoder.onnx")]
    for path in shipped:
        assert path.is_file(), path
        assert any(path.match(pattern) for pattern in patterns), path
