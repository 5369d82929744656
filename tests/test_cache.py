"""`repro cache info` / `repro cache prune`: least recently used entries go first,
entries in use (within GRACE) never do, normalised blobs go with their entries, and
every cache read marks its entry used. Engine test: a real build's cache pruned, and
the build after it the same image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro import cacheprune
from repro.cacheprune import GRACE, parse_age, parse_size, prune

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "repro"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("REPRO_NORMALISE_CACHE", raising=False)
    return tmp_path / "repro"


def put(path: Path, size: int, age: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age, now - age))
    return path


def normalised(
    cache: Path, key: str, blob: str, size: int, age: float, now: float
) -> tuple[Path, Path]:
    entry = cache / "normalised" / f"{key}.json"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(json.dumps({"descriptor": {"digest": f"sha256:{blob}", "size": size}}))
    os.utime(entry, (now - age, now - age))
    return entry, put(cache / "normalised" / "blobs" / f"sha256-{blob}", size, age, now)


def test_sizes_and_ages_parse() -> None:
    assert parse_size("1024") == 1024
    assert parse_size("500M") == 500 << 20
    assert parse_size("2G") == parse_size("2GiB") == parse_size("2gb") == 2 << 30
    assert parse_size("1.5K") == 1536
    assert parse_age("30d") == 30 * DAY and parse_age("12h") == 12 * 3600
    assert parse_age("1w") == 7 * DAY and parse_age("90m") == 5400
    for bad in ("", "lots", "-1G", "2X"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)
    for bad in ("", "30", "soon", "-1d"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_age(bad)


def test_sections_are_where_the_code_puts_them(cache: Path) -> None:
    from repro.lock import rendered_dir
    from repro.normalise._cache import cache_root
    from repro.oci._documents import documents_dir
    from repro.packages import cache_dir
    from repro.records import records_dir

    paths = {s.name: s.path for s in cacheprune.sections()}
    assert paths["normalised"] == cache_root()
    assert paths["documents"] == documents_dir()
    assert paths["builds"] == records_dir()
    assert paths["dockerfiles"] == rendered_dir()
    assert paths["packages"] == cache_dir()


def test_unused_for_removes_old_entries_only(cache: Path) -> None:
    now = time.time()
    old_pkg = put(Path(os.environ["XDG_CACHE_HOME"]) / "repro/packages/pool/aa", 100, 40 * DAY, now)
    new_pkg = put(Path(os.environ["XDG_CACHE_HOME"]) / "repro/packages/pool/bb", 100, DAY, now)
    old_rec = put(cache / "builds" / "sha256-1.json", 10, 31 * DAY, now)
    result = prune(unused_for=30 * DAY, now=now)
    assert not old_pkg.exists() and not old_rec.exists() and new_pkg.exists()
    assert [e.path for e in result.removed["packages"]] == [old_pkg]
    assert result.kept["packages"].entries == 1 and result.kept["packages"].size == 100
    assert not (cache / "builds").exists() or not any((cache / "builds").iterdir())


def test_max_size_removes_least_recently_used_first(cache: Path) -> None:
    now = time.time()
    docs = cache / "documents"
    a = put(docs / "sha256-a", 400, 5 * DAY, now)
    b = put(docs / "sha256-b", 400, 3 * DAY, now)
    c = put(docs / "sha256-c", 400, 2 * DAY, now)
    d = put(docs / "sha256-d", 400, DAY, now)
    result = prune(max_size=900, now=now)
    assert [p.exists() for p in (a, b, c, d)] == [False, False, True, True]
    assert result.removed_bytes() == 800
    assert sum(u.size for u in result.kept.values()) == 800


def test_entries_in_use_are_kept_whatever_the_options(cache: Path) -> None:
    now = time.time()
    fresh = put(cache / "documents" / "sha256-f", 1000, GRACE / 2, now)
    stale = put(cache / "documents" / "sha256-s", 1000, GRACE * 2, now)
    prune(everything=True, max_size=0, unused_for=0, now=now)
    assert fresh.exists() and not stale.exists()


def test_a_normalised_blob_goes_with_its_entries(cache: Path) -> None:
    now = time.time()
    old_entry, shared = normalised(cache, "k1", "b1", 500, 10 * DAY, now)
    new_entry, _ = normalised(cache, "k2", "b1", 500, DAY, now)
    lone_entry, lone_blob = normalised(cache, "k3", "b3", 300, 10 * DAY, now)
    orphan = put(cache / "normalised" / "blobs" / "sha256-b9", 50, DAY, now)
    prune(unused_for=5 * DAY, now=now)
    # b1 is still named by k2 (used a day ago): it stays although it is old itself
    assert not old_entry.exists() and new_entry.exists() and shared.exists()
    assert not lone_entry.exists() and not lone_blob.exists()
    assert not orphan.exists(), "a blob no entry names is garbage"


def test_an_entry_goes_with_its_blob(cache: Path) -> None:
    """Least recently used first may pick a blob before the entry naming it (the
    entry was read since): the entry goes too, as it could only miss."""
    now = time.time()
    entry, blob = normalised(cache, "k1", "b1", 1000, 3 * DAY, now)
    os.utime(entry, (now - DAY, now - DAY))
    keep_entry, keep_blob = normalised(cache, "k2", "b2", 1000, 2 * DAY, now)
    prune(max_size=1500, now=now)
    assert not blob.exists() and not entry.exists()
    assert keep_entry.exists() and keep_blob.exists()


def test_sizes_read_as_people_write_them() -> None:
    human = cacheprune.human
    assert [human(0), human(1023), human(1024), human(1536 << 20), human(5 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 GiB",
        "5120.0 GiB",
    ]


def test_dry_run_removes_nothing(cache: Path) -> None:
    now = time.time()
    a = put(cache / "documents" / "sha256-a", 10, 40 * DAY, now)
    result = prune(unused_for=DAY, dry_run=True, now=now)
    assert a.exists() and [e.path for e in result.removed["documents"]] == [a]


def test_cache_hits_mark_entries_used(cache: Path) -> None:
    """A read through the caches' own functions moves the entry's mtime to now."""
    from repro.oci._documents import CachedDocuments
    from repro.records import read_build_record, write_build_record

    digest = "sha256:" + "ab" * 32
    write_build_record({"digest": digest, "recipe": "x"})
    record = cache / "builds" / f"sha256-{'ab' * 32}.json"
    os.utime(record, (1, 1))
    assert read_build_record(digest) is not None
    assert record.stat().st_mtime > time.time() - 60

    import hashlib

    data = b'{"mediaType": "application/vnd.oci.image.manifest.v1+json"}'
    doc_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    docs = CachedDocuments(lambda: None)
    docs._keep(doc_digest, data)
    path = docs._path(doc_digest)
    os.utime(path, (1, 1))
    assert docs._cached(doc_digest) == data
    assert path.stat().st_mtime > time.time() - 60


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repro", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def test_cli_info_and_prune(cache: Path) -> None:
    now = time.time()
    put(cache / "documents" / "sha256-a", 2048, 40 * DAY, now)
    put(cache / "documents" / "sha256-b", 1024, DAY, now)
    r = run_cli("cache", "info", "--json")
    assert r.returncode == 0, r.stderr
    info = {s["section"]: s for s in json.loads(r.stdout)}
    assert info["documents"]["entries"] == 2 and info["documents"]["bytes"] == 3072
    r = run_cli("cache", "prune")  # default: unused for 30 days
    assert r.returncode == 0, r.stderr
    assert "documents: removed 1 entries (2.0 KiB); 1 (1.0 KiB) left" in r.stdout
    assert r.stdout.strip().endswith("the cache holds 1.0 KiB")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--max-size", "lots"), "not a size: 'lots'"),
        (("--unused-for", "30"), "not a duration: '30'"),
    ],
)
def test_cli_bad_input_is_one_line(cache: Path, args: tuple[str, ...], says: str) -> None:
    put(cache / "documents" / "sha256-a", 10, 40 * DAY, time.time())
    r = run_cli("cache", "prune", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"repro: error: {says}"), r.stderr
    assert (cache / "documents" / "sha256-a").exists()


def _age_everything(*roots: Path, seconds: float) -> None:
    when = time.time() - seconds
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                os.utime(os.path.join(dirpath, name), (when, when))


def _cached_blobs(cache: Path) -> set[str]:
    blobs = cache / "normalised" / "blobs"
    return {p.name.replace("-", ":", 1) for p in blobs.iterdir()} if blobs.is_dir() else set()


def _layers(layout: Path) -> set[str]:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())
    return {layer["digest"] for layer in manifest["layers"]}


@pytest.mark.engine
def test_prune_keeps_what_a_build_used_and_the_next_build_is_the_same(tmp_path: Path) -> None:
    """Real builds fill the cache; a cached rebuild of one recipe marks what it read;
    pruning what is older removes the other recipe's entries only; after pruning all,
    the build makes the same image again (and fills the cache again)."""
    cache, xdg = tmp_path / "c", tmp_path / "x"
    env = {"REPRO_CACHE_DIR": str(cache), "XDG_CACHE_HOME": str(xdg)}

    def build(name: str, out: str) -> str:
        r = run_cli(
            "build", f"recipes/{name}", "--output", f"oci:{tmp_path / out}", "--json",
            "--progress", "quiet", env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        return str(json.loads(r.stdout)[0]["digest"])

    first = build("wordcount", "w1")
    build("hello", "h1")
    w_layers, h_layers = _layers(tmp_path / "w1"), _layers(tmp_path / "h1")
    assert (w_layers | h_layers) & _cached_blobs(cache), "the builds filled the normalise cache"
    _age_everything(cache, xdg, seconds=2 * DAY)
    assert build("wordcount", "w2") == first  # BuildKit's cache: the same raw layers, hits
    r = run_cli("cache", "prune", "--unused-for", "1d", env=env)
    assert r.returncode == 0, r.stderr
    assert "normalised: removed" in r.stdout, r.stdout
    left = _cached_blobs(cache)
    assert w_layers & left, "what the rebuild read is kept"
    assert not (h_layers - w_layers) & left, "hello's own layers, unused since, are gone"

    _age_everything(cache, xdg, seconds=2 * DAY)
    r = run_cli("cache", "prune", "--all", "--json", env=env)
    assert r.returncode == 0, r.stderr
    kept = json.loads(r.stdout)["kept"]
    assert all(v["entries"] == 0 for v in kept.values()), kept
    assert build("wordcount", "w3") == first
    assert w_layers & _cached_blobs(cache)
