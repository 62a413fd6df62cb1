"""The app's dependency file, made into the one requirements file pip installs on the target.

The target sees only this text, so includes (-r, -c) are inlined; the app's own directory ('.') is
left out, as the release directory is on gunicorn's path already; gunicorn is added when the app
does not ask for it. Reads files only, with no third-party parser (`packaging` is not there at run time).
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

GUNICORN_PIN = "gunicorn==27.0.1"  # the gunicorn the kit is tested with (the same pin as its requirements.lock)
FILES = ("requirements.lock", "requirements.txt", "pyproject.toml")  # in order of preference
HOW_TO_PIN = "`pip freeze > requirements.lock` in a virtualenv where the app works"
LOCAL_PATH_FIX = ("the target cannot see this machine's files: publish the package (PyPI or a private index), "
                  "vendor its code into the app's own directory, or use a VCS URL such as "
                  "`name @ git+https://host/owner/name@v1.0`")

# A PEP 508 name, its extras and the rest of the line (specifiers, `@ url`, `; markers`).
REQUIREMENT = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)")
SPECIFIER = r"\s*(~=|===|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*"
SPECIFIERS = re.compile(rf"(\(?{SPECIFIER}(,{SPECIFIER})*\)?)?")
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# pip's comment rule: '#' at the start of a line or after white space (a URL's #egg= stays).
COMMENT = re.compile(r"(^|\s+)#.*$")
INCLUDE = re.compile(r"(?:(-r|-c)\s*|(--requirement|--constraint)(?:\s*=\s*|\s+))(\S+)")
EDITABLE = re.compile(r"(?:-e\s*|--editable(?:\s*=\s*|\s+))(\S+)(.*)")
ARCHIVE = (".whl", ".tar.gz", ".tgz", ".tar.bz2", ".zip")
OWN_DIRECTORY = (".", "./")


class RequirementsError(Exception):
    """The dependency file cannot be made into one the target installs; the message says what to do."""


@dataclass(frozen=True)
class Requirements:
    file: Path  # the file read
    text: str  # one requirements file for `pip install -r`, ending in a newline
    unpinned: tuple[str, ...]  # names of requirements not pinned to one version
    added: tuple[str, ...]  # what the kit added, e.g. ("gunicorn==27.0.1",)


@dataclass(frozen=True)
class Line:
    """One logical line of the output."""
    text: str
    name: str = ""  # the normalised project name; "" for an option line
    pinned: bool = False
    hashed: bool = False  # puts pip in hash-checking mode, where every requirement needs --hash


# ---- finding the file --------------------------------------------------------------------------

def find_requirements(base_dir: Path, named: str = "") -> Path:
    """The app's dependency file: `named` (relative to base_dir) if given, else the first of FILES there."""
    base_dir = Path(base_dir)
    if named:
        path = base_dir / named
        if not path.is_file():
            raise RequirementsError(f"[app] requirements = {named!r}: no such file {path} (fix the path, or set it "
                                    f"to \"\" to take the first of {', '.join(FILES)})")
        return path
    for name in FILES:
        path = base_dir / name
        if path.is_file() and (name != "pyproject.toml" or declares_dependencies(path)):
            return path
    raise RequirementsError(f"no dependency file in {base_dir}: looked for {', '.join(FILES[:-1])} and "
                            f"{FILES[-1]} with [project] dependencies; make one with {HOW_TO_PIN}, or list the "
                            "app's packages in requirements.txt")


