"""The deploy library's shape, checked on its source: it knows nothing of the reference app,
commands are built only in the commands layer, and only the layout knows which kind of target it is."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MODULES = sorted(DEPLOY.rglob("*.py"))
# The commands layer: the builders (deploy/commands/), the host facts script beside its parser,
# the executor, and the scripts that run on the target (the probe, the launcher of processes and jobs).
COMMANDS_LAYER = {*DEPLOY.joinpath("commands").glob("*.py"), DEPLOY / "facts.py", DEPLOY / "target.py",
                  DEPLOY / "probe.py", DEPLOY / "launch.py"}
# The programs an argument list starts with; a list of them outside the commands layer is a command
# built where it should not be.
PROGRAMS = {"apt-cache", "apt-get", "cat", "chmod", "chown", "date", "dpkg-query", "env", "find", "getent", "git", "gunicorn",
            "id", "install", "journalctl", "kill", "ln", "ls", "mkdir", "mktemp", "mv", "nft", "nginx", "openssl", "ps",
            "python3", "readlink", "rm", "service", "sh", "stat", "sudo", "supervisorctl", "supervisord",
            "systemctl", "systemd-analyze", "systemd-run", "tail", "tar", "test", "touch", "ufw", "update-rc.d", "useradd",
            "usermod"}


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def name(path: Path) -> str:
    return str(path.relative_to(DEPLOY.parent))


def module_constants(module: ast.Module) -> set[int]:
    """ids of the list literals assigned to UPPER_CASE names at module level: data, not commands."""
    return {id(node.value) for node in module.body if isinstance(node, ast.Assign)
            and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)}


def test_the_deploy_library_does_not_import_the_reference_app():
    imports = []
    for path in MODULES:
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Import):
                imports += [(name(path), a.name) for a in node.names if a.name.split(".")[0] == "app"]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "app" and not node.level:
                imports.append((name(path), node.module))
    assert imports == []


@pytest.mark.parametrize("path", [p for p in MODULES if p not in COMMANDS_LAYER], ids=name)
def test_no_module_outside_the_commands_layer_builds_an_argument_list(path):
    module = tree(path)
    data = module_constants(module)
    built = []
    for node in ast.walk(module):
        if not isinstance(node, ast.List) or id(node) in data or not node.elts:
            continue
        strings = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        first = node.elts[0]
        starts_with_program = isinstance(first, ast.Constant) and first.value in PROGRAMS
        has_options = len(node.elts) > 1 and any(s.startswith("-") and len(s) > 1 for s in strings)
        if starts_with_program or has_options:
            built.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    assert built == [], f"{name(path)} builds commands: move them to deploy/commands/"


def test_only_the_layout_asks_which_kind_of_target_it_is():
    asking = [f"{name(path)}:{node.lineno}" for path in MODULES if path.name != "layout.py"
              for node in ast.walk(tree(path)) if isinstance(node, ast.Attribute) and node.attr == "kind"]
    assert asking == []


def test_the_deploy_steps_never_ask_which_process_manager_runs():
    """The steps use the ProcessManager interface (deploy/programs.py, whose factory picks one);
    rendering picks the templates of each manager, and the command builders their commands."""
    pure = {"programs.py", "layout.py", "render.py", "validate.py", "settings.py"}
    asking = []
    for path in MODULES:
        if path in COMMANDS_LAYER or path.name in pure:
            continue
        for node in ast.walk(tree(path)):
            compared = isinstance(node, ast.Compare) and any(
                isinstance(n, ast.Attribute) and n.attr == "process_manager" for n in [node.left, *node.comparators])
            called = isinstance(node, ast.Attribute) and node.attr == "systemd_manager"
            if compared or called:
                asking.append(f"{name(path)}:{node.lineno}")
    assert asking == []
