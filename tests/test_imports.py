"""No import cycle in peft_core: every import of one peft_core module by another, at the top of a file or inside a
function, read with ast, draws an edge; the graph must have no cycle. A late import inside a function hides a cycle
from Python, not from a reader, so those count too."""

import ast
from pathlib import Path

PACKAGE = "peft_core"
ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The peft_core modules the file at `path` (module `name`) imports anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from peft_core.image import studio` imports the module peft_core.image.studio
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import peft_core.image.studio.X` -> its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_late_and_relative_imports(tmp_path):
    """The reader itself: an import inside a function and a relative one both draw their edge."""
    path = tmp_path / "peft_core" / "image" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("def f():\n    from peft_core.image.studio import ImageRequest\n\nfrom . import recipe\n"
                    "from ..hub import open_repo\nimport peft_core.limits\n")  # fmt: skip
    known = {"peft_core.image.studio", "peft_core.image.recipe", "peft_core.hub", "peft_core.limits",
             "peft_core.image", "peft_core"}  # fmt: skip
    assert imported(path, "peft_core.image.x", known) == known - {"peft_core.image", "peft_core"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_peft_core():
    found = modules()
    assert len(found) > 30 and "peft_core.image.studio" in found  # the walk found the package
    graph = {name: imported(path, name, set(found)) for name, path in found.items()}
    assert "peft_core.image.recipe" in graph["peft_core.image.studio"]  # edges are drawn
    assert cycles(graph) == []
