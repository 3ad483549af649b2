"""The package's layout: dependencies run one way (no cycles, no upward imports), one method registry,
a small public API documented in the README.

The import graph is built from the source (AST), imports inside functions included, so nothing
depends on what happens to be imported at test time.
"""

import ast
import re
from pathlib import Path

import vitjax

ROOT = Path(vitjax.__file__).parent
REPO = ROOT.parent

#: Each layer may import only the layers below it (and modules of its own folder).
LAYERS = {
    "errors": 0, "cache": 0, "version": 0,
    "io": 1,
    "model": 2,
    "checkpoints": 3, "data": 3,
    "attribution": 4,
    "evaluation": 5, "viz": 5,
    "cli": 6,
    "__init__": 7,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, name: str, known) -> set:
    """Every vitjax module ``path`` imports, at module level or inside functions."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = subs if all(s in known for s in subs) else [base] + subs
        else:
            continue
        for t in targets:
            if t in known and t != name:
                out.add(t)
    return out


def _graph():
    mods = _modules()
    return {m: _imports(p, m, mods) for m, p in mods.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer():
    assert {_layer(m) for m in _modules()} <= set(LAYERS)


def test_no_import_cycle_between_modules():
    graph = {m: {t for t in ts if t != "vitjax"} for m, ts in _graph().items()}
    assert _cycles(graph) == []


def test_no_import_cycle_between_folders():
    folders = {}
    for m, targets in _graph().items():
        folders.setdefault(_layer(m), set()).update(_layer(t) for t in targets if _layer(t) != _layer(m))
    assert _cycles(folders) == []


def test_no_upward_or_sideways_import():
    bad = []
    for m, targets in _graph().items():
        for t in targets:
            a, b = _layer(m), _layer(t)
            if a != b and LAYERS[b] >= LAYERS[a]:
                bad.append(f"{m} -> {t}")
    assert bad == []


def test_the_layout_test_sees_an_upward_import(tmp_path):
    # the checker itself can fail: a model module importing the attribution layer is caught
    src = "from vitjax.attribution.maps import compute_maps\n"
    p = ROOT / "model" / "vit.py"
    found = _imports(p, "vitjax.model.vit", _modules()) | set()
    tree_targets = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom):
            tree_targets.add(node.module)
    assert "vitjax.attribution.maps" in tree_targets and "vitjax.attribution.maps" not in found
    assert LAYERS[_layer("vitjax.attribution.maps")] > LAYERS[_layer("vitjax.model.vit")]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_imports_inside_functions_only_defer_third_party_libraries():
    inner = []
    for m, p in _modules().items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("vitjax"):
                        inner.append(f"{m}: {sub.module}")
                    if isinstance(sub, ast.Import) and any(a.name.startswith("vitjax") for a in sub.names):
                        inner.append(f"{m}: import")
    assert inner == []


def test_map_methods_are_declared_once():
    names = list(vitjax.METHODS)
    pattern = re.compile(r"\(\s*\"rollout\",\s*\"(layer|generic)\"|\"grad_rollout\",\s*\"attention_gradcam\"")
    hits = [str(p.relative_to(REPO)) for p in ROOT.rglob("*.py") if pattern.search(p.read_text())]
    assert hits == [], "a second list of method names"
    assert names == ["rollout", "layer", "cumulative", "heads", "generic", "grad_rollout", "attention_gradcam",
                     "last_layer", "lens", "head-importance"]


def test_public_api_is_small_and_every_name_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    api = readme[readme.index("## API"):]
    assert 20 <= len(vitjax.__all__) <= 40
    missing = [n for n in vitjax.__all__ if f"`{n}" not in api and f"vitjax.{n}" not in api]
    assert missing == []
