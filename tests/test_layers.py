"""The package's layers: no module imports a module of a higher layer, and no import circle.

Every import counts, also those inside functions (a lazy import is still a dependency).
The layers, lowest first, are the ones the README's "What is here" states.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# (layer, module prefixes); a module belongs to the layer of its longest matching prefix
LAYERS = [
    ("core", ["ditto_spu.errors", "ditto_spu.rings", "ditto_spu.plan", "ditto_spu.policy", "ditto_spu.shares",
              "ditto_spu.spu_config", "ditto_spu.configs_dir", "ditto_spu.semantics.fxp",
              "ditto_spu.semantics.report", "ditto_spu.semantics.rules"]),
    ("mpc runtime", ["ditto_spu.native", "ditto_spu.kernels", "ditto_spu.mpc"]),
    ("compiler", ["passes", "ditto_spu.semantics", "ditto_spu.quant", "ditto_spu.frontend", "ditto_spu.simulation"]),
    ("models", ["ditto_spu.approx", "ditto_spu.models"]),
    ("applications", ["ditto_spu.infer", "ditto_spu.generate", "ditto_spu.demo", "ditto_spu.demo_plan", "ditto_spu.metrics",
                      "ditto_spu.data", "ditto_spu.bench", "ditto_spu.distill", "ditto_spu.distributed",
                      "ditto_spu.results"]),
    ("command line", ["ditto_spu.cli", "ditto_spu.pytest_plugin", "ditto_spu"]),
]


def _modules() -> dict:
    mods = {}
    for top in ("ditto_spu", "passes"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
    return mods


MODULES = _modules()


def _imports(name: str) -> set:
    """The project modules ``name`` imports (a name imported from a package that is not a
    submodule counts as the package)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    out.add(f"{source}.{alias.name}")
                elif source in MODULES:
                    out.add(source)
    out.discard(name)
    return out


def layer_of(name: str) -> int:
    best, layer = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), index
    if layer is None:
        raise AssertionError(f"module {name} is in no layer: add it to LAYERS (and to the README)")
    return layer


GRAPH = {name: _imports(name) for name in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_higher_layer(name):
    mine = layer_of(name)
    upward = sorted(t for t in GRAPH[name] if layer_of(t) > mine)
    assert not upward, (
        f"{name} ({LAYERS[mine][0]}) imports {upward} of higher layers "
        f"{sorted({LAYERS[layer_of(t)][0] for t in upward})}"
    )


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(GRAPH) == []


def test_the_checks_can_fail():
    """A circle and an upward import planted in a copy of the graph are found."""
    graph = {k: set(v) for k, v in GRAPH.items()}
    graph["ditto_spu.rings"].add("ditto_spu.plan")  # plan imports rings: a circle
    assert ["ditto_spu.plan", "ditto_spu.rings"] in _cycles(graph)
    assert layer_of("ditto_spu.frontend") > layer_of("ditto_spu.mpc.runtime")
    assert layer_of("ditto_spu.semantics.interpreter") > layer_of("ditto_spu.kernels.divide") > layer_of(
        "ditto_spu.semantics.report")
