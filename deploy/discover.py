"""`modelhost init`: what an app's checkout holds, and a commented deploy.toml made from it.

Reads files only: Python is parsed with `ast`, never imported, and no command runs (the caller
passes the paths git tracks). What it cannot know for sure it reports as "guessed" or "check".
"""
from __future__ import annotations

import ast
import os
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from deploy.requirements import FILES, RequirementsError, find_requirements, read_requirements, unpinned_message
from deploy.settings import (
    KIT_DIR,
    MADE_UP_SECRETS,
    NAME,
    PROCESS_NAME,
    RELATIVE,
    RESERVED_NAMES,
    WSGI,
    Invalid,
    toml_value,
)

# Directories that hold no app code of its own: version control, virtualenvs, caches, builds, tests.
SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "tests", "test", "venv", "env",
                          "virtualenv", "build", "dist", "htmlcov", KIT_DIR})
MODEL_EXTENSIONS = frozenset({".pkl", ".pickle", ".joblib", ".kv", ".model", ".npy", ".npz", ".onnx", ".pt", ".pth",
                              ".safetensors", ".bin", ".h5", ".keras", ".gguf", ".tflite", ".ckpt", ".msgpack"})
MODELS_LISTED = 10  # the report names this many model files, then counts the rest
FACTORY_NAMES = ("create_app", "make_app")  # the names `flask --app module` finds by itself
HEALTH_PATHS = ("/readyz", "/ready", "/healthz", "/health", "/livez", "/ping", "/status")  # best first
# .gitignore entries that look like data the app writes at run time (not venvs, builds or caches).
DATA_DIR_NAMES = frozenset({"uploads", "upload", "data", "media", "db", "database", "storage", "files", "userdata",
                            "user_data", "user-data", "attachments", "sessions", "flask_session", "logs", "log",
                            "output", "outputs", "results"})
DATABASE_FILE = re.compile(r".*\.(db|sqlite|sqlite3)")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL|DATABASE_URL|DSN$")
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# Set by the kit or the system, not by the app's [app.env]
NOT_APP_ENV = frozenset({"MODEL_PATH", "DATA_DIR", "PATH", "HOME", "PORT", "HOST", "PWD", "USER"})
# Flask CLI commands that look like a schema setup or migration, a release_command's usual job.
DATABASE_COMMAND = re.compile(r"(init|create|setup)[-_]?(the[-_]?)?(db|database|tables?|schema)|migrate|"
                              r"upgrade[-_]?db|db[-_]?(upgrade|init|create|migrate)")
# gunicorn options that take no value (the others take the next argument unless given as --opt=value).
GUNICORN_FLAGS = frozenset({"--reload", "--daemon", "-D", "--preload", "--no-sendfile", "--reuse-port", "--spew",
                            "--check-config", "--print-config", "--capture-output", "--enable-stdio-inheritance",
                            "--proxy-protocol", "--suppress-ragged-eofs", "--do-handshake-on-connect",
                            "--initgroups", "--strip-header-spaces", "-R", "--help", "-h", "-v", "--version",
                            "--disable-redirect-access-to-syslog"})


class DiscoveryError(Exception):
    """The checkout holds nothing to deploy; the message says where init looked."""


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative to the checkout, '/'-separated
    size_bytes: int  # with its sidecars
    tracked: bool | None  # None: not a git checkout
    sidecars: tuple[str, ...] = ()  # files that belong to it (gensim's x.model.vectors.npy belongs to x.model)


@dataclass
class Discovery:
    checkout: Path
    name: str  # [app] name
    name_from: str  # the directory name it was made from
    wsgi: str  # [app] wsgi
    wsgi_found: str  # how it was found ("app = Flask(...) in app.py"); "" when it is a guess
    requirements: str = ""  # the dependency file, relative to the checkout; "" when there is none
    unpinned: tuple[str, ...] = ()
    static_dir: str = ""  # [nginx] static_dir; "" when there is no static folder
    instance_path: str = "instance"  # [app] instance_path
    pythonpath: tuple[str, ...] = ()  # [app] pythonpath: ("src",) for a src layout
    instance_used: str = ""  # where the code uses its instance folder; "" when nowhere
    models: tuple[ModelFile, ...] = ()
    model_path: str = ""  # [model] path proposed: models git does not track
    health_path: str = ""  # [deploy] health_path
    health_found: str = ""  # where the route is
    secrets: tuple[str, ...] = ("FLASK_SECRET_KEY",)
    secrets_found: str = ""  # what reads them
    release_commands: tuple[str, ...] = ()  # candidates, written commented
    data_dirs: tuple[str, ...] = ()  # .gitignore entries that look like run-time data, written commented
    data_files: tuple[str, ...] = ()  # [app] shared_files: database files .gitignore lists
    processes: tuple[tuple[str, str], ...] = ()  # [app.processes]: the Procfile's other lines (name, command)
    notes: list[str] = field(default_factory=list)  # "guessed: ..." and "check: ..." lines