def declares_dependencies(path: Path) -> bool:
    """Whether a pyproject.toml has a [project] table that lists (or makes dynamic) its dependencies."""
    project = read_toml(path).get("project")
    return isinstance(project, dict) and ("dependencies" in project or "dependencies" in project.get("dynamic", ()))


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RequirementsError(f"no dependency file {path} ([app] requirements in deploy.toml names it): fix "
                                "the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RequirementsError(f"cannot read {path} ({exc}): a dependency file is UTF-8 text") from None


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(read_text(path))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RequirementsError(f"{path} is not valid TOML ({exc}): fix it, or write requirements.txt") from None


# ---- reading it --------------------------------------------------------------------------------

def read_requirements(path: Path) -> Requirements:
    """The dependency file at path as one requirements file for the target, with what it leaves unpinned."""
    path = Path(path)
    if path.name == "pyproject.toml":
        lines = pyproject_lines(path)
    else:
        lines = requirement_file_lines(path.resolve(), path.resolve().parent, ())
    lines = list(dict.fromkeys(lines))  # an option or requirement given twice (two includes) is written once
    names = list(dict.fromkeys(line.name for line in lines if line.name))
    pinned = {line.name for line in lines if line.pinned}
    added = () if "gunicorn" in names else (GUNICORN_PIN,)
    if added and any(line.hashed for line in lines):
        raise RequirementsError(f"{path.name} uses --hash (pip's hash-checking mode), so modelhost cannot add "
                                f"gunicorn without its hashes: add {GUNICORN_PIN} to it (pip-compile "
                                "--generate-hashes gives its hashes)")
    header = (f"# {path.name} for `pip install -r`, made by modelhost: includes inlined, the app's own directory "
              "left out")
    body = [header, *(line.text for line in lines)]
    if added:
        body += ["# added by modelhost: the app does not require gunicorn, which serves it", *added]
    return Requirements(file=path, text="\n".join(body) + "\n",
                        unpinned=tuple(name for name in names if name not in pinned), added=added)


def unpinned_message(req: Requirements) -> str:
    """One line naming the requirements not pinned to one version and how to pin them; "" when all are."""
    if not req.unpinned:
        return ""
    shown = ", ".join(req.unpinned[:8]) + (f" and {len(req.unpinned) - 8} more" if len(req.unpinned) > 8 else "")
    if req.file.name == "requirements.lock":
        how = f"pin each with == in requirements.lock, or make it anew with {HOW_TO_PIN}"
    else:
        how = (f"write requirements.lock with {HOW_TO_PIN}, or with "
               f"`pip-compile {req.file.name} -o requirements.lock` (pip-tools)")
    return (f"{req.file.name}: {shown} not pinned to one version, so two deploys may install different "
            f"versions; {how}")


def pyproject_lines(path: Path) -> list[Line]:
    project = read_toml(path).get("project")
    if not isinstance(project, dict):
        raise RequirementsError(f"{path} has no [project] table, so it lists no dependencies: write "
                                f"requirements.txt, or make requirements.lock with {HOW_TO_PIN}")
    if "dependencies" in project.get("dynamic", ()):
        raise RequirementsError(f"{path}: [project] dependencies are dynamic (the build backend computes them), "
                                f"so modelhost cannot read them: write requirements.txt or requirements.lock "
                                f"({HOW_TO_PIN}), and set [app] requirements to it")
    dependencies = project.get("dependencies", [])
    if not (isinstance(dependencies, list) and all(isinstance(d, str) for d in dependencies)):
        raise RequirementsError(f"{path}: [project] dependencies must be a list of strings such as "
                                '"flask>=3.1"')
    lines = [requirement_line(d, f"{path.name} [project] dependencies") for d in dependencies]
    return [line for line in lines if line is not None]


def requirement_file_lines(path: Path, top: Path, including: tuple[Path, ...]) -> list[Line]:
    """The lines of a requirements file, with its -r and -c files inlined (paths relative to the file naming them)."""
    where = shown_path(path, top)
    lines: list[Line] = []
    for number, text in logical_lines(read_text(path)):
        at = f"{where} line {number}"
        include = INCLUDE.fullmatch(text)
        if include:
            lines += included_lines(path.parent, include.group(3), at, top, (*including, path.resolve()))
        elif text.startswith("-"):
            line = option_line(text, at)
            lines += [line] if line is not None else []
        else:
            line = requirement_line(text, at)
            lines += [line] if line is not None else []
    return lines


def included_lines(directory: Path, named: str, at: str, top: Path, including: tuple[Path, ...]) -> list[Line]:
    """An -r or -c file's lines; a constraint becomes a requirement, as one file cannot hold constraints."""
    if URL_SCHEME.match(named) and not named.startswith("file:"):
        raise RequirementsError(f"{at}: includes {named}, a URL: download it into the app and include it by its path")
    path = directory / named.removeprefix("file:")
    if not path.is_file():
        raise RequirementsError(f"{at}: includes {named}, but there is no file {path} (-r and -c paths are "
                                "relative to the file that names them)")
    if path.resolve() in including:
        cycle = " -> ".join(shown_path(p, top) for p in (*including, path.resolve()))
        raise RequirementsError(f"{at}: includes go round in a circle ({cycle}): remove one of those -r/-c lines")
    return requirement_file_lines(path, top, including)


def shown_path(path: Path, top: Path) -> str:
    return Path(os.path.relpath(path, top)).as_posix()


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, line) with continuations (a trailing \\) joined, comments and blank lines dropped."""
    lines, joined, first = [], "", 0
    for number, physical in enumerate(text.splitlines(), start=1):
        first = first or number
        if physical.endswith("\\") and not COMMENT.match(physical):
            joined += physical[:-1]
            continue
        line = COMMENT.sub("", joined + physical).strip()
        if line:
            lines.append((first, line))
        joined, first = "", 0
    line = COMMENT.sub("", joined).strip()
    return lines + ([(first, line)] if line else [])


def option_line(text: str, at: str) -> Line | None:
    """An option line as it is (--index-url, --find-links, ...), an editable requirement checked, or None for '-e .'."""
    editable = EDITABLE.fullmatch(text)
    if not editable:
        return Line(text, hashed=text.split("=")[0].split()[0] == "--require-hashes")
    target = editable.group(1)
    if target in OWN_DIRECTORY:
        return None
    if target.startswith((".[", "./[")):
        raise own_extras_error(target, at)
    if is_local(target):
        raise RequirementsError(f"{at}: {text} installs a directory of this machine, but {LOCAL_PATH_FIX}")
    return Line(text, name=url_project_name(target), pinned=True)


def requirement_line(text: str, at: str) -> Line | None:
    """A requirement (`name[extras] specifiers ; markers --options`, `name @ url` or a URL); None for the app itself."""
    requirement, _, options = text.partition(" --")
    requirement = requirement.strip()
    hashed = "--hash" in (" --" + options)
    match = REQUIREMENT.fullmatch(requirement)
    rest = match.group(3).strip() if match else ""
    a_file = not rest and requirement.endswith(ARCHIVE)  # foo-1.0-py3-none-any.whl looks like a name
    if match and not a_file and (not rest or rest[0] in "@;(~=!<>"):
        name = normalise(match.group(1))
        if rest.startswith("@"):
            url = rest[1:].partition(";")[0].strip()
            if is_local(url):
                raise RequirementsError(f"{at}: {requirement} is a path on this machine, but {LOCAL_PATH_FIX}")
            return Line(text, name=name, pinned=True, hashed=hashed)
        specifiers = rest.partition(";")[0].strip()
        if not SPECIFIERS.fullmatch(specifiers):
            raise unreadable_error(requirement, at)
        return Line(text, name=name, pinned=is_pinned(specifiers), hashed=hashed)
    if requirement in OWN_DIRECTORY:
        return None
    if requirement.startswith((".[", "./[")):
        raise own_extras_error(requirement, at)
    if is_local(requirement):
        raise RequirementsError(f"{at}: {requirement} is a path on this machine, but {LOCAL_PATH_FIX}")
    if URL_SCHEME.match(requirement):
        return Line(text, name=url_project_name(requirement), pinned=True, hashed=hashed)
    raise unreadable_error(requirement, at)


def own_extras_error(requirement: str, at: str) -> RequirementsError:
    return RequirementsError(f"{at}: {requirement} installs the app itself with extras, but modelhost does not "
                             "install the app (its release directory is on gunicorn's path): list the extras' "
                             "packages in the dependency file instead")


def unreadable_error(requirement: str, at: str) -> RequirementsError:
    return RequirementsError(f"{at}: cannot read {requirement!r} as a requirement: write it as "
                             '`name[extras] specifiers ; markers` (e.g. `flask==3.1.3`), `name @ url`, or a URL')


def is_local(target: str) -> bool:
    """Whether a requirement or URL names a file or directory of this machine."""
    if target.startswith("file:"):
        return True
    # A URL (git+https:, https:) is not local; C:\ is a path, not a scheme.
    return not URL_SCHEME.match(target) or re.match(r"[A-Za-z]:[\\/]", target) is not None


def url_project_name(url: str) -> str:
    """The project a URL installs: its #egg= name, else the name in its file name ("" when neither)."""
    egg = re.search(r"[#&]egg=([A-Za-z0-9._-]+)", url)
    if egg:
        return normalise(egg.group(1))
    file_name = url.split("#")[0].split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    if file_name.endswith(ARCHIVE):
        return normalise(re.split(r"-(?=\d)", file_name, maxsplit=1)[0])
    return ""


