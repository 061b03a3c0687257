"""The package's shape: no module imports one that imports it back (directly or round a longer loop, at the
top of a file or inside a function), and one name for an α-scaled adapter, used everywhere."""
import ast
import random
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cotbench"


def _import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from pkg import module` depends on the module; `from pkg import name` on the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, loops, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                loops.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return loops


def test_no_module_imports_one_that_imports_it_back():
    graph = _import_graph()
    assert "cotbench.grading.deadline" in graph["cotbench.grading._worker"]  # the walk sees imports in functions
    assert _loops(graph) == []


def test_the_walk_finds_a_loop_where_there_is_one():
    assert _loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_one_alpha_name_exact_for_any_float():
    from cotbench.backends import openai, vllm
    from cotbench.valve import export
    from cotbench.valve.serving import adapter_name, alpha_label

    assert (adapter_name(0.5), adapter_name(1.0), adapter_name(-0.5), adapter_name(0)) == \
        ("alpha_0.5", "alpha_1", "alpha_m0.5", "alpha_0")  # the names served copies had, where they were exact
    assert adapter_name(0.1234567) != adapter_name(0.1234572)  # `:g` wrote both as 0.123457
    rng = random.Random(0)
    values = [rng.uniform(-3, 3) for _ in range(5000)] + [1e-7, 1 / 3, 2 / 3, 0.1 + 0.2, 1e-300]
    labels = [alpha_label(v) for v in values]
    assert len(set(labels)) == len(set(values))
    assert all(float(label.replace("m", "-")) == v for label, v in zip(labels, values))
    assert adapter_name(0.25, "qwen-valve@{alpha}") == "qwen-valve@0.25"  # a served-name template
    assert vllm.adapter_name is export.adapter_name is openai.adapter_name is adapter_name  # one function, used everywhere


def test_the_runner_never_branches_on_a_method_name():
    """methods.py owns what each length-control method does; the runner compares no string with a method's
    name (issue "A leaner house", item 3)."""
    from cotbench.methods import METHODS

    tree = ast.parse((PACKAGE / "runner.py").read_text(encoding="utf-8"))
    named = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare)
             for side in (node.left, *node.comparators)
             if isinstance(side, ast.Constant) and side.value in METHODS]
    assert not named, f"runner.py compares with a method's name on lines {named}"


def test_functions_read_at_a_glance():
    """Steps that read in order: no function in the package runs over 60 lines; a longer one is split into
    named steps (issue "A leaner house", item 5)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "functions over 60 lines: " + "; ".join(long)