@dataclass(frozen=True)
class Module:
    path: str  # the .py file, relative to the checkout
    name: str  # import name from the checkout top (from src/ in a src layout); "" when not importable
    tree: ast.Module
    src: bool  # under src/ of a src layout, so not importable from the checkout top


@dataclass(frozen=True)
class Entry:
    wsgi: str
    how: str
    module: str  # the import name of the module that defines it
    rank: tuple  # smaller is better
    problem: str = ""  # why it may not work, for a "check:" note


# ---- the whole inspection ----------------------------------------------------------------------

def discover(checkout: Path, tracked: set[str] | None = None) -> Discovery:
    """What the app checkout at `checkout` holds; tracked: the paths git tracks, None when not a git checkout."""
    checkout = Path(checkout)
    files = checkout_files(checkout)
    modules = parse_modules(checkout, files)
    if not modules:
        raise DiscoveryError(f"no Python files in {checkout} (venvs, tests/ and hidden directories skipped): run "
                             "modelhost init at the top of the Flask app's checkout")
    notes: list[str] = []
    entry = choose_entry(procfile_entries(checkout, modules, notes) + code_entries(modules), notes)
    src = entry is not None and in_src_layout(entry)
    wsgi = entry.wsgi if entry else "app:app"
    instance_path = "src/instance" if src else "instance"
    models = find_models(checkout, files, tracked)
    model_path = proposed_model_path(models, files, tracked, notes)
    requirements, unpinned = dependency_file(checkout, notes)
    static = static_dir(checkout, *flask_call_for(entry, modules), notes)
    data_dirs, data_files = gitignored_data(checkout, (instance_path, model_path), notes)
    health_path, health_found = health_route(modules, notes)
    secrets, secrets_found = secret_names(modules, notes)
    if static and tracked is not None and not any(p.startswith(static + "/") for p in tracked):
        notes.append(f"check: git tracks no file in {static}/, so a release will not have it "
                     "(commit it, or build it in release_command)")
    if tracked is None:
        notes.append(f"check: {checkout} is not a git checkout, and fab deploy ships a git revision "
                     "(git init && git add -A && git commit -m 'first')")
    return Discovery(
        checkout=checkout, name=app_name(checkout.resolve().name), name_from=checkout.resolve().name,
        wsgi=wsgi, wsgi_found=entry.how if entry else "", pythonpath=("src",) if src else (),
        requirements=requirements, unpinned=unpinned, static_dir=static,
        instance_path=instance_path, instance_used=instance_use(modules), models=models, model_path=model_path,
        health_path=health_path, health_found=health_found, secrets=secrets, secrets_found=secrets_found,
        release_commands=release_commands(modules, wsgi, files, checkout, notes),
        data_dirs=data_dirs, data_files=data_files,
        processes=procfile_processes(checkout, notes), notes=notes)


def checkout_files(checkout: Path) -> list[str]:
    """Every file of the checkout, '/'-separated and sorted, without skipped directories."""
    found = []
    for directory, dirs, names in os.walk(checkout):
        dirs[:] = sorted(d for d in dirs if not skipped_dir(Path(directory) / d))
        relative = Path(directory).relative_to(checkout)
        found += [(relative / name).as_posix() for name in sorted(names)]
    return found


def skipped_dir(path: Path) -> bool:
    return (path.name in SKIPPED_DIRS or path.name.startswith(".") or path.name.endswith(".egg-info")
            or (path / "pyvenv.cfg").is_file())


def parse_modules(checkout: Path, files: list[str]) -> list[Module]:
    """The checkout's Python files that parse; a src/ without __init__.py is a src layout."""
    src_layout = "src/__init__.py" not in files
    modules = []
    for path in files:
        if not path.endswith(".py"):
            continue
        try:
            tree = ast.parse((checkout / path).read_text(encoding="utf-8"), path)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        src = src_layout and path.startswith("src/")
        modules.append(Module(path, module_name(path.removeprefix("src/") if src else path), tree, src))
    return modules


def module_name(path: str) -> str:
    """The dotted import name of a .py file ("pkg/__init__.py" -> "pkg"); "" when it is not importable."""
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else ""


def modules_by_name(modules: list[Module]) -> dict[str, Module]:
    return {m.name: m for m in modules if m.name}


def app_name(directory: str) -> str:
    """An [app] name made from a directory name ("My_App" -> "my-app")."""
    name = re.sub(r"[^a-z0-9]+", "-", directory.lower()).strip("-")[:32].rstrip("-")
    for candidate in (name, f"app-{name}"[:32].rstrip("-")):
        if passes(NAME, candidate):
            return candidate
    return "app"


def passes(check, value) -> bool:
    try:
        check(value)
    except Invalid:
        return False
    return True


# ---- the WSGI entry ----------------------------------------------------------------------------

def choose_entry(entries: list[Entry], notes: list[str]) -> Entry | None:
    """The best entry, with notes for what may not work; None when nothing was found."""
    if not entries:
        notes.append('check: no Flask app found (no Procfile web: gunicorn line, no create_app(), no '
                     '`app = Flask(...)`): [app] wsgi = "app:app" is a placeholder, set it to your module:name')
        return None
    entry = min(entries, key=lambda e: e.rank)
    if entry.problem:
        notes.append(f"check: {entry.problem}")
    return entry


