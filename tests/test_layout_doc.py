"""docs/layout.md's package block matches the tree: every package and top-level module of ``mrisr/``
is listed, and every listed one exists unless its line says ``(coming)``.

Granularity: packages (folders of ``mrisr/`` holding Python files) and top-level modules. A module
and a package of the same name are one entry (``mrisr/phantom.py`` may become ``mrisr/phantom/``
without the page going stale).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT / "docs" / "layout.md"
PACKAGE = ROOT / "mrisr"
#: a line of the block that introduces an entry: ``mrisr/name/`` or ``mrisr/name.py`` at its start
ENTRY = re.compile(r"^mrisr/(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<kind>/|\.py)\s*(?P<rest>.*)$")


def layout_block(text: str) -> str:
    """The first fenced block under the ``## Packages and modules`` heading."""
    section = re.search(r"^## Packages and modules\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, f"{LAYOUT}: no '## Packages and modules' section"
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.M | re.S)
    assert block, f"{LAYOUT}: the 'Packages and modules' section has no code block"
    return block.group(1)


def documented(text: str) -> dict[str, bool]:
    """``{name: coming}`` for every entry of the block (``__init__`` left out)."""
    entries: dict[str, bool] = {}
    for line in layout_block(text).splitlines():
        match = ENTRY.match(line)
        if match and match["name"] != "__init__":
            entries[match["name"]] = entries.get(match["name"], True) and "(coming)" in match["rest"]
    return entries


def on_disk(package: Path = PACKAGE) -> set[str]:
    """Names of the packages (folders holding ``.py`` files) and top-level modules of ``package``."""
    names = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    names |= {d.name for d in package.iterdir()
              if d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.py"))}
    return names


def test_layout_lists_every_package_and_module():
    missing = sorted(on_disk() - set(documented(LAYOUT.read_text(encoding="utf-8"))))
    assert not missing, (f"{LAYOUT.relative_to(ROOT)}: add a line for "
                         + ", ".join(f"mrisr/{name}" for name in missing) + " to the 'Packages and modules' block")


def test_layout_names_only_what_exists_or_is_coming():
    entries = documented(LAYOUT.read_text(encoding="utf-8"))
    stale = sorted(name for name, coming in entries.items() if not coming and name not in on_disk())
    assert not stale, (f"{LAYOUT.relative_to(ROOT)} lists " + ", ".join(f"mrisr/{name}" for name in stale)
                       + ", which do not exist: remove the line or mark it (coming)")


def test_layout_parser_sees_modules_packages_and_coming(tmp_path):
    text = ("# x\n\n## Packages and modules\n\n```text\nmrisr/__init__.py  version\nmrisr/io/   files\n"
            "                   more on io\nmrisr/phantom.py   phantoms\nmrisr/serve/   (coming) the server\n```\n"
            "\n## Layer order\n\n```text\nmrisr/ignored.py   not in the block\n```\n")
    assert documented(text) == {"io": False, "phantom": False, "serve": True}
    package = tmp_path / "mrisr"
    (package / "io").mkdir(parents=True)
    (package / "io" / "__init__.py").write_text("")
    (package / "models").mkdir()
    (package / "models" / "network.py").write_text("")  # a namespace package counts too
    (package / "assets").mkdir()  # data only: not a package
    (package / "__pycache__").mkdir()
    (package / "__init__.py").write_text("")
    (package / "phantom.py").write_text("")
    assert on_disk(package) == {"io", "models", "phantom"}


@pytest.mark.parametrize("name", ["io", "kspace", "reconstruct", "serve", "workflow"])
def test_layout_says_where_coming_capabilities_go(name):
    assert name in documented(LAYOUT.read_text(encoding="utf-8"))


def test_layout_states_the_layer_order():
    text = LAYOUT.read_text(encoding="utf-8")
    order = ["mrisr.io", "mrisr.kspace", "mrisr.metrics", "mrisr.phantom", "mrisr.models", "mrisr.reconstruct",
             "mrisr.training", "mrisr.workflow", "mrisr.demo", "mrisr.cli"]
    section = text[text.index("## Layer order"):]
    positions = [section.index(f"`{name}`") for name in order]
    assert positions == sorted(positions), "docs/layout.md: the layer table is not in COMMON.md's order"
    assert "mrisr/layers.py" in section


def test_a_coming_entry_that_exists_loses_its_marker():
    entries = documented(LAYOUT.read_text(encoding="utf-8"))
    landed = sorted(name for name, coming in entries.items() if coming and name in on_disk())
    assert not landed, (f"{LAYOUT.relative_to(ROOT)}: " + ", ".join(f"mrisr/{name}" for name in landed)
                        + " exist now: drop their (coming) marker")


def test_the_layer_table_is_mrisr_layers():
    from mrisr.layers import LAYERS

    text = LAYOUT.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.*) \|$", text, re.M)
    table = {int(n): tuple(re.findall(r"`(mrisr[\w.]*)`", cells)) for n, cells in rows}
    assert table == {i: layer for i, layer in enumerate(LAYERS, 1)}, "docs/layout.md's layer table differs from mrisr/layers.py"

