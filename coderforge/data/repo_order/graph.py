"""The dependency graph of a repository's code files (``deps[a]``: the files ``a`` imports): strongly
connected components (Tarjan), their topological order, dependencies first (Kahn), and PageRank inside
import cycles."""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field


def tarjan_scc(nodes: list[str], deps: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (iterative Tarjan), each sorted by path, in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(deps.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(deps.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(sorted(comp))
    return comps


def pagerank(nodes: list[str], deps: dict[str, set[str]], damping: float = 0.85, iters: int = 100,
             tol: float = 1e-12) -> dict[str, float]:
    """PageRank with edges importer → imported, restricted to ``nodes``."""
    n = len(nodes)
    members = set(nodes)
    out = {v: sorted(d for d in deps.get(v, ()) if d in members) for v in nodes}
    rank = dict.fromkeys(nodes, 1.0 / n)
    for _ in range(iters):
        dangling = sum(rank[v] for v in nodes if not out[v])
        new = dict.fromkeys(nodes, (1.0 - damping) / n + damping * dangling / n)
        for v in nodes:
            if out[v]:
                share = damping * rank[v] / len(out[v])
                for w in out[v]:
                    new[w] += share
        delta = sum(abs(new[v] - rank[v]) for v in nodes)
        rank = new
        if delta < tol:
            break
    return rank


@dataclass
class Component:
    """A strongly connected component in output order: one file, or an import cycle's files."""

    members: list[str]  # a cycle's files by PageRank (most depended-on first), ties by path
    ranks: dict[str, float] = field(default_factory=dict)  # PageRank of a cycle's files; empty for one file


def dependency_order(nodes: list[str], deps: dict[str, set[str]]) -> list[Component]:
    """The components of the graph, dependencies first. Tarjan's algorithm condenses import cycles;
    the condensation is ordered topologically (Kahn), and among the components ready at the same time
    the one whose smallest path sorts first goes first; inside a cycle files go by :func:`pagerank`
    on the cycle's subgraph. ``deps`` must only name ``nodes``."""
    comps = tarjan_scc(nodes, deps)
    comp_of = {p: i for i, c in enumerate(comps) for p in c}
    cdeps: dict[int, set[int]] = defaultdict(set)  # condensation: component -> components it depends on
    dependents: dict[int, set[int]] = defaultdict(set)
    for a, ds in deps.items():
        for b in ds:
            ca, cb = comp_of[a], comp_of[b]
            if ca != cb:
                cdeps[ca].add(cb)
                dependents[cb].add(ca)
    remaining = {i: len(cdeps[i]) for i in range(len(comps))}
    ready = [(comps[i][0], i) for i, n in remaining.items() if n == 0]
    heapq.heapify(ready)
    ordered: list[Component] = []
    while ready:
        _, i = heapq.heappop(ready)
        comp = comps[i]
        if len(comp) > 1:
            pr = pagerank(comp, deps)
            ordered.append(Component(sorted(comp, key=lambda p: (-round(pr[p], 12), p)), pr))
        else:
            ordered.append(Component(comp))
        for j in sorted(dependents[i]):
            remaining[j] -= 1
            if remaining[j] == 0:
                heapq.heappush(ready, (comps[j][0], j))
    if len(ordered) != len(comps):
        raise RuntimeError("dependency ordering lost files: the condensation was not acyclic")
    return ordered