def in_src_layout(entry: Entry) -> bool:
    return entry.rank[0] is True


def procfile_entries(checkout: Path, modules: list[Module], notes: list[str]) -> list[Entry]:
    """The app a Procfile's web: line gives gunicorn, when [app] wsgi can hold it."""
    procfile = checkout / "Procfile"
    if not procfile.is_file():
        return []
    command = next((m.group(1) for m in (re.match(r"\s*web\s*:\s*(.*)", line)
                                         for line in procfile.read_text(encoding="utf-8").splitlines()) if m), None)
    if command is None:
        return []
    try:
        words = shlex.split(command)
    except ValueError as exc:
        notes.append(f"check: cannot read the Procfile's web: line ({exc}); it is ignored")
        return []
    argument, options = gunicorn_app_argument(words)
    if argument is None:
        notes.append("found: the Procfile's web: line does not name an app for gunicorn"
                     f" ({command}); modelhost runs gunicorn itself, so it is ignored")
        return []
    for option in ("--chdir", "--pythonpath"):
        if option in options:
            notes.append(f"check: the Procfile runs gunicorn with {option}; modelhost runs it from the checkout top "
                         "([app] pythonpath puts directories of it on the app's path)")
    if not passes(WSGI, argument):
        notes.append(f"check: the Procfile runs gunicorn {argument}, which [app] wsgi cannot hold (module:name or "
                     "module:factory() without arguments): add a wsgi.py with `app = <the call>` and set "
                     'wsgi = "wsgi:app"; until then the guess below')
        return []
    module = argument.split(":")[0]
    known = modules_by_name(modules).get(module)
    if known is None:
        notes.append(f"check: the Procfile names {argument}, but there is no module {module} in the checkout")
    return [Entry(argument, "the Procfile's web: line", module, (bool(known and known.src), False, 0, 0, ""))]


def procfile_processes(checkout: Path, notes: list[str]) -> tuple[tuple[str, str], ...]:
    """The Procfile's lines other than web: (gunicorn, which the kit runs) and release: (a release command),
    as [app.processes] entries."""
    procfile = checkout / "Procfile"
    if not procfile.is_file():
        return ()
    found = []
    for line in procfile.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"\s*([A-Za-z0-9_-]+)\s*:\s*(\S.*)$", line)
        if not match or match.group(1) == "web":
            continue
        given, command = match.groups()
        if given == "release":
            notes.append(f"check: the Procfile's release: line runs {command!r}; modelhost's is [deploy] "
                         "release_command (it runs in each new release before it gets traffic)")
            continue
        name = given.lower().replace("_", "-")
        if not PROCESS_NAME.fullmatch(name) or name in RESERVED_NAMES:
            notes.append(f"check: the Procfile's {given}: line is not written to [app.processes]: a process name is "
                         f"2-24 lowercase letters, digits and -, not {', '.join(RESERVED_NAMES)}; add it under "
                         "another name")
            continue
        if "$PORT" in command:
            notes.append(f"check: the Procfile's {given}: line uses $PORT, which modelhost does not set for processes")
        found.append((name, command.strip()))
    return tuple(found)


def gunicorn_app_argument(words: list[str]) -> tuple[str | None, list[str]]:
    """The first argument after `gunicorn` that is not an option or an option's value, and the options seen."""
    at = next((i for i, word in enumerate(words) if posixpath.basename(word) == "gunicorn"), None)
    if at is None:
        return None, []
    options, rest = [], iter(words[at + 1:])
    for word in rest:
        if word in ("&&", "||", ";", "|"):
            break
        if not word.startswith("-"):
            return word, options
        options.append(word.split("=")[0])
        attached = "=" in word or (not word.startswith("--") and len(word) > 2)  # --workers=4, -w4
        if word not in GUNICORN_FLAGS and not attached:
            next(rest, None)
    return None, options


def code_entries(modules: list[Module]) -> list[Entry]:
    """Factories (create_app, or functions returning Flask(...)) and module-level `name = Flask(...)`."""
    entries = []
    for module in modules:
        if not module.name:
            continue
        depth = module.name.count(".") + 1
        for node in module.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    node.name in FACTORY_NAMES or returns_flask(node)):
                problem = (f"{node.name}() in {module.path} takes arguments without defaults, but gunicorn calls "
                           'it with none: add a wsgi.py with `app = create_app(...)` and set wsgi = "wsgi:app"'
                           if needs_arguments(node) else "")
                kind = 0 if node.name in FACTORY_NAMES else 1
                entries.append(Entry(f"{module.name}:{node.name}()", f"{node.name}() in {module.path}", module.name,
                                     (module.src, bool(problem), 1, depth, kind, module.path), problem))
            elif isinstance(node, ast.ImportFrom):
                entries += [Entry(f"{module.name}:{bound}()", f"{bound}() imported in {module.path}", module.name,
                                  (module.src, False, 1, depth, 2, module.path))
                            for bound in (a.asname or a.name for a in node.names) if bound in FACTORY_NAMES]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and builds_app(node.value):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                how = ast.unparse(node.value.func)
                entries += [Entry(f"{module.name}:{t.id}", f"{t.id} = {how}(...) in {module.path}", module.name,
                                  (module.src, False, 2, depth, 0, module.path))
                            for t in targets if isinstance(t, ast.Name)]
    return entries


