"""Files, directories, links and tar files on a target, and the parsers of what these commands print."""
from __future__ import annotations

from pathlib import Path

from deploy.layout import COLORS, Directory


def exists(path: Path) -> list[str]:
    return ["test", "-e", str(path)]


def exists_or_dangling_link(path: Path) -> list[str]:
    """Exits 0 when path is there, a link to nothing included."""
    return ["test", "-e", str(path), "-o", "-L", str(path)]


def cat(path: Path) -> list[str]:
    return ["cat", "--", str(path)]


def make_directory(path: Path, parents: bool = True) -> list[str]:
    """mkdir; without parents it fails when path exists (which makes it a lock)."""
    return ["mkdir", *(["-p"] if parents else []), str(path)]


def remove(*paths: Path | str) -> list[str]:
    """rm -rf: files, links and whole directories; nothing to remove is not an error."""
    return ["rm", "-rf", "--", *map(str, paths)]


def move(source: Path, destination: Path) -> list[str]:
    """Rename source to destination, replacing it (a directory too: -T never moves into it)."""
    return ["mv", "-Tf", "--", str(source), str(destination)]


def touch(path: Path) -> list[str]:
    return ["touch", "--", str(path)]


def temporary_file() -> list[str]:
    """A new private file in the user's temporary directory; prints its path."""
    return ["mktemp", "-t", "modelhost.XXXXXXXX"]


def install(source: Path, destination: Path, mode: int, owner: str | None = None) -> list[str]:
    """A copy of source at destination, with its mode (and owner) from the start."""
    return ["install", "-m", f"{mode:o}", *(["-o", owner] if owner else []), "-T", str(source), str(destination)]


def restrict(path: Path, mode: int, owner: str | None = None) -> list[str]:
    """Set a file's mode (and owner) to these."""
    return ["sh", "-c", 'chmod "$1" "$2" && { [ -z "$3" ] || chown "$3" "$2"; }', "sh", f"{mode:o}", str(path),
            owner or ""]


def symlink(target: str | Path, link: Path) -> list[list[str]]:
    """Point link at target atomically: a new link beside it, renamed over it."""
    partial = link.with_name(f".{link.name}.partial")
    return [["ln", "-sfn", str(target), str(partial)], ["mv", "-Tf", str(partial), str(link)]]


def listing(directory: Path) -> list[str]:
    """The names in a directory, dotfiles included (nothing, and a non-zero exit, when it is missing)."""
    return ["ls", "-A", str(directory)]


def size(path: Path) -> list[str]:
    """A file's size in bytes."""
    return ["stat", "-c", "%s", str(path)]


def tail_bytes(path: Path, start: int) -> list[str]:
    """A file from byte start on."""
    return ["tail", "-c", f"+{start + 1}", str(path)]


def tail(paths: list[Path], lines: int, follow: bool = False) -> list[str]:
    """The last lines of each file (with a ==> name <== header); with follow, new lines as they come."""
    return ["tail", "-v", "-n", str(lines), *(["-F"] if follow else []), "--", *map(str, paths)]


def append_line(path: Path, line: str) -> list[str]:
    return ["sh", "-c", 'printf "%s\\n" "$1" >> "$2"', "sh", line, str(path)]


def cat_all(directory: Path, name: str) -> list[str]:
    """Prints every directory/*/name (each release's release.json), nothing when there are none."""
    return ["find", str(directory), "-mindepth", "2", "-maxdepth", "2", "-name", name, "-exec", "cat", "{}", "+"]


def read_links(root: Path, names: tuple[str, ...] = ("current", *COLORS)) -> list[str]:
    """Where each link under root points, one NAME=TARGET line each (TARGET empty: no link)."""
    script = 'd=$1; shift; for l; do printf "%s=%s\\n" "$l" "$(readlink "$d/$l")"; done'
    return ["sh", "-c", script, "sh", str(root), *names]


def parse_links(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def ensure_directories(directories: list[Directory] | tuple[Directory, ...]) -> list[str]:
    """Makes each directory that is missing and sets owner, group and mode where they differ;
    prints one line per change ("made PATH", "set PATH owner:group mode"). chmod keeps a
    directory's setgid bit unless told: a three-digit mode clears it."""
    script = ('while [ $# -gt 0 ]; do d=$1 o=$2 g=$3 m=$4; shift 4; '
              '[ -d "$d" ] || { mkdir -p "$d" && echo "made $d"; } || exit 1; '
              '[ -z "$o" ] || [ "$(stat -c %U:%G:%a "$d")" = "$o:$g:$m" ] || '
              '{ chown "$o:$g" "$d" && chmod "$m" "$d" && { [ ${#m} -gt 3 ] || chmod ug-s "$d"; } '
              '&& echo "set $d $o:$g $m"; } || exit 1; done')
    return ["sh", "-c", script, "sh", *(str(v) for d in directories for v in (d.path, d.owner, d.group, d.mode))]


def parse_ensure_directories(output: str) -> tuple[list[str], list[str]]:
    """(made, set): the directories ensure_directories made, and those whose owner or mode it set."""
    lines = output.splitlines()
    return ([line.split()[1] for line in lines if line.startswith("made ")],
            [line.split()[1] for line in lines if line.startswith("set ")])


def tar_create(tar: Path, directory: Path) -> list[str]:
    """A tar file of a directory's content, readable by everyone once unpacked whatever the modes
    here (a private temporary directory, say), owned by nobody in particular."""
    return ["tar", "-cf", str(tar), "--owner=0", "--group=0", "--mode=u+rwX,go+rX,go-w", "-C", str(directory), "."]


def tar_extract(tar: Path, directory: Path) -> list[str]:
    """Unpack as the user who unpacks (owner) with the default modes (umask), not the tar file's."""
    return ["tar", "-xf", str(tar), "--no-same-owner", "--no-same-permissions", "-C", str(directory)]
