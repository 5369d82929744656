"""Shared fixtures.

Tests marked ``engine`` talk to the real BuildKit and registry that
``scripts/dev-env up`` starts (scripts/test does that). Without them those tests are
skipped, unless REPRO_REQUIRE_ENGINE=1 (set by scripts/test and CI), where a missing
engine fails the run instead of quietly skipping half the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _missing_engine() -> str:
    if not (os.environ.get("BUILDKIT_HOST") or os.environ.get("DOCKER_HOST")):
        return 'no BUILDKIT_HOST/DOCKER_HOST: run eval "$(scripts/dev-env up)"'
    if not os.environ.get("REPRO_REGISTRY"):
        return 'no REPRO_REGISTRY: run eval "$(scripts/dev-env up)"'
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing_engine()
    if not reason:
        return
    if os.environ.get("REPRO_REQUIRE_ENGINE") == "1":
        raise pytest.UsageError(f"REPRO_REQUIRE_ENGINE=1 but {reason}")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "engine" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def registry() -> str:
    return os.environ["REPRO_REGISTRY"]


@pytest.fixture(scope="session")
def base_image() -> str:
    ref = os.environ.get("REPRO_BASE_IMAGE", "")
    if not ref:
        pytest.skip("REPRO_BASE_IMAGE is not set (scripts/dev-env up pushes the base image)")
    return ref


@pytest.fixture(scope="session")
def example_images() -> None:
    """The example recipes built as the README's first command builds them, once per
    session: the recipes that others build on (debian12 under jq and web, hello under
    greet) are pushed to the registry, where the examples' locks expect them. Tests
    that build or lock those dependants use it, so that on a fresh registry (CI) they
    do not depend on which tests ran before them."""
    r = subprocess.run(
        [sys.executable, "-m", "repro", "build", "--all", "--progress", "quiet"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="session")
def buildx() -> list[str]:
    """The docker-buildx command line, when the dev environment provides it."""
    exe = os.environ.get("REPRO_BUILDX", "")
    if not exe or not (Path(exe).exists() or shutil.which(exe)):
        pytest.skip("docker-buildx is not available (REPRO_BUILDX unset)")
    return [exe]


UPDATED_REPO = "repro-test/debian"
UPDATED_TAG = "12-updated"
UPDATED_SUITES = ("bookworm", "bookworm-updates", "bookworm-security")


@pytest.fixture(scope="session")
def updated_base(registry: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Debian 12 base made as users' are: mmdebstrap --variant=apt from the machine's
    apt sources for bookworm, -updates and -security; pushed once, reused."""
    from test_lock_debian import mmdebstrap_base

    tmp = tmp_path_factory.mktemp("debian-updated")
    return mmdebstrap_base(registry, tmp, UPDATED_REPO, UPDATED_TAG, UPDATED_SUITES)
