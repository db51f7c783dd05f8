"""Structural rules: the method is pure, the CLI starts light, packaging lists every package."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE = sorted((ROOT / "skillmix" / "method").glob("*.py"))
FORBIDDEN_MODULES = {
    "os",
    "pathlib",
    "socket",
    "subprocess",
    "shutil",
    "tempfile",
    "io",
    "urllib",
    "http",
    "requests",
    "httpx",
    "openai",
    "boto3",
    "botocore",
    "aiohttp",
    "kubernetes",
    "time",
    "datetime",
    "asyncio",
    "threading",
    "importlib.resources",
}
FORBIDDEN_CALLS = {"open", "print", "input"}


def test_method_modules_do_no_io() -> None:
    assert PURE, "no method modules found"
    for path in PURE:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            for name in names:
                assert (
                    name.split(".")[0] not in FORBIDDEN_MODULES and name not in FORBIDDEN_MODULES
                ), f"{path.name} imports {name}"
                assert not name.startswith(
                    (
                        "skillmix.store",
                        "skillmix.backends",
                        "skillmix.k8s",
                        "skillmix.pipeline",
                        "skillmix.cli",
                    )
                ), f"{path.name} imports {name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.id}()"


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "skillmix").rglob("__init__.py")
    }
    assert found | {"skillmix.builtin_prompts", "skillmix.builtin_chart"} == listed


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from skillmix.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('openai', 'boto3', 'kubernetes', 'matplotlib', 'numpy', 'aiohttp', 'pydantic', 'inflect') if m in sys.modules)\n"
        "sys.stderr.write(','.join(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stderr == ""
    assert "Commands:" in proc.stdout


# Layers, top to bottom: a module may import from its own layer and the layers below it, never
# from a layer above (imports inside functions and under TYPE_CHECKING count too). The first
# matching prefix decides a module's layer. DEVELOPERS.md describes the same order.
LAYERS: list[tuple[str, ...]] = [
    ("skillmix.cli", "skillmix.__main__"),
    ("skillmix.k8s", "skillmix.executors"),  # the executors (peers)
    ("skillmix.report", "skillmix.legacy", "skillmix.reference_run", "skillmix.api"),
    ("skillmix.pipeline", "skillmix.tasks"),  # context, plan, units, aggregation; task configs
    ("skillmix.backends", "skillmix.store"),
    (
        "skillmix.records",
        "skillmix.artifacts",
        "skillmix.config",
        "skillmix.identity",
        "skillmix.loading",
        "skillmix.promptset",
    ),
    ("skillmix.method",),
    ("skillmix.catalog",),
    ("skillmix.errors", "skillmix.settings", "skillmix"),
]


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def skillmix_imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a skillmix module in the file."""
    out = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("skillmix")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base == "skillmix":  # `from skillmix import x`: x may be a module
                out += [(node.lineno, f"skillmix.{a.name}") for a in node.names]
            elif base.startswith("skillmix."):
                out.append((node.lineno, base))
    return out


def test_imports_point_down_the_layers() -> None:
    violations = []
    for path in sorted((ROOT / "skillmix").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mine = layer_of(module)
        for line, target in skillmix_imports(path, module):
            if target in ("skillmix.__version__",):
                continue
            if layer_of(target) < mine:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert violations == []


def test_the_layer_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from skillmix.cli import main\n", encoding="utf-8")
    assert skillmix_imports(probe, "skillmix.store.probe") == [(2, "skillmix.cli")]
    assert layer_of("skillmix.cli") < layer_of("skillmix.store.probe")


def import_graph() -> dict[str, set[str]]:
    """module -> the skillmix modules it imports (at the top, in functions, for typing)."""
    modules: dict[str, Path] = {}
    for path in sorted((ROOT / "skillmix").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for _, target in skillmix_imports(path, module):
            while target not in modules and "." in target:  # `from pkg.mod import name`
                target = target.rsplit(".", 1)[0]
            if target in modules and target != module and not module.startswith(target + "."):
                targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_even_inside_functions() -> None:
    """metrics and reference_numbers once imported each other from inside functions: a cycle
    in disguise. Both now build on method/points.py; no two modules import each other at all."""
    graph = import_graph()
    assert "skillmix.method.metrics" not in graph["skillmix.method.reference_numbers"]
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# Imports inside functions: only those that defer a heavy library (start-up time) or break a
# cycle stay, each saying why in a `# deferred: ...` comment on its line or the line above (one
# comment may head a run of adjacent imports). Command modules import at their top: `--help`
# lists COMMANDS' summaries without importing them.
MAX_FUNCTION_IMPORTS = 40  # issue 21 allows 60: a ratchet


def function_imports(path: Path) -> list[tuple[int, bool]]:
    """(line, says why) for every import statement inside a function of the file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    seen: dict[int, ast.stmt] = {}
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    seen[sub.lineno] = sub
    out: list[tuple[int, bool]] = []
    explained_until = -1  # the last line of an explained import
    for lineno in sorted(seen):
        stmt = seen[lineno]
        end = stmt.end_lineno or lineno
        own = any("# deferred" in lines[i - 1] for i in range(lineno, end + 1))
        above = lines[lineno - 2].strip() if lineno > 1 else ""
        why = own or (above.startswith("#") and "deferred" in above)
        why = why or explained_until == lineno - 1
        if why:
            explained_until = end
        out.append((lineno, why))
    return out


def test_function_level_imports_are_few_and_each_says_why() -> None:
    found: list[str] = []
    unexplained: list[str] = []
    for path in sorted((ROOT / "skillmix").rglob("*.py")):
        for line, why in function_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            found.append(where)
            if not why:
                unexplained.append(where)
    assert unexplained == [], "move these to the module top, or say why with # deferred: ..."
    assert len(found) <= MAX_FUNCTION_IMPORTS, found


def test_the_import_check_sees_an_unexplained_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n"
        "    # deferred: heavy\n"
        "    import numpy\n"
        "    import scipy\n"
        "\n"
        "    import json\n"
        "def g():\n"
        "    import boto3  # deferred: only for s3\n",
        encoding="utf-8",
    )
    assert function_imports(probe) == [(3, True), (4, True), (6, False), (8, True)]


def documented_layers() -> list[set[str]]:
    """The layer table of docs/architecture.md, as module names."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", text, flags=re.MULTILINE)
    layers = []
    for _number, cell in rows:
        cell = re.sub(r"\(.*?\)", "", cell).replace("\\_", "_")
        layers.append({f"skillmix.{n.strip()}" for n in cell.split(",") if n.strip()})
    return layers


def test_the_architecture_picture_shows_the_layers_the_test_enforces() -> None:
    expected = [set(layer) - {"skillmix"} for layer in LAYERS]
    assert documented_layers() == expected


MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
# functions that are tables (one literal mapping or a list of options), allowed to be longer
TABLES = {
    "skillmix/k8s/values.py:_cluster_values",  # profile field -> chart key
    "skillmix/cli/run.py:experiment_options",  # the quick form's click options
}


def test_no_module_over_600_lines_and_no_function_over_80_but_tables() -> None:
    big, long = [], []
    for path in sorted((ROOT / "skillmix").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        if len(text.splitlines()) > MAX_MODULE_LINES:
            big.append(where)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES and f"{where}:{node.name}" not in TABLES:
                    long.append(f"{where}:{node.name} ({size} lines)")
    assert (big, long) == ([], [])
