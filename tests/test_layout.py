"""The shape of the code: imports go one way (no cycle inside ft/ or launch/, function-level imports included), the
launcher stays torch-free, every command in the README answers --help, and ruff passes."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGES = ("ft", "launch")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports anywhere in its body (top level or inside functions)."""
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import ft.eval.scoring` -> the module itself, else its package
                    t = t.rpartition(".")[0]
                if t and t != name and t not in ("ft", "launch"):
                    edges.add(t)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_ft_or_launch():
    graph = import_graph(REPO)
    assert {"ft.train", "ft.eval.scoring", "launch.submit"} <= set(graph)
    assert "ft.eval.generation" in graph["ft.eval.scoring"]  # function-level and top-level imports are both seen
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_detector_finds_a_hidden_cycle(tmp_path):
    # negative control: a cycle hidden behind a function-level import, as ft/evaluate.py <-> ft/prefix_cache.py was
    pkg = tmp_path / "ft"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from ft.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from ft.a import f\n    return f\n")
    (pkg / "c.py").write_text("from . import a\n")
    cycle = find_cycle(import_graph(tmp_path, ("ft",)))
    assert cycle is not None and set(cycle) == {"ft.a", "ft.b"}


def test_launcher_and_cli_import_no_torch():
    code = ("import sys, ft.cli, ft.config, ft.constants, ft.metrics, launch.submit, launch.local; "
            "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def readme_commands() -> list[list[str]]:
    """Every distinct command the README shows in its code blocks, as argv without its arguments."""
    text = (REPO / "README.md").read_text()
    found = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("sqlft "):
                words = line.split()
                cmd = words[:3] if len(words) > 2 and words[1] == "data" and not words[2].startswith("-") else words[:2]
            elif line.startswith("python -m "):
                cmd = line.split()[:3]
            elif line.startswith("python launch/") or line.startswith("python bench/"):
                cmd = line.split()[:2]
            elif line.startswith("accelerate launch"):
                cmd = [w for w in line.split() if w.endswith(".py")][:1]
                cmd = ["python", *cmd] if cmd else []
            else:
                continue
            if cmd and cmd not in found:
                found.append(cmd)
    return found


def test_every_command_in_the_readme_answers_help():
    commands = readme_commands()
    names = {" ".join(c) for c in commands}
    must = {"sqlft train", "sqlft eval", "sqlft generate", "sqlft merge", "sqlft report", "sqlft submit"}
    assert must <= names, names
    sqlft = Path(sys.executable).with_name("sqlft")
    for cmd in commands:
        argv = ([str(sqlft)] if cmd[0] == "sqlft" else [sys.executable]) + cmd[1:] + ["--help"]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0 and "usage" in (proc.stdout + proc.stderr).lower(), (cmd, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (cmd, proc.stderr[-2000:])


def test_ruff_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: it is part of the dev extra (pip install -e .[dev])")
    proc = subprocess.run([ruff, "check", "."], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