def is_pinned(specifiers: str) -> bool:
    """Whether specifiers allow one version: an == without a wildcard, or ===."""
    clauses = [c.strip() for c in specifiers.strip("()").split(",")]
    return any(c.startswith("===") or (c.startswith("==") and "*" not in c) for c in clauses)


def normalise(name: str) -> str:
    """A project name as PEP 503 compares it ("Flask_Login" -> "flask-login")."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---- what the target's pip installs: Debian's packages, extra indexes, missing wheels ------------

# Debian's names for Python projects whose package is not python3-<project>.
DEBIAN_NAMES = {"scikit-learn": "python3-sklearn", "pyyaml": "python3-yaml", "pillow": "python3-pil",
                "beautifulsoup4": "python3-bs4", "opencv-python": "python3-opencv",
                "opencv-python-headless": "python3-opencv", "msgpack-python": "python3-msgpack"}
NO_DISTRIBUTION = re.compile(r"No matching distribution found for (\S+)")


def debian_package(project: str) -> str:
    """The Debian package that is likely to hold a Python project ("numpy" -> "python3-numpy")."""
    name = normalise(project)
    return DEBIAN_NAMES.get(name, f"python3-{name}")


def parse_python_projects(output: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """`commands.python_projects` output: {project: (version, package)} and the packages not installed."""
    provided, missing = {}, []
    for line in output.splitlines():
        package, _, found = line.strip().partition(" ")
        if found == "-":
            missing.append(package)
        elif found:  # numpy-1.24.2, PyYAML-6.0, gensim-4.3.0-py3.11
            name, _, version = found.partition("-")
            provided[normalise(name)] = (re.sub(r"-py\d[\d.]*$", "", version), package)
    return provided, missing


def requirement_name(line: str) -> str:
    """The normalised project name a requirement line asks for ("" for an option or a URL line)."""
    match = REQUIREMENT.match(line.strip())
    return normalise(match.group(1)) if match and not line.lstrip().startswith(("-", "#")) else ""


def leave_out(text: str, names) -> tuple[str, list[str]]:
    """The requirements without the lines asking for these projects, and those lines."""
    kept, left = [], []
    for line in text.splitlines():
        (left if requirement_name(line) in names else kept).append(line)
    return "\n".join(kept) + "\n", left


def with_indexes(text: str, urls) -> str:
    """The requirements with pip's --extra-index-url lines for these indexes first."""
    return "".join(f"--extra-index-url {url}\n" for url in urls) + text