def is_flask_call(node) -> bool:
    """Flask(...) or flask.Flask(...)."""
    return isinstance(node, ast.Call) and called_name(node) == "Flask"


def builds_app(node) -> bool:
    """Flask(...) or a factory's call (create_app(...))."""
    return isinstance(node, ast.Call) and called_name(node) in ("Flask", *FACTORY_NAMES)


def called_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def returns_flask(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether a function returns Flask(...), directly or through a name it assigned."""
    built = {t.id for node in ast.walk(function) if isinstance(node, ast.Assign) and is_flask_call(node.value)
             for t in node.targets if isinstance(t, ast.Name)}
    return any(isinstance(node, ast.Return) and (is_flask_call(node.value) or (
        isinstance(node.value, ast.Name) and node.value.id in built)) for node in ast.walk(function))


def needs_arguments(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    args = function.args
    positional = args.posonlyargs + args.args
    return len(positional) > len(args.defaults) or any(d is None for d in args.kw_defaults)


def flask_call_for(entry: Entry | None, modules: list[Module]) -> tuple[Module | None, ast.Call | None]:
    """The Flask(...) call behind an entry: in its module, a module it imports from, or its package."""
    by_name = modules_by_name(modules)
    module = by_name.get(entry.module) if entry else None
    if module is None:
        return None, None
    imported = [by_name[n] for n in (imported_module(module, node) for node in ast.walk(module.tree)
                                     if isinstance(node, ast.ImportFrom)) if n in by_name]
    package = [m for m in modules if m.name.split(".")[0] == module.name.split(".")[0]]
    for candidate in (module, *imported, *package):
        call = next((n for n in ast.walk(candidate.tree) if is_flask_call(n)), None)
        if call is not None:
            return candidate, call
    return None, None


def imported_module(module: Module, node: ast.ImportFrom) -> str:
    """The import name an `from x import y` reads, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if not module.path.endswith("__init__.py"):
        package = package[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


# ---- static and instance folders ---------------------------------------------------------------

def static_dir(checkout: Path, module: Module | None, call: ast.Call | None, notes: list[str]) -> str:
    """Flask's static folder beside the module that makes the app, if it is there."""
    if module is None or call is None:
        return ""
    keywords = {k.arg: k.value for k in call.keywords if k.arg}
    url_path = keywords.get("static_url_path")
    if isinstance(url_path, ast.Constant) and url_path.value not in ("/static", None):
        notes.append(f"check: the app serves static files at {url_path.value} (static_url_path in {module.path}), "
                     "not /static: [nginx] static_dir is left out, so the app serves them")
        return ""
    folder = keywords.get("static_folder", ast.Constant("static"))
    if not isinstance(folder, ast.Constant) or not isinstance(folder.value, (str, type(None))):
        notes.append(f"check: static_folder in {module.path} is computed: set [nginx] static_dir yourself")
        return ""
    if folder.value is None:
        return ""
    root = posixpath.dirname(module.path)
    path = posixpath.normpath(posixpath.join(root, folder.value))
    return path if passes(RELATIVE, path) and path != "." and (checkout / path).is_dir() else ""


def instance_use(modules: list[Module]) -> str:
    """Where the code uses Flask's instance folder ("" when nowhere)."""
    for module in modules:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Attribute) and node.attr in ("instance_path", "open_instance_resource") \
                    and isinstance(node.value, ast.Name) and node.value.id.endswith("app"):  # app., current_app.
                return f"{ast.unparse(node)} in {module.path}"
            if isinstance(node, ast.keyword) and node.arg == "instance_relative_config":
                return f"instance_relative_config in {module.path}"
    return ""


# ---- dependencies ------------------------------------------------------------------------------

def dependency_file(checkout: Path, notes: list[str]) -> tuple[str, tuple[str, ...]]:
    """The dependency file (relative) and what it leaves unpinned; problems go to notes."""
    try:
        requirements = read_requirements(find_requirements(checkout))
    except RequirementsError as exc:
        notes.append(f"check: {exc}")
        return "", ()
    message = unpinned_message(requirements)
    if message:
        notes.append(f"check: {message}")
    return requirements.file.relative_to(checkout).as_posix(), requirements.unpinned


# ---- models ------------------------------------------------------------------------------------

def find_models(checkout: Path, files: list[str], tracked: set[str] | None) -> tuple[ModelFile, ...]:
    """Model files by extension, each with its sidecars, size and whether git tracks it."""
    candidates = [f for f in files if posixpath.splitext(f)[1].lower() in MODEL_EXTENSIONS]
    known = set(candidates)
    # x.model.vectors.npy belongs to x.model: the shortest model file whose name it extends.
    sidecars = {f: owner for f in candidates for owner in [
        next((f[:i] for i in range(len(f)) if f[i] == "." and f[:i] in known and "/" not in f[i:]), None)] if owner}
    models = []
    for path in candidates:
        if path in sidecars:
            continue
        own = tuple(f for f in candidates if sidecars.get(f) == path)
        size = sum((checkout / f).stat().st_size for f in (path, *own))
        models.append(ModelFile(path, size, None if tracked is None else path in tracked, own))
    return tuple(models)


def proposed_model_path(models: tuple[ModelFile, ...], files: list[str], tracked: set[str] | None,
                        notes: list[str]) -> str:
    """[model] path for the models git does not track: one file, or the folder holding them."""
    untracked = [m for m in models if m.tracked is not True]
    if not untracked:
        return ""
    folders: dict[str, list[ModelFile]] = {}
    for model in untracked:
        folders.setdefault(posixpath.dirname(model.path), []).append(model)
    folder = max(folders, key=lambda f: (sum(m.size_bytes for m in folders[f]), f))
    if len(folders) > 1:
        others = ", ".join(f or "the top" for f in sorted(folders) if f != folder)
        notes.append(f"check: models outside git in more than one folder ({others} too): [model] path takes one file "
                     f"or folder, so it names the largest ({folder or 'the top'})")
    group = folders[folder]
    if len(group) == 1 and not group[0].sidecars:
        return group[0].path
    code = [f for f in files if f.startswith(folder + "/") and (f.endswith(".py") or f in (tracked or ()))]
    if not folder or code:
        notes.append(f"check: {len(group)} model files outside git in {folder or 'the top of the checkout'}, beside "
                     "code: move them into a folder of their own (e.g. models/) and set [model] path to it")
        return ""
    return folder


# ---- routes, secrets, commands -----------------------------------------------------------------

def health_route(modules: list[Module], notes: list[str]) -> tuple[str, str]:
    """The best health-looking GET route and where it is; ("", "") when there is none."""
    routes = [(path, module.path) for module in modules for path in route_paths(module.tree)]
    healthy = sorted((r for r in routes if health_rank(r[0]) is not None), key=lambda r: (health_rank(r[0]), r))
    if not healthy:
        return "", ""
    prefixed = next((m.path for m in modules for n in ast.walk(m.tree) if isinstance(n, ast.Call)
                     and called_name(n) == "register_blueprint" and any(k.arg == "url_prefix" for k in n.keywords)),
                    None)
    if prefixed:
        notes.append(f"check: {prefixed} registers blueprints with a url_prefix: [deploy] health_path = "
                     f"{toml_value(healthy[0][0])} must be the route's full path")
    return healthy[0]


def health_rank(path: str) -> int | None:
    if "<" in path:
        return None
    if path in HEALTH_PATHS[:4]:
        return HEALTH_PATHS.index(path)
    if "health" in path:
        return 4
    return 5 + HEALTH_PATHS.index(path) if path in HEALTH_PATHS else None


def route_paths(tree: ast.Module) -> list[str]:
    """The GET paths of a module's routes (@x.route, @x.get, x.add_url_rule), with literal blueprint prefixes."""
    prefixes = {t.id: k.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call) and called_name(node.value) == "Blueprint"
                for k in node.value.keywords if k.arg == "url_prefix" and isinstance(k.value, ast.Constant)
                for t in node.targets if isinstance(t, ast.Name)}
    calls = [d for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
             for d in node.decorator_list if isinstance(d, ast.Call) and called_name(d) in ("route", "get")]
    calls += [n for n in ast.walk(tree) if isinstance(n, ast.Call) and called_name(n) == "add_url_rule"]
    paths = []
    for call in calls:
        if not (call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
            continue
        methods = next((k.value for k in call.keywords if k.arg == "methods"), None)
        if isinstance(methods, (ast.List, ast.Tuple, ast.Set)) and "GET" not in [
                getattr(e, "value", "") for e in methods.elts]:
            continue
        owner = call.func.value if isinstance(call.func, ast.Attribute) else None
        prefix = prefixes.get(owner.id, "") if isinstance(owner, ast.Name) else ""
        paths.append((prefix or "").rstrip("/") + call.args[0].value)
    return paths


def secret_names(modules: list[Module], notes: list[str]) -> tuple[tuple[str, ...], str]:
    """[app] secrets from what the code reads, and what reads them. A secret-looking name the code
    only reads with a default (os.getenv("X", ...), os.environ.get("X") or ...) is left out: the
    app does without it, and a deploy would stop on it until it had a value. A signing key is kept
    (a deploy makes one up, settings.MADE_UP_SECRETS): a default in the code is the same everywhere."""
    prefixed = next((m.path for m in modules for n in ast.walk(m.tree)
                     if isinstance(n, ast.Attribute) and n.attr == "from_prefixed_env"), "")
    reads = [read for m in modules for read in environment_reads(m.tree)]
    read = list(dict.fromkeys(name for name, _ in reads))
    needed = {name for name, defaulted in reads if not defaulted}
    secretish = [n for n in read if SECRET_NAME.search(n) and n != "FLASK_SECRET_KEY"]
    defaulted = [n for n in secretish if n not in needed and n not in MADE_UP_SECRETS]
    secret = [n for n in secretish if n not in defaulted]
    other = [n for n in read if n not in secretish and n not in NOT_APP_ENV and n != "FLASK_SECRET_KEY"]
    written = next((m.path for m in modules if sets_secret_key(m.tree)), "")
    if written:
        notes.append(f"check: {written} sets SECRET_KEY to a literal: on a host read it from the environment "
                     "(app.config.from_prefixed_env() reads FLASK_SECRET_KEY)")
    if other:
        notes.append(f"check: the app reads {', '.join(other)} from the environment: give "
                     f"{'it' if len(other) == 1 else 'them'} in [app.env] (or [app] secrets if secret)")
    if defaulted:
        notes.append(f"check: the code has a default for {', '.join(defaulted)}, so [app] secrets leaves "
                     f"{'it' if len(defaulted) == 1 else 'them'} out; name {'it' if len(defaulted) == 1 else 'one'} "
                     "there (and give its value once, NAME=... fab deploy) for a host to have its own")
    found = []
    if prefixed:
        found.append(f"app.config.from_prefixed_env() in {prefixed} reads FLASK_SECRET_KEY as SECRET_KEY")
    elif "FLASK_SECRET_KEY" in read:
        found.append("the code reads FLASK_SECRET_KEY from the environment")
    if secret:
        found.append(f"the code reads {', '.join(secret)} from the environment")
    names = (("FLASK_SECRET_KEY",) if prefixed or "FLASK_SECRET_KEY" in read or not secret else ()) + tuple(secret)
    return names, "; ".join(found)


def environment_reads(tree: ast.Module) -> list[tuple[str, bool]]:
    """Names read as os.environ["X"], os.environ.get("X") or os.getenv("X"), in the order of the
    source, each with whether that read has a default: a second argument, or an `or` after it."""
    alternatives = {id(value) for node in ast.walk(tree) if isinstance(node, ast.BoolOp)
                    and isinstance(node.op, ast.Or) for value in node.values[:-1]}
    reads = []
    for node in ast.walk(tree):
        argument, default = None, False
        if isinstance(node, ast.Subscript) and is_environ(node.value):
            argument = node.slice
        elif isinstance(node, ast.Call) and node.args and (
                called_name(node) == "getenv"
                or (isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "setdefault")
                    and is_environ(node.func.value))):
            argument = node.args[0]
            default = len(node.args) > 1 or any(k.arg == "default" for k in node.keywords)
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str) \
                and ENV_NAME.fullmatch(argument.value):
            reads.append(((node.lineno, node.col_offset), argument.value, default or id(node) in alternatives))
    return [(name, defaulted) for _, name, defaulted in sorted(reads)]


