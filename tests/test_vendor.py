"""Every vendored asset ships with the licence files it needs (scripts/vendor_assets.sh writes them)."""
import re

import pytest

from conftest import REPO

VENDOR = REPO / "book" / "_static" / "vendor"
# webpack/terser's banner: "/*! For license information please see X.LICENSE.txt */"
BANNER = re.compile(rb"/\*! For license information please see (\S+?\.LICENSE\.txt) \*/")
COMPONENTS = sorted(p for p in VENDOR.iterdir() if p.is_dir()) if VENDOR.is_dir() else []


def test_vendor_has_components():
    assert {p.name for p in COMPONENTS} >= {"mathjax", "requirejs", "html-manager"}


def test_every_license_txt_a_vendored_file_names_is_next_to_it():
    missing, seen = [], 0
    for path in sorted(VENDOR.rglob("*")):
        if path.is_file() and path.suffix in (".js", ".css", ".mjs"):
            for name in set(BANNER.findall(path.read_bytes())):
                seen += 1
                if not (path.parent / name.decode()).is_file():
                    missing.append(f"{path.relative_to(VENDOR)} -> {name.decode()}")
    assert seen, "no licence banner found at all; has the pattern changed?"
    assert not missing, f"referenced licence files not vendored: {missing}"


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda p: p.name)
def test_component_folder_has_a_license(component):
    licences = [p for p in component.glob("LICENSE*") if p.is_file() and p.stat().st_size > 200]
    assert licences, f"{component.relative_to(VENDOR)}/ has no LICENSE file"


def test_vendored_fonts_carry_their_licence():
    # html-manager's icon fonts are Font Awesome Free (SIL OFL 1.1), which must travel with its licence.
    if list((VENDOR / "html-manager").glob("*.woff*")):
        for rel in ("html-manager/fontawesome-free/LICENSE.txt", "html-manager/fontawesome-free/OFL-1.1.txt"):
            assert (VENDOR / rel).is_file(), rel


def test_readme_lists_existing_licence_files():
    readme = (VENDOR / "README.md").read_text()
    names = "|".join(re.escape(p.name) for p in COMPONENTS)
    paths = set(re.findall(rf"`((?:{names})/[\w./-]*(?:LICENSE|OFL)[\w./-]*)`", readme))
    assert len(paths) >= 10, paths
    assert not [p for p in paths if not (VENDOR / p).is_file()], "README names missing licence files"
    for component in COMPONENTS:
        for licence in component.rglob("*"):
            if licence.is_file() and (re.match(r"(LICENSE|OFL)", licence.name) or licence.name.endswith(".LICENSE.txt")):
                assert str(licence.relative_to(VENDOR)) in paths, f"README does not list {licence.relative_to(VENDOR)}"
