"""The package's modules import one another without a circle, function-level imports included.

config.py is the ground floor, runtime.py knows the hardware and not the backends, hub.py knows the
checkpoint layout and not the model's code: a late `from .model import ...` inside a function
hides a circle from Python, not from this test. Lazy imports of optional third-party modules
(triton, matplotlib, flash_attn) are not edges of this graph.
"""

import ast
from pathlib import Path

import pytest

import modernbert_mini

PACKAGE = Path(modernbert_mini.__file__).parent
NAME = "modernbert_mini"


def modules() -> dict[str, Path]:
    """{"config": path, ..., "__init__": path}"""
    return {path.stem: path for path in sorted(PACKAGE.glob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports anywhere in it (module level or in a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == NAME:
                    found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                raise AssertionError(f"{path.name}: import from above the package: {ast.dump(node)}")
            if node.level == 1:
                dotted = node.module
            elif node.module and node.module.split(".")[0] == NAME:
                dotted = node.module.partition(".")[2] or None
            else:
                continue  # a third-party module
            if dotted:  # from .config import X, from modernbert_mini.config import X
                found.add(dotted.split(".")[0])
            else:  # from . import runtime (a module) or from . import X (a name of __init__)
                found |= {a.name if a.name in known else "__init__" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: imported(path, known) - {name} for name, path in modules().items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle a -> b -> ... -> a, or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_circle():
    edges = graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_graph_sees_function_level_imports():
    edges = graph()
    assert "flash" in edges["backends"]  # imported only inside functions
    assert "viz" in edges["bench"]
    assert "triton" not in edges["flash"]  # third-party


@pytest.mark.parametrize("module, below", [
    ("config", set()),  # the ground floor
    ("runtime", set()),  # the hardware: no backend, no model
])
def test_the_ground_floor_imports_nothing_of_the_package(module, below):
    assert graph()[module] == below


def test_loading_knows_layouts_not_the_model():
    assert graph()["hub"] == {"config", "tokenizer"}  # a checkpoint folder holds its tokenizer
    assert graph()["tokenizer"] == set()


def test_find_cycle_finds_a_late_import_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_moved_names_stay_where_readers_found_them():
    from modernbert_mini import backends, config, hub, model, runtime

    assert hub.resolve_checkpoint is config.resolve_checkpoint
    assert hub.read_hf_config is config.read_hf_config
    assert hub.CONFIG_NAME == config.CONFIG_NAME == "config.json"
    assert callable(model.init_weights)  # chapter 5 calls mm.model.init_weights
    assert not hasattr(runtime.Runtime, "attention_backends")  # backends.runnable(rt) answers
