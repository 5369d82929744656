"""repro.lockfile: the typed lock model reads every committed lock and writes it back
byte for byte, and refuses what repro would never have written."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from repro.lockfile import Lock, LockInvalid, dump_toml

ROOT = Path(__file__).resolve().parent.parent
LOCKS = sorted((ROOT / "recipes").glob("*/repro.lock"))
D = "sha256:" + "a" * 64


@pytest.mark.parametrize("path", LOCKS, ids=lambda p: p.parent.name)
def test_committed_locks_round_trip_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    lock = Lock.from_toml(tomllib.loads(text))
    assert lock.recipe == path.parent.name
    assert dump_toml(lock.to_toml()) == text


def test_the_model_is_typed() -> None:
    lock = Lock.from_toml(tomllib.loads((ROOT / "recipes/jq/repro.lock").read_text()))
    base = lock.bases["recipe:debian12"]
    assert base.image.endswith("/repro/debian12") and not base.is_index
    tools = lock.package_set("apt", "tools")
    assert tools is not None and tools.base == "recipe:debian12"
    assert {p.name for p in tools.packages} >= {"jq", "libjq1"}
    assert tools.suites[0] == "bookworm"
    with pytest.raises(TypeError):
        lock.bases["x"] = base  # type: ignore[index]


GOOD: dict[str, Any] = {
    "version": 1,
    "recipe": "r",
    "inputs": D,
    "source_date_epoch": 1,
    "bases": {"reg/x:1": {"digest": D, "platforms": {"linux/amd64": D}}},
    "packages": {
        "apt": {"s": {"spec": D, "package": [{"name": "a", "version": "1", "size": 3}]}}
    },
    "downloads": {"d": {"spec": D, "sha256": D, "size": 1}},
    "git": {"g": {"spec": D, "ref": "main", "commit": "b" * 40}},
}


def _set(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    *parents, last = path.split("/")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("surprise", 1, "unknown key 'surprise'"),
        ("version", 2, "another version of repro"),
        ("source_date_epoch", True, "no valid source_date_epoch"),
        ("source_date_epoch", -1, "no valid source_date_epoch"),
        ("inputs", "sha256:xyz", "no valid inputs"),
        ("bases/reg/x:1/digest", "latest", "no valid digest for base reg/x:1"),
        ("bases/reg/x:1/platforms", {"linux/amd64": "x"}, "invalid platform digest"),
        ("bases/reg/x:1/platforms", {"linux/amd64": "sha256:" + "c" * 64}, "disagrees"),
        ("bases/reg/x:1/colour", "red", "unknown key 'colour' in base reg/x:1"),
        ("packages/apt/s/package/0/version", KeyError, "no valid version"),
        ("packages/apt/s/package/0/size", -3, "no valid size"),
        ("packages/apt/s/suites", "bookworm", "no valid suites"),
        ("packages/apt/s/base_db", "nope", "no valid base_db"),
        ("downloads/d/size", True, "no valid size for download d"),
        ("git/g/commit", "main", "no valid commit for git input g"),
        ("recipe", "", "no valid recipe"),
    ],
)
def test_malformed_locks_are_refused_by_name(path: str, value: Any, says: str) -> None:
    Lock.from_toml(GOOD)  # the starting point is fine
    if path.startswith("bases/reg/x:1"):
        data = copy.deepcopy(GOOD)
        key = path.split("/")[-1]
        entry = data["bases"]["reg/x:1"]
        entry[key] = value
    else:
        data = _set(path, value)
    with pytest.raises(LockInvalid, match=says):
        Lock.from_toml(data)


def test_an_index_base_may_differ_from_its_platforms() -> None:
    data = copy.deepcopy(GOOD)
    data["bases"]["reg/x:1"]["media_type"] = "application/vnd.oci.image.index.v1+json"
    data["bases"]["reg/x:1"]["platforms"] = {"linux/amd64": "sha256:" + "c" * 64}
    assert Lock.from_toml(data).bases["reg/x:1"].is_index
