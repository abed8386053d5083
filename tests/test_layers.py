"""The import graph of fedlora_ray: no cycle, deferred imports included.

The layers themselves (and "fedlora_ray never imports ray") are import-linter contracts in
pyproject.toml, checked by `make lint`; a layer whose modules may import each other (':') could
still hide a cycle, which this test finds. grimp reads every import statement: those inside
functions and under TYPE_CHECKING count, since a deferred import is still a dependency."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(root: str) -> None:
        # iterative depth-first search: the graph is deeper than Python's recursion is safe for
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_import_graph_of_fedlora_ray_has_no_cycle():
    graph = grimp.build_graph("fedlora_ray", cache_dir=None)  # no cache: the files as they are now
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=a, imported=b)
    assert strongly_connected(graph) == [["p.a", "p.b", "p.c"]]


def test_the_launcher_loads_neither_torch_nor_transformers(tmp_path):
    """`fedlora-ray run` on the Ray backend reads the config and the data and launches, all in a
    process that never loads torch or transformers (the driver and client actors do): 0.5 GB
    less for a whole run, and seconds less before the first round."""
    code = f"""
import sys
import actors.launch
seen = {{}}
def launched(cfg, out, resume=False, data=None):
    seen["heavy"] = sorted(m for m in ("torch", "transformers", "peft", "timm") if m in sys.modules)
    seen["clients"] = len(data.partition)
    return {{}}
actors.launch.run_on_ray = launched
from actors.cli import main
assert main(["run", "jobs/configs/smoke.yaml", "--out", {str(tmp_path / "run")!r}]) == 0
print(seen)
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "{'heavy': [], 'clients': 8}", out.stdout