def options_of(text: str) -> str:
    """The option lines (indexes, --find-links, ...) of requirements, for a file of one requirement."""
    return "".join(line + "\n" for line in text.splitlines() if line.lstrip().startswith("-"))


def no_wheels_message(target: str, machine: str, requirements: list[str], file_name: str) -> str:
    """Why the deploy stopped before pip: no wheel for this machine and no way to build one; the choices."""
    names = [requirement_name(r) or r for r in requirements]
    packages = ", ".join(f'"{debian_package(name)}"' for name in names)
    return (f"{target} ({machine}) cannot install {', '.join(requirements)} from {file_name}: the package indexes "
            f"pip uses have no wheel of {'it' if len(names) == 1 else 'them'} for {machine} (PyPI has wheels for "
            "other machines only: they contain C code), and the host has no C compiler and Python headers to "
            "build them. Nothing was installed. Choose one, then deploy again:\n"
            "  - piwheels, with wheels for Raspberry Pis: Raspberry Pi OS names it in /etc/pip.conf already; "
            'elsewhere set [python] extra_index_urls = ["https://www.piwheels.org/simple"] in deploy.toml;\n'
            f"  - Debian's own builds: set [python] system_packages = [{packages}] in deploy.toml (fab provision "
            "installs them; the app then runs with Debian's versions, which may be older than its pins);\n"
            "  - a compiler on the host: apt-get install build-essential python3-dev, and the libraries the "
            "packages build against (building numpy or scipy on a Pi takes an hour or more).")


# How pip names the packages it failed to build from source, across its versions.
BUILD_FAILURES = (re.compile(r"Failed building wheel for ([\w.-]+)"),  # each one
                  re.compile(r"^Failed to build ([\w.-]+(?: [\w.-]+)*)$", re.M),  # pip 23: all of them
                  re.compile(r"Could not build wheels for ([\w.-]+(?:, (?!which )[\w.-]+)*)"),
                  re.compile(r"Failed to build installable wheels for some pyproject\.toml based projects \(([^)]*)\)"))


def build_failure_hint(output: str) -> str:
    """What to do when pip failed building a package from source; "" when that was not the failure."""
    names = [name for pattern in BUILD_FAILURES for found in pattern.findall(output)
             for name in found.replace(",", " ").split()]
    if not names and "metadata-generation-failed" not in output:
        return ""
    what = ", ".join(dict.fromkeys(names)) or "a package"
    return (f"pip had to build {what} from source and could not: there is no wheel for this machine on the "
            "indexes pip uses. Use one with wheels for it ([python] extra_index_urls, e.g. piwheels on a "
            "Raspberry Pi), Debian's packages ([python] system_packages), or install a compiler and the "
            "headers the package needs (apt-get install build-essential python3-dev)")