def is_environ(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ")


def sets_secret_key(tree: ast.Module) -> bool:
    """Whether the code gives SECRET_KEY a string literal (config["SECRET_KEY"] = , SECRET_KEY= , secret_key = )."""
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "SECRET_KEY" and is_string(node.value):
            return True
        if isinstance(node, ast.Assign) and is_string(node.value):
            for target in node.targets:
                key = target.slice if isinstance(target, ast.Subscript) else None
                if (isinstance(target, ast.Name) and target.id == "SECRET_KEY") or (
                        isinstance(target, ast.Attribute) and target.attr == "secret_key") or (
                        isinstance(key, ast.Constant) and key.value == "SECRET_KEY"):
                    return True
    return False


def is_string(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def release_commands(modules: list[Module], wsgi: str, files: list[str], checkout: Path,
                     notes: list[str]) -> tuple[str, ...]:
    """`flask --app ... <command>` for CLI commands that look like a schema setup or migration."""
    registered = {a.id for m in modules for n in ast.walk(m.tree) if isinstance(n, ast.Call)
                  and called_name(n) == "add_command" for a in n.args if isinstance(a, ast.Name)}
    names = [name for m in modules for name in cli_commands(m.tree, registered) if DATABASE_COMMAND.fullmatch(name)]
    if any(isinstance(n, (ast.Import, ast.ImportFrom)) and any(
            (getattr(n, "module", None) or a.name).startswith("flask_migrate") for a in n.names)
           for m in modules for n in ast.walk(m.tree)):
        names.append("db upgrade")  # Flask-Migrate's
    if not names:
        return ()
    module, _, attribute = wsgi.partition(":")
    app = module if attribute in ("app", "application", *(f"{n}()" for n in FACTORY_NAMES)) else shlex.quote(wsgi)
    dropping = [f for f in files if f.endswith(".sql") and re.search(
        r"\bdrop\s+table\b", (checkout / f).read_text(encoding="utf-8", errors="replace"), re.IGNORECASE)]
    if dropping:
        notes.append(f"check: {', '.join(dropping)} drops tables: a release_command that runs it erases the data "
                     "at every deploy; use CREATE TABLE IF NOT EXISTS")
    return tuple(dict.fromkeys(f"flask --app {app} {name}" for name in names))


def cli_commands(tree: ast.Module, registered: set[str]) -> list[str]:
    """Names of Flask CLI commands: @x.cli.command(...), and @click.command(...) functions added with add_command."""
    names = []
    for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for decorator in function.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if not (isinstance(target, ast.Attribute) and target.attr == "command"
                    or isinstance(target, ast.Name) and target.id == "command"):
                continue
            on_cli = isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute) \
                and target.value.attr == "cli"
            if not (on_cli or function.name in registered):
                continue
            given = [a.value for a in (call.args if call else []) if is_string(a)]
            given += [k.value.value for k in (call.keywords if call else []) if k.arg == "name" and is_string(k.value)]
            names.append(given[0] if given else click_name(function.name))
    return names


def click_name(function: str) -> str:
    """The name click (8.2 on) gives a command from its function's name (init_db_command -> init-db)."""
    name = function.lower().replace("_", "-")
    left, dash, suffix = name.rpartition("-")
    return left if dash and suffix in ("command", "cmd", "group", "grp") else name


# ---- run-time data -----------------------------------------------------------------------------

def gitignored_data(checkout: Path, kept: tuple[str, ...], notes: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What .gitignore lists that looks like data the app writes, not already kept: (directories:
    uploads, data, ...; database files: app.db, ...)."""
    gitignore = checkout / ".gitignore"
    if not gitignore.is_file():
        return (), ()
    dirs, files = [], []
    for line in gitignore.read_text(encoding="utf-8", errors="replace").splitlines():
        entry = line.strip()
        if not entry or entry.startswith(("#", "!")):
            continue
        database = DATABASE_FILE.fullmatch(entry.lstrip("/")) is not None
        path = entry.lstrip("/") if database else re.sub(r"(/\*\*?)?/?$", "", entry.removeprefix("**/").lstrip("/"))
        if any(k and (path == k or path.startswith(k + "/") or k.startswith(path + "/")) for k in kept):
            continue
        if database and (re.search(r"[*?\[\\]", path) or not passes(RELATIVE, path)):
            notes.append(f"check: .gitignore lists {entry}: a database file in the release directory starts anew "
                         "with each release; name it in [app] shared_files, or keep it in the instance folder")
        elif database:
            files.append(path)
        elif (not re.search(r"[*?\[\\]", path) and posixpath.basename(path).lower() in DATA_DIR_NAMES
              and passes(RELATIVE, path) and path.split("/")[0] != KIT_DIR):
            dirs.append(path)
    return tuple(dict.fromkeys(dirs)), tuple(dict.fromkeys(files))


# ---- what init writes and says -----------------------------------------------------------------

def deploy_toml(d: Discovery) -> str:
    """A commented deploy.toml for what was found; it passes deploy.settings.check_settings."""
    lines = [
        f"# modelhost's settings for {d.name}, written by `modelhost init` from what it found in the checkout.",
        "# Settings not written here have their defaults (README: Settings); lines marked CHECK need your eye.",
        "",
        "[app]",
        "# From the checkout's directory name: program, unit, socket and directory names come from it.",
        f"name = {toml_value(d.name)}",
        f"# What gunicorn serves: {d.wsgi_found or 'CHECK, a guess'}.",
        f"wsgi = {toml_value(d.wsgi)}",
        *([f"# A src layout: {', '.join(p + '/' for p in d.pythonpath)} first on the app's Python path.",
           f"pythonpath = {toml_value(list(d.pythonpath))}"] if d.pythonpath else []),
        "# Secrets are named here, never given: their values live in an env file on the host (mode 0600).",
    ]
    if "FLASK_SECRET_KEY" in d.secrets:
        lines.append("# Flask's app.config.from_prefixed_env() reads FLASK_SECRET_KEY as SECRET_KEY.")
    lines.append(f"secrets = {toml_value(list(d.secrets))}")
    now = f"now {d.requirements}" if d.requirements else "CHECK: none usable, see init's report"
    lines += [f"# The dependency file: \"\" takes the first of {', '.join(FILES)} ({now}).", 'requirements = ""']
    if d.instance_path != "instance":
        lines += ["# Flask's instance folder, kept across releases.", f"instance_path = {toml_value(d.instance_path)}"]
    if d.data_files:
        lines += ["# .gitignore lists these database files: the app writes them in its release directory, so they",
                  "# are kept in the data directory instead, the same for every release.",
                  f"shared_files = {toml_value(list(d.data_files))}"]
    if d.data_dirs:
        lines += ["# .gitignore lists these, which look like data the app writes: uncomment if it does, so they are",
                  "# kept across releases (a release directory starts with only what git tracks).",
                  f"# shared_paths = {toml_value(list(d.data_dirs))}"]
    if d.processes:
        lines += ["", "[app.processes]",
                  "# From the Procfile: each runs in the live release beside gunicorn, as the app, started again on",
                  '# the new release after each deploy. More copies: name = {command = "...", count = 2}.']
        lines += [f"{name} = {toml_value(command)}" for name, command in d.processes]
    lines += ["", "[model]"]
    if d.model_path:
        lines += [f"# Not in git: modelhost stores {d.model_path} on the target once, links it into every release at",
                  "# the same relative path and sets MODEL_PATH to it.",
                  f"path = {toml_value(d.model_path)}"]
    else:
        lines += ['# A model file or folder that is not in git (one in git ships with the code), e.g.:',
                  '# path = "models/model.pkl"']
    lines += ["", "[nginx]", "# On a host: the DNS name(s) this site answers to.",
              '# server_names = ["app.example.com"]']
    if d.static_dir:
        lines += ["# Flask's static folder: nginx serves it at /static/ without troubling the app.",
                  f"static_dir = {toml_value(d.static_dir)}"]
    lines += ["", "[deploy]"]
    if d.health_path:
        lines.append(f"# A GET that answers 200 once the app is ready (a route in {d.health_found}).")
    else:
        lines.append('# No health route found: "" counts the app ready once GET / answers below 500.')
    lines.append(f"health_path = {toml_value(d.health_path)}")
    lines += ["# A command run in each new release before it gets traffic. It runs at EVERY deploy, so it must be",
              "# safe to repeat (CREATE TABLE IF NOT EXISTS, not DROP TABLE); if it fails the old release keeps "
              "serving."]
    if not d.release_commands:
        lines.append("# For example (no schema or migration command found):")
    examples = d.release_commands or (f"flask --app {d.wsgi.split(':')[0]} init-db",)
    lines += [f"# release_command = {toml_value(c)}" for c in examples]
    return "\n".join(lines) + "\n"


def report(d: Discovery) -> list[str]:
    """What init found, guessed and wants checked, one line each ("found: ...", "guessed: ...", "check: ...")."""
    lines = [f"found: name {toml_value(d.name)} from the directory {d.name_from}" if d.name == d.name_from
             else f"guessed: name {toml_value(d.name)} from the directory {d.name_from!r}"]
    if d.wsgi_found:
        lines.append(f"found: wsgi {toml_value(d.wsgi)}: {d.wsgi_found}")
    if d.pythonpath:
        lines.append(f"found: a src layout: [app] pythonpath = {toml_value(list(d.pythonpath))} puts it on the app's "
                     "path (gunicorn, processes, jobs and commands run from the checkout top)")
    if d.requirements:
        lines.append(f"found: dependencies in {d.requirements}; modelhost adds gunicorn if they lack it")
    if d.static_dir:
        lines.append(f"found: static files in {d.static_dir}/: [nginx] static_dir, served by nginx")
    for name, command in d.processes:
        lines.append(f"found: the Procfile's {name}: {command}: [app.processes], run beside gunicorn")
    if d.instance_used:
        lines.append(f"found: the app uses its instance folder ({d.instance_used}): {d.instance_path}/ is kept "
                     "across releases")
    for model in d.models[:MODELS_LISTED]:
        size = size_text(model.size_bytes)
        if model.tracked:
            lines.append(f"found: model {model.path} ({size}), tracked by git: ships with the code in every release")
        else:
            where = ("[model] path: modelhost links it into every release at the same relative path and sets "
                     "MODEL_PATH" if d.model_path and (model.path == d.model_path
                                                       or model.path.startswith(d.model_path + "/"))
                     else "not proposed as [model] path")
            lines.append(f"found: model {model.path} ({size}), not in git: {where}")
    if len(d.models) > MODELS_LISTED:
        rest = d.models[MODELS_LISTED:]
        lines.append(f"found: {len(rest)} more model files ({size_text(sum(m.size_bytes for m in rest))})")
    if d.health_path:
        lines.append(f"found: health route {d.health_path} in {d.health_found}: [deploy] health_path")
    else:
        lines.append(f"guessed: no health route ({', '.join(HEALTH_PATHS)}): the deploy counts the app ready once "
                     "GET / answers below 500")
    if d.secrets_found:
        lines.append(f"found: {d.secrets_found}: [app] secrets = {toml_value(list(d.secrets))}")
    else:
        lines.append(f"guessed: no code reads a secret from the environment: [app] secrets = "
                     f"{toml_value(list(d.secrets))}, the default (app.config.from_prefixed_env() reads it)")
    for command in d.release_commands:
        lines.append(f"check: release_command = {toml_value(command)} is written commented: uncomment it if it is "
                     "safe to run again at every deploy")
    if d.data_files:
        lines.append(f"guessed: .gitignore lists {', '.join(d.data_files)}: databases the app writes beside its code, "
                     "kept across releases ([app] shared_files)")
    if d.data_dirs:
        lines.append(f"check: .gitignore lists {', '.join(d.data_dirs)}: if the app writes there, uncomment "
                     "shared_paths in deploy.toml so the files are kept across releases")
    return lines + d.notes


def size_text(size_bytes: int) -> str:
    """A size for people: "512 bytes", "12 KB", "3.4 MB"."""
    if size_bytes < 1024:
        return f"{size_bytes} bytes"
    if size_bytes < 1024 * 1024:
        return f"{size_bytes // 1024} KB"
    return f"{size_bytes / (1024 * 1024):.1f} MB"
