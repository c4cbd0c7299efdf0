"""The layout rules of docs/design.md §2, read from the source (nothing is imported but the registry):
no import cycle among the harness's modules (module-level imports: an import inside a function runs
later and is the way to break a cycle), bench/ names no registered method outside docstrings and
comments, and no module over MAX_LINES lines unless its docstring says why ("on purpose", "longer
than").
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from vae_collapse_bench.bench import registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vae_collapse_bench"
# bench/ and methods/ install as vae_collapse_bench.bench and .methods (pyproject.toml, package-dir)
SOURCES = {"bench": ROOT / "bench", "methods": ROOT / "methods"}
MAX_LINES = 400
A_REASON = re.compile(r"\bon purpose\b|\blonger than\b", re.IGNORECASE)


def modules(part: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under bench/ or methods/ (packages by __init__)."""
    out = {}
    for path in sorted(SOURCES[part].rglob("*.py")):
        names = path.relative_to(SOURCES[part]).with_suffix("").parts
        if names[-1] == "__init__":
            names = names[:-1]
        out[".".join((PACKAGE, part, *names))] = path
    return out


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_level_imports(tree: ast.Module, name: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(module, imported names) of each import that runs when the module is imported: top-level
    statements, also inside a top-level try/if (not `if TYPE_CHECKING:`), never inside a function."""
    found = []

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                found.extend((alias.name, []) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, level - 1 packages up
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
                found.append((base, [alias.name for alias in node.names]))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(block)

    visit(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the harness modules it imports at module level (`from P import m` counts as P and,
    when m is a module, P.m)."""
    known = modules("bench")
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges = set()
        for base, names in module_level_imports(parse(path), name, path.name == "__init__.py"):
            if base in known:
                edges.add(base)
            edges.update(f"{base}.{n}" for n in names if f"{base}.{n}" in known)
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def docstring_nodes(tree: ast.Module) -> set[int]:
    """ids of the docstring constants of the module, its classes and functions."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


# --------------------------------------------------------------------------------------- the tests
def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_module_level_imports_only():
    graph = import_graph()
    runner = f"{PACKAGE}.bench.runner"
    assert f"{PACKAGE}.bench.registry" in graph[runner] and f"{PACKAGE}.bench.train" in graph[runner]
    # bench.cli imports most commands' modules inside the commands: not at module level
    assert f"{PACKAGE}.bench.perf" not in graph[f"{PACKAGE}.bench.cli"]


def test_no_import_cycle_among_the_harness_modules():
    assert cycles(import_graph()) == []


def test_bench_names_no_registered_method_outside_docstrings_and_comments():
    names = set(registry.names())
    found = []
    for path in modules("bench").values():
        tree = parse(path)
        docstrings = docstring_nodes(tree)
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                  and id(node) not in docstrings]
    assert found == [], "a method is a parameter (or data, e.g. bench/paper_dg_vae.toml), never a literal"


def test_no_module_over_max_lines_without_a_reason_in_its_docstring():
    too_long = []
    for part in SOURCES:
        for path in modules(part).values():
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES and not A_REASON.search(ast.get_docstring(parse(path)) or ""):
                too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert too_long == [], (f"split these along a clear seam, or say in the docstring why the module is "
                            f"longer than {MAX_LINES} lines on purpose")
