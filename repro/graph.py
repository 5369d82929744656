"""The build graph: recipes whose base is another recipe (``recipe:NAME``).

Order is topological and otherwise by name, so it is the same on every run; a level
holds recipes that do not depend on each other and may be built concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

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


@dataclass
class Outcome(Generic[R]):
    """What became of one recipe in `schedule`: its result, its error, or the base
    recipe whose failure stopped it (`skipped_for`)."""

    recipe: Recipe
    result: R | None = None
    error: BaseException | None = None
    skipped_for: str = ""
    # The digest `publish` pushed, for a recipe that others build on.
    published: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.skipped_for


def schedule(
    selected: Sequence[Recipe],
    everything: Sequence[Recipe],
    build_one: Callable[[Recipe, str | None, dict[str, str]], R],
    *,
    builders: Sequence[str | None] = (None,),
    jobs: int = 1,
    publish: Callable[[Recipe, R], str] | None = None,
    early: Collection[str] | Future[Collection[str]] = (),
    confirm: Callable[[Recipe, R, dict[str, str]], R] | None = None,
    discard: Callable[[Recipe, R], None] | None = None,
    on_start: Callable[[Recipe, str | None], None] | None = None,
    on_finish: Callable[[Outcome[R]], None] | None = None,
    on_outcome: Callable[[Outcome[R]], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[Outcome[R]]:
    """Build `selected` as a graph: each recipe starts as soon as the selected recipes
    it builds on are done, up to `jobs` builds at a time on each of `builders` (a new
    build goes to the least busy one). Returns one outcome per recipe, in graph order.

    A recipe that another selected recipe builds on is published once it is built
    (``publish`` returns the pushed digest), and its dependants' builds are given
    ``built[name] = digest`` so that their locks are checked against it. A recipe
    that fails stops its dependants (``skipped_for``), not the others.

    Recipes named in `early` start at once, without waiting for their bases (their
    lock says which images the bases will be, and those are at hand). Their result is
    held until the bases are done (a recipe whose bases are all done by the time it
    starts is built as usual, and `build_one` can tell an early start by a base
    missing from ``built``): then ``confirm(recipe, result, built)`` either
    returns the final result (and the recipe is published, if others build on it) or
    raises (the recipe failed); if a base failed, ``discard(recipe, result)`` is
    called and the recipe is skipped. `early` may be a future (the question takes a
    registry): the recipes with no selected bases start meanwhile, and those it names
    start early when it answers, if they have not started by then; a future that
    fails names none.

    `on_start` and `on_finish` are called as builds start and end (completion order);
    `on_outcome` in graph order, as soon as every earlier recipe has its outcome. All
    callbacks run in the calling thread. On KeyboardInterrupt (or an exception from a
    callback) `cancel` is set, the running builds are waited for (they should watch
    `cancel`), held results are discarded and the exception re-raised.
    """
    import queue

    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    names = {r.name for r in selected}
    by_name = {r.name: r for r in everything}
    for r in selected:
        by_name.setdefault(r.name, r)
    graph_order = [n for level in levels(list(by_name.values()), only=names) for n in level]
    deps = {n: sorted(set(by_name[n].recipe_bases) & names) for n in graph_order}
    early_set: set[str] = set()
    pending: Future[Collection[str]] | None = None
    if isinstance(early, Future):
        pending = early
    else:
        early_set.update(early)
    waits = {n: [] if n in early_set else deps[n] for n in graph_order}
    needed_as_base = {d for n in graph_order for d in deps[n]}
    slots = list(builders) or [None]
    busy = [0] * len(slots)
    cancel = cancel if cancel is not None else threading.Event()
    # (slot, outcome) of each build as it ends; (-1, None) when `early` is answered
    finished: queue.Queue[tuple[int, Outcome[R] | None]] = queue.Queue()
    built: dict[str, str] = {}
    outcomes: dict[str, Outcome[R]] = {}
    running: dict[str, threading.Thread] = {}
    held: dict[str, Outcome[R]] = {}  # early recipes built, their bases not yet done
    emitted = 0

    def run(recipe: Recipe, slot: int, snapshot: dict[str, str]) -> None:
        outcome: Outcome[R] = Outcome(recipe)
        try:
            if cancel.is_set():
                raise KeyboardInterrupt
            outcome.result = build_one(recipe, slots[slot], snapshot)
            if (
                publish is not None
                and recipe.name in needed_as_base
                and recipe.name not in early_set
                and not cancel.is_set()
            ):
                outcome.published = publish(recipe, outcome.result)
        except BaseException as exc:  # noqa: BLE001 - handed to the scheduling thread
            outcome.error = exc
        finished.put((slot, outcome))

    def ready() -> list[str]:
        return [
            n
            for n in graph_order
            if n not in outcomes
            and n not in running
            and n not in held
            and all(d in outcomes and outcomes[d].ok for d in waits[n])
        ]

    def failed_base(name: str) -> str:
        return next((d for d in deps[name] if d in outcomes and not outcomes[d].ok), "")

    def settle(outcome: Outcome[R]) -> None:
        """Record an outcome; stop the recipes that build on a failed one; settle the
        early recipes whose bases are now all done."""
        nonlocal emitted
        outcomes[outcome.recipe.name] = outcome
        if outcome.ok and outcome.recipe.name in needed_as_base:
            built[outcome.recipe.name] = outcome.published
        if not outcome.ok:
            for n in graph_order:
                base = failed_base(n)
                if n not in outcomes and n not in running and n not in held and base:
                    outcomes[n] = Outcome(
                        by_name[n], skipped_for=outcomes[base].skipped_for or base
                    )
        for n in [n for n in graph_order if n in held]:
            if n in held and all(d in outcomes for d in deps[n]):
                settle(finalise(held.pop(n)))
        while emitted < len(graph_order) and graph_order[emitted] in outcomes:
            if on_outcome is not None:
                on_outcome(outcomes[graph_order[emitted]])
            emitted += 1

    def finalise(outcome: Outcome[R]) -> Outcome[R]:
        """An early recipe's outcome once its bases are done."""
        recipe, result = outcome.recipe, outcome.result
        assert result is not None
        base = failed_base(recipe.name)
        if base:
            if discard is not None:
                discard(recipe, result)
            return Outcome(recipe, skipped_for=outcomes[base].skipped_for or base)
        try:
            if confirm is not None:
                result = confirm(recipe, result, dict(built))
            outcome.result = result
            if publish is not None and recipe.name in needed_as_base:
                outcome.published = publish(recipe, result)
        except Exception as exc:  # noqa: BLE001 - the recipe's failure, reported in order
            return Outcome(recipe, error=exc)
        return outcome

    def take_early() -> None:
        """The early recipes, once the question is answered: those not started yet
        whose bases are not all done."""
        nonlocal pending
        if pending is None or not pending.done():
            return
        try:
            named = set(pending.result())
        except Exception:  # noqa: BLE001 - no answer: every recipe waits for its bases
            named = set()
        pending = None
        for n in graph_order:
            started = n in outcomes or n in running or n in held
            # (a recipe whose bases are all done by now is not early: it starts as usual)
            if n in named and not started and any(d not in outcomes for d in deps[n]):
                early_set.add(n)
                waits[n] = []

    if pending is not None:
        pending.add_done_callback(lambda _: finished.put((-1, None)))
    try:
        while len(outcomes) < len(graph_order):
            take_early()
            for name in ready():
                slot = min(range(len(slots)), key=lambda i: (busy[i], i))
                if busy[slot] >= jobs:
                    break
                busy[slot] += 1
                recipe = by_name[name]
                if name in early_set and all(d in outcomes for d in deps[name]):
                    # Its bases were done before a slot was: an ordinary build, given
                    # their digests (`built`), not an early one.
                    early_set.discard(name)
                if on_start is not None:
                    on_start(recipe, slots[slot])
                thread = threading.Thread(
                    target=run,
                    args=(recipe, slot, dict(built)),
                    name=f"repro-build-{name}",
                    daemon=True,
                )
                running[name] = thread
                thread.start()
            if not running and pending is None:
                break  # nothing can start: every remaining recipe waits on a failure
            try:
                slot, got = finished.get(timeout=0.5)
            except queue.Empty:
                continue
            if got is None:
                continue  # the early question was answered
            outcome = got
            busy[slot] -= 1
            name = outcome.recipe.name
            running.pop(name).join()
            if on_finish is not None:
                on_finish(outcome)
            if outcome.ok and name in early_set and not all(d in outcomes for d in deps[name]):
                held[name] = outcome
                continue
            settle(finalise(outcome) if outcome.ok and name in early_set else outcome)
    except BaseException:  # Ctrl-C, or a callback failed: stop every running build
        cancel.set()
        for thread in running.values():
            thread.join()
        while not finished.empty():
            _, got = finished.get()
            if got is not None and got.ok and got.recipe.name in early_set:
                held[got.recipe.name] = got
        for outcome in held.values():
            if discard is not None and outcome.result is not None:
                discard(outcome.recipe, outcome.result)
        raise
    return [outcomes[n] for n in graph_order]
