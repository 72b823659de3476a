"""Import layering between the top-level packages, read from the source (no import runs: no JVM, no torch).

Order, left to right: ``bench -> dags -> spark_jobs -> expectations -> tasks``. A package may import only
itself and packages to its right, so there is no upward arrow and no cycle between packages:
- ``tasks`` holds config, schema, the data catalog (``tasks.layers``) and the plain steps; it imports none
  of the others.
- ``expectations`` (the Great Expectations suites and quality computations) builds on ``tasks`` only.
- ``spark_jobs`` (Spark transforms and drivers, including the drift job and the validation gate) may use
  the suites.
- ``dags`` only wires: its one ``spark_jobs`` import is ``spark_jobs.session.driver_java_options``, which
  imports no Spark at module level (parse-safe), and decides the spark-submit options of those very jobs;
  that arrow points down the order, so it is allowed rather than moved to ``tasks``.
- ``bench`` measures everything.
Every ``import``/``from ... import`` counts, at module level or inside a function (a lazy import is still
a dependency); ``if TYPE_CHECKING:`` imports too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ORDER = ("bench", "dags", "spark_jobs", "expectations", "tasks")
RANK = {name: i for i, name in enumerate(ORDER)}


def _package_of(path: Path) -> str:
    return path.relative_to(REPO_ROOT).parts[0]


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import statement anywhere in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def package_imports(root: Path = REPO_ROOT) -> list[tuple[str, str, int, str]]:
    """(importing package, imported package, line, file) for every import of one of ORDER's packages."""
    found = []
    for package in ORDER:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, module in imported_modules(tree):
                top = module.split(".")[0]
                if top in RANK:
                    found.append((package, top, line, str(path.relative_to(root))))
    return found


def upward_arrows(imports: list[tuple[str, str, int, str]]) -> list[str]:
    return [f"{where}:{line}: {src} imports {dst}" for src, dst, line, where in imports if RANK[dst] < RANK[src]]


def package_cycles(imports: list[tuple[str, str, int, str]]) -> list[tuple[str, ...]]:
    """Cycles in the graph of package -> package edges (self-edges ignored), each as its packages in order."""
    edges: dict[str, set[str]] = {p: set() for p in ORDER}
    for src, dst, _, _ in imports:
        if src != dst:
            edges[src].add(dst)
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt == trail[0]:
                cycles.append(tuple(trail))
            elif nxt not in trail and RANK[nxt] > RANK[trail[0]]:  # each cycle once, from its first package
                visit(nxt, [*trail, nxt])

    for start in ORDER:
        visit(start, [start])
    return cycles


def test_every_package_is_scanned():
    for package in ORDER:
        assert list((REPO_ROOT / package).rglob("*.py")), f"no Python files under {package}/"


def test_no_upward_import_between_packages():
    arrows = upward_arrows(package_imports())
    assert not arrows, "imports against the order " + " -> ".join(ORDER) + ":\n" + "\n".join(arrows)


def test_no_import_cycle_between_packages():
    assert package_cycles(package_imports()) == []


def test_function_level_imports_count(tmp_path):
    """An upward import inside a function, or a plain ``import spark_jobs``, is caught like a module-level one."""
    for package in ORDER:
        (tmp_path / package).mkdir()
    (tmp_path / "expectations" / "suite.py").write_text(
        "import spark_jobs\n\ndef f():\n    from spark_jobs.features import build_features\n"
    )
    (tmp_path / "tasks" / "step.py").write_text("def g():\n    import expectations.runner\n")
    arrows = upward_arrows(package_imports(tmp_path))
    assert arrows == [
        "expectations/suite.py:1: expectations imports spark_jobs",
        "expectations/suite.py:4: expectations imports spark_jobs",
        "tasks/step.py:2: tasks imports expectations",
    ]
    assert package_cycles(package_imports(tmp_path)) == []
    (tmp_path / "spark_jobs" / "job.py").write_text("from expectations import suite\n")
    assert package_cycles(package_imports(tmp_path)) == [("spark_jobs", "expectations")]


def test_no_module_cycles_inside_a_package():
    pairs = []
    for package in ORDER:
        graph: dict[str, set[str]] = {}
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
            tree = ast.parse(path.read_text())
            # An ``if TYPE_CHECKING:`` import is for annotations only: no runtime cycle (tasks.layers -> config).
            for node in ast.walk(tree):
                if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                    node.body = []
            graph[name] = {m for _, m in imported_modules(tree) if m.split(".")[0] == package and m != name}
            # ``from tasks import search`` imports the module tasks.search.
            graph[name] |= {
                f"{node.module}.{a.name}"
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == package
                for a in node.names
            }
        pairs += [f"{m} <-> {d}" for m, deps in graph.items() for d in deps if m < d and m in graph.get(d, set())]
    assert not pairs, "modules importing each other: " + "; ".join(pairs)
