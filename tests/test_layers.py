"""The package's layers point one way: value types and store helpers at the bottom, formats and the scan client
above them, the app on top. Read from the source (every import, inside functions and TYPE_CHECKING blocks too),
so a new import that points upward or closes a circle fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import lockllm_wsgi

PACKAGE = Path(lockllm_wsgi.__file__).parent
# Bottom to top; a module may import from its own layer or any below. Sub-packages count as one module.
LAYERS = [
    {"refusal", "verdict", "normalize", "presets", "stores", "identity", "record", "files", "offline", "breaker",
     "classifier"},
    {"extract", "body"},
    {"redact"},
    {"formats"},
    {"config"},
    {"audit", "metrics", "relay", "verdict_cache", "ratelimit", "policy", "overrides", "permissions", "advice",
     "offline_scan"},
    {"health", "scan", "proxy_headers", "output"},
    {"app", "apache_config", "express", "unavailable", "reload"},
    {"cli", "__init__", "wsgi"},
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


def _unit(path: Path) -> str:
    """The module's name as the layers know it: `formats/openai.py` -> formats, `scan.py` -> scan."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> set[str]:
    """The package's modules that `path` imports, as units."""
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for a top-level module, 1 inside formats/ or offline/
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level > depth + 1:
                continue
            base = list(path.relative_to(PACKAGE).parts[:-1])[: len(path.relative_to(PACKAGE).parts) - node.level]
            parts = base + (node.module.split(".") if node.module else [])
            if parts:
                found.add(parts[0])
            else:  # `from . import name`: a module of the package, or a name defined in its __init__
                found.update(alias.name if (PACKAGE / f"{alias.name}.py").exists() or (PACKAGE / alias.name).is_dir()
                             else "__init__" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lockllm_wsgi."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("lockllm_wsgi."))
    return found - {_unit(path)}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        graph.setdefault(_unit(path), set()).update(_imports(path))
    return graph


def test_every_module_has_a_layer():
    assert set(_graph()) == set(RANK)


def test_no_module_imports_from_a_layer_above_it():
    upward = [(module, target) for module, targets in _graph().items() for target in targets
              if RANK[target] > RANK[module]]
    assert upward == []


def test_the_import_graph_has_no_circle():
    graph = _graph()
    visiting, done, circles = set(), set(), []

    def visit(module: str, trail: list[str]) -> None:
        if module in done:
            return
        if module in visiting:
            circles.append(trail[trail.index(module):] + [module])
            return
        visiting.add(module)
        for target in sorted(graph[module]):
            visit(target, trail + [module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert circles == []


def test_policy_does_not_load_the_cache_or_redis():
    import subprocess
    import sys

    loaded = subprocess.run([sys.executable, "-c", "import sys, lockllm_wsgi.policy; print(sorted(m for m in "
                             "sys.modules if m.split('.')[0] in ('requests_cache', 'redis')))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
