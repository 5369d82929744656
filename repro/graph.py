"""The build graph: recipes whose base is another recipe (``recipe:NAME``).

Order is topological and otherwise by name, so it is the same on every run; a level
holds recipes that do not depend on each other and may be built concurrently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from repro.errors import RecipeError
from repro.recipe import Recipe

R = TypeVar("R")


def edges(recipes: Sequence[Recipe]) -> dict[str, list[str]]:
    """recipe name -> the recipes it builds on; unknown names are errors."""
    names = {r.name for r in recipes}
    out: dict[str, list[str]] = {}
    for r in recipes:
        deps = sorted(set(r.recipe_bases))
        for dep in deps:
            if dep not in names:
                line = next((b.line for b in r.bases if b.recipe == dep), None)
                raise RecipeError(
                    f"base recipe:{dep} is not a recipe under {r.directory.parent}",
                    file=str(r.file),
                    line=line,
                )
        out[r.name] = deps
    return out


def _find_cycle(graph: dict[str, list[str]], remaining: set[str]) -> list[str]:
    start = min(remaining)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(d for d in graph[node] if d in remaining)
    return [*path[seen[node] :], node]


def levels(recipes: Sequence[Recipe], only: Iterable[str] | None = None) -> list[list[str]]:
    """Recipe names in levels: each level depends only on earlier ones.

    With `only`, the levels are restricted to those names (their order still comes
    from the whole graph).
    """
    graph = edges(recipes)
    remaining = set(graph)
    done: set[str] = set()
    out: list[list[str]] = []
    while remaining:
        ready = sorted(n for n in remaining if all(d in done for d in graph[n]))
        if not ready:
            cycle = _find_cycle(graph, remaining)
            raise RecipeError(f"recipes depend on each other in a cycle: {' -> '.join(cycle)}")
        out.append(ready)
        done.update(ready)
        remaining.difference_update(ready)
    if only is not None:
        keep = set(only)
        out = [[n for n in level if n in keep] for level in out]
        out = [level for level in out if level]
    return out


def order(recipes: Sequence[Recipe]) -> list[str]:
    return [n for level in levels(recipes) for n in level]


def dependants(recipes: Sequence[Recipe]) -> dict[str, list[str]]:
    """recipe name -> the recipes that build on it."""
    out: dict[str, list[str]] = {r.name: [] for r in recipes}
    for name, deps in edges(recipes).items():
        for dep in deps:
            out[dep].append(name)
    return {k: sorted(v) for k, v in out.items()}


def to_dot(recipes: Sequence[Recipe]) -> str:
    graph = edges(recipes)
    lines = ["digraph recipes {", "  rankdir=LR;"]
    for name in order(recipes):
        lines.append(f'  "{name}";')
    for name in sorted(graph):
        for dep in graph[name]:
            lines.append(f'  "{dep}" -> "{name}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def walk(
    selected: Sequence[Recipe],
    everything: Sequence[Recipe],
    build_one: Callable[[Recipe, str | None, dict[str, str]], R],
    *,
    builders: Sequence[str | None] = (None,),
    publish: Callable[[Recipe, R], str] | None = None,
    jobs: int = 1,
) -> list[R]:
    """Build `selected` in topological order, results in a fixed order (the levels').

    A recipe starts as soon as the selected recipes it builds on are done, not when
    their whole level is: up to `jobs` builds at a time on each of `builders`, a
    recipe going to the builder with the fewest running builds (ties: the first).
    With one builder and ``jobs=1`` the order is the levels' order.

    A recipe that another selected recipe builds on is published after its build
    (``publish`` returns the pushed digest), and its dependants' builds are given
    ``built[name] = digest`` so that their locks are checked against it.

    After a failure no new build starts; the builds running finish, then the first
    failure in the levels' order is raised.
    """
    import threading
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    names = {r.name for r in selected}
    by_name = {r.name: r for r in everything}
    ordered = [n for level in levels(list(everything), only=names) for n in level]
    rank = {n: i for i, n in enumerate(ordered)}
    deps = {n: [d for d in by_name[n].recipe_bases if d in names] for n in ordered}
    needed_as_base = {d for n in ordered for d in deps[n]}
    slots = list(builders) or [None]
    running = [0] * len(slots)
    built: dict[str, str] = {}
    lock = threading.Lock()
    outcomes: dict[str, R | BaseException] = {}
    pending = list(ordered)
    futures: dict[Future[R], tuple[str, int]] = {}

    def run(recipe: Recipe, slot: int, snapshot: dict[str, str]) -> R:
        result = build_one(recipe, slots[slot], snapshot)
        if publish is not None and recipe.name in needed_as_base:
            digest = publish(recipe, result)
            with lock:
                built[recipe.name] = digest
        return result

    with ThreadPoolExecutor(max_workers=len(slots) * jobs) as pool:
        while pending or futures:
            failed = any(isinstance(o, BaseException) for o in outcomes.values())
            if not failed:
                for name in list(pending):
                    if not all(d in outcomes for d in deps[name]):
                        continue
                    slot = min(range(len(slots)), key=lambda i: (running[i], i))
                    if running[slot] >= jobs:
                        break
                    running[slot] += 1
                    pending.remove(name)
                    with lock:
                        snapshot = dict(built)
                    futures[pool.submit(run, by_name[name], slot, snapshot)] = (name, slot)
            else:
                pending.clear()
            if not futures:
                break
            done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
            for future in done:
                name, slot = futures.pop(future)
                running[slot] -= 1
                exc = future.exception()
                outcomes[name] = exc if exc is not None else future.result()
    failures = sorted(
        (n for n, o in outcomes.items() if isinstance(o, BaseException)), key=rank.__getitem__
    )
    if failures:
        first = outcomes[failures[0]]
        assert isinstance(first, BaseException)
        raise first
    return [outcomes[n] for n in ordered]  # type: ignore[misc]
