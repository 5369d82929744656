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
) -> list[R]:
    """Build `selected` in topological order; independent recipes of one level are
    spread over `builders` (one build at a time on each), results in a fixed order.

    A recipe that another selected recipe builds on is published after its build
    (``publish`` returns the pushed digest), and its dependants' builds are given
    ``built[name] = digest`` so that their locks are checked against it.
    """
    from concurrent.futures import ThreadPoolExecutor

    names = {r.name for r in selected}
    by_name = {r.name: r for r in everything}
    needed_as_base = {dep for r in selected for dep in r.recipe_bases if dep in names}
    built: dict[str, str] = {}
    results: list[R] = []
    slots = list(builders) or [None]
    for level in levels(list(everything), only=names):
        todo = [by_name[n] for n in level]
        queues: list[list[Recipe]] = [todo[i :: len(slots)] for i in range(len(slots))]

        def run(
            slot: int, queues: list[list[Recipe]] = queues
        ) -> list[tuple[Recipe, R | BaseException]]:
            out: list[tuple[Recipe, R | BaseException]] = []
            for recipe in queues[slot]:
                try:
                    out.append((recipe, build_one(recipe, slots[slot], dict(built))))
                except BaseException as exc:  # noqa: BLE001 - reported in order below
                    out.append((recipe, exc))
                    break
            return out

        if len(slots) == 1:
            done = run(0)
        else:
            with ThreadPoolExecutor(max_workers=len(slots)) as pool:
                done = [item for part in pool.map(run, range(len(slots))) for item in part]
        done.sort(key=lambda item: item[0].name)
        for recipe, outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
            if publish is not None and recipe.name in needed_as_base:
                built[recipe.name] = publish(recipe, outcome)
    return results
