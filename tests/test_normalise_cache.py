"""The local cache of rewritten layers: a repeat is answered from it, and checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_normalise import EPOCH, SAMPLE, make_tar, normalise, single_layer_layout

from repro.normalise import _cache
from repro.normalise._rules import NormaliseOptions


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("REPRO_NORMALISE_CACHE", raising=False)
    return tmp_path / "cache" / "normalised"


def test_repeat_is_answered_from_the_cache(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    single_layer_layout(tmp_path / "src", make_tar(SAMPLE))
    first = normalise(tmp_path / "src", tmp_path / "a")
    assert list(cache.glob("*.json")), "the rewrite was not cached"

    def no_rewrite(*args: object, **kwargs: object) -> object:
        raise AssertionError("a cached layer was rewritten again")

    monkeypatch.setattr(_cache, "normalise_layer", no_rewrite)
    second = normalise(tmp_path / "src", tmp_path / "b")
    assert second.digest == first.digest
    assert (tmp_path / "b" / "index.json").read_bytes() == (
        tmp_path / "a" / "index.json"
    ).read_bytes()


def test_tampered_cache_blob_is_not_used(tmp_path: Path, cache: Path) -> None:
    single_layer_layout(tmp_path / "src", make_tar(SAMPLE))
    first = normalise(tmp_path / "src", tmp_path / "a")
    for blob in (cache / "blobs").iterdir():
        blob.unlink()  # break the hard link, then write other bytes
        blob.write_bytes(b"not the layer")
    second = normalise(tmp_path / "src", tmp_path / "b")
    assert second.digest == first.digest
    layer_blobs = {p.name for p in (tmp_path / "b" / "blobs" / "sha256").iterdir()}
    assert layer_blobs == {p.name for p in (tmp_path / "a" / "blobs" / "sha256").iterdir()}


def test_other_options_miss_and_off_switch(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    single_layer_layout(tmp_path / "src", make_tar(SAMPLE))
    normalise(tmp_path / "src", tmp_path / "a")
    normalise(tmp_path / "src", tmp_path / "b", level=9)
    assert len(list(cache.glob("*.json"))) == 2
    monkeypatch.setenv("REPRO_NORMALISE_CACHE", "off")
    assert _cache.cache_root() is None
    assert NormaliseOptions(epoch=EPOCH) != NormaliseOptions(epoch=EPOCH, level=9)
