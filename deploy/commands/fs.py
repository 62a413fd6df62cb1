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


def sums(paths: list[Path]) -> list[str]:
    """The sha256 of each file that exists, one "SUM  PATH" line each (missing ones are left out)."""
    return ["sh", "-c", 'for f; do [ -f "$f" ] && sha256sum -- "$f"; done; true', "sh", *map(str, paths)]


def parse_sums(output: str) -> dict[str, str]:
    """path -> sha256, from sums' output."""
    return {path: digest for digest, path in (line.split("  ", 1) for line in output.splitlines() if "  " in line)}


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


def cat_releases(directory: Path, kit_dir: str) -> list[str]:
    """Prints each release's release.json, one per line: <release>/<kit_dir>/release.json, or for a
    release made before the kit had its own place, <release>/release.json. Nothing when there are none."""
    script = ('for r in "$1"/*/; do if [ -d "$r$2" ]; then f="$r$2/release.json"; else f="${r}release.json"; fi; '
              '[ -f "$f" ] && cat "$f" && echo; done; true')
    return ["sh", "-c", script, "sh", str(directory), kit_dir]


def link_missing(target: str | Path, link: Path) -> list[str]:
    """Point link at target unless something is at link already (the app's own file wins)."""
    script = '[ -e "$2" ] || [ -L "$2" ] || { mkdir -p "$(dirname "$2")" && ln -s "$1" "$2"; }'
    return ["sh", "-c", script, "sh", str(target), str(link)]


def keep_paths(release: Path, data_dir: Path, paths: tuple[str, ...], owner: str | None,
               seed: Path | None = None) -> list[str]:
    """Each path of the release becomes a link to the same path under data_dir, kept across releases.

    A path missing under data_dir is made, with the files the release ships there (or, when seed is
    given, the ones the seed release has there as a directory of its own: its data from before
    the kit kept it); files already there are never replaced. Prints "made PATH" for each one made.
    """
    script = ('r=$1 d=$2 o=$3 s=$4; shift 4; for p; do '
              'if [ ! -d "$d/$p" ]; then mkdir -p "$d/$p" || exit 1; '
              'for from in "$s/$p" "$r/$p"; do [ -n "${from%%/$p}" ] && [ -d "$from" ] && [ ! -L "$from" ] && '
              '{ cp -a "$from/." "$d/$p/" || exit 1; break; }; done; '
              '[ -z "$o" ] || chown -R "$o:$o" "$d/${p%%/*}" || exit 1; echo "made $p"; fi; '
              '[ -L "$r/$p" ] || [ ! -e "$r/$p" ] || [ -d "$r/$p" ] || '
              '{ echo "$p is a file in the release, not a directory" >&2; exit 1; }; '
              'rm -rf "$r/$p" && mkdir -p "$(dirname "$r/$p")" && ln -sfn "$d/$p" "$r/$p" || exit 1; done')
    return ["sh", "-c", script, "sh", str(release), str(data_dir), owner or "", str(seed or ""), *paths]


def keep_files(release: Path, data_dir: Path, paths: tuple[str, ...], owner: str | None,
               seed: Path | None = None) -> list[str]:
    """Each file of the release becomes a link to the same file under data_dir, kept across releases
    (a SQLite database beside the code: SQLite follows the link, and keeps its journal beside the file).

    A file missing under data_dir starts as the seed release's own file there (its data from before
    the kit kept it), else as the one the release ships, else the app makes it through the link; a
    file already there is never replaced. Prints "made PATH" for each one copied.
    """
    script = ('r=$1 d=$2 o=$3 s=$4; shift 4; for p; do '
              '{ [ -L "$r/$p" ] || [ ! -d "$r/$p" ]; } || { echo "$p is a directory in the release, not a file" >&2; '
              'exit 1; }; mkdir -p "$(dirname "$d/$p")" || exit 1; '
              'if [ ! -e "$d/$p" ]; then for from in "$s/$p" "$r/$p"; do [ -n "${from%%/$p}" ] && [ -f "$from" ] && '
              '[ ! -L "$from" ] && { cp -a "$from" "$d/$p" || exit 1; echo "made $p"; break; }; done; fi; '
              '[ -z "$o" ] || chown -R "$o:$o" "$d/${p%%/*}" 2>/dev/null || [ ! -e "$d/$p" ] || exit 1; '
              'rm -rf "$r/$p" && mkdir -p "$(dirname "$r/$p")" && ln -sfn "$d/$p" "$r/$p" || exit 1; done')
    return ["sh", "-c", script, "sh", str(release), str(data_dir), owner or "", str(seed or ""), *paths]


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


def tar_create(tar: Path, directory: Path, name: str = ".", dereference: bool = False) -> list[str]:
    """A tar file of name in directory (all of it by default), readable by everyone once unpacked
    whatever the modes here (a private temporary directory, say), owned by nobody in particular;
    with dereference, the files links point at rather than the links."""
    return ["tar", "-cf", str(tar), *(["--dereference"] if dereference else []), "--owner=0", "--group=0",
            "--mode=u+rwX,go+rX,go-w", "-C", str(directory), name]


def tar_extract(tar: Path, directory: Path) -> list[str]:
    """Unpack as the user who unpacks (owner) with the default modes (umask), not the tar file's."""
    return ["tar", "-xf", str(tar), "--no-same-owner", "--no-same-permissions", "-C", str(directory)]
