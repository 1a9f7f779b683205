"""Release ordering: dependencies first, cycles reported with their path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from configcenter.core.errors import UserError


class CycleError(UserError):
    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(cycle))


def dependency_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Topological order (dependencies before dependents), ties broken by name.

    Dependencies not in `deps` are ignored (validation reports them).
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        mark = state.get(node)
        if mark == 2:
            return
        if mark == 1:
            raise CycleError([*stack[stack.index(node) :], node])
        state[node] = 1
        stack.append(node)
        for dep in sorted(deps[node]):
            if dep in deps:
                visit(dep)
        stack.pop()
        state[node] = 2
        order.append(node)

    for node in sorted(deps):
        visit(node)
    return order


def dependents_of(deps: Mapping[str, Sequence[str]], failed: str) -> set[str]:
    """Every service that depends on `failed`, directly or not."""
    out: set[str] = set()
    frontier = [failed]
    while frontier:
        current = frontier.pop()
        for name, needs in deps.items():
            if current in needs and name not in out:
                out.add(name)
                frontier.append(name)
    return out
