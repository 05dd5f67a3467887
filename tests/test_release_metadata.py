"""Every package is ready for an index: metadata, changelog, and version bounds that fit.

Runs over whatever is under packages/, so a new package is held to the same rules.
"""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli along
    import tomli as tomllib  # type: ignore[no-redef]

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
URLS = {"Homepage", "Documentation", "Source", "Changelog", "Issues"}


def _project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())


def _version(path: Path) -> Version:
    about = _project(path)["tool"]["hatch"]["version"]["path"]
    text = (path / about).read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert match, f"{path.name}: no __version__ in {about}"
    return Version(match.group(1))


VERSIONS = {p.name: _version(p) for p in PACKAGES}


def test_the_packages_are_found() -> None:
    assert {"gev-core", "gev-ringbuffer", "gev-websocket"} <= set(VERSIONS)


@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: p.name)
def test_metadata_is_complete(path: Path) -> None:
    pyproject = _project(path)
    project = pyproject["project"]
    assert project["name"] == path.name
    assert project.get("dynamic") == ["version"], "version comes from __about__.py"
    assert pyproject["build-system"]["requires"][0].startswith("hatchling>=")
    for key in ("description", "readme", "license", "requires-python", "classifiers"):
        assert project.get(key), f"{path.name}: [project] {key} is missing"
    assert (path / project["readme"]).exists()
    classifiers = set(project["classifiers"])
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert set(project.get("urls", {})) >= URLS, f"{path.name}: [project.urls] needs {URLS}"
    module = next((path / "src").glob("*/__init__.py")).parent
    assert module.name == path.name.replace("-", "_")
    assert (module / "py.typed").exists(), f"{path.name}: no py.typed"


@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: p.name)
def test_changelog_has_an_entry_for_the_next_release(path: Path) -> None:
    changelog = path / "CHANGELOG.md"
    assert changelog.exists(), f"{path.name}: no CHANGELOG.md"
    text = changelog.read_text()
    version = VERSIONS[path.name]
    assert re.search(rf"^## (Unreleased|\[?{re.escape(str(version))}\]?)\b", text, re.M), (
        f"{path.name}: CHANGELOG.md has neither an 'Unreleased' section nor one for {version}"
    )
    sdist = _project(path)["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    assert any(i.strip("/") == "CHANGELOG.md" for i in sdist), "the sdist must ship it"


def _intra_repo_requirements() -> list[tuple[str, Requirement]]:
    out = []
    for path in [*PACKAGES, ROOT / "tests" / "plugins" / "gev-example-plugin"]:
        for spec in _project(path)["project"].get("dependencies", []):
            req = Requirement(spec)
            if req.name in VERSIONS:
                out.append((path.name, req))
    return out


@pytest.mark.parametrize(
    "owner, req", _intra_repo_requirements(), ids=lambda x: str(x) if isinstance(x, str) else ""
)
def test_bounds_between_packages_accept_this_release_and_stop_at_the_next_minor(
    owner: str, req: Requirement
) -> None:
    current = VERSIONS[req.name]
    assert req.specifier.contains(current), f"{owner}: {req} excludes {req.name} {current}"
    next_minor = Version(f"{current.major}.{current.minor + 1}")
    if current.major == 0:
        # Before 1.0 a minor release may break the API: depend on one minor series only.
        assert not req.specifier.contains(next_minor), (
            f"{owner}: {req} must stop below {next_minor} (e.g. {req.name}>=0.1,<0.2)"
        )
    else:
        assert not req.specifier.contains(Version(f"{current.major + 1}.0")), (
            f"{owner}: {req} must stop below the next major version"
        )


def test_every_package_is_listed_on_the_home_page_and_in_the_readme() -> None:
    for doc in (ROOT / "README.md", ROOT / "docs" / "index.md"):
        text = doc.read_text()
        for name in VERSIONS:
            assert f"`{name}`" in text, f"{doc.relative_to(ROOT)} does not list {name}"
