"""One command that prints, in sections, all a deploy needs to see that it has nothing to do
(deploy/unchanged.py): the host's facts, the last deploy's record and whether the files it wrote
are as it left them, the deploy lock, the links, both colors' programs (one status command) and
their answers to the health path, and the certificate's files. One round trip where a deploy that
finds everything in place takes some forty."""
from __future__ import annotations

import shlex
from pathlib import Path

from deploy.commands.fs import read_links
from deploy.commands.probe import probe
from deploy.commands.programs import programs_status
from deploy.layout import COLORS, Layout


def snapshot(layout: Layout, facts_command: str, python: str, health: str, ready: str,
             certificate: tuple[str, str], record: Path, sums: Path) -> list[str]:
    """sh -c of the facts script, then one "### name" section per look (see parse in deploy/unchanged.py)."""
    looks = {
        "record": shlex.join(["cat", str(record)]),
        # sha256sum names each file that differs or is missing; "exit 0" when every one is as it was.
        "sums": f"sha256sum --check --quiet --strict {shlex.quote(str(sums))} 2>&1; echo \"exit $?\"",
        "lock": f"if [ -e {shlex.quote(str(layout.lock))} ]; then echo held; else echo free; fi",
        "links": shlex.join(read_links(layout.root)),
        "certificate": " && ".join(f"[ -e {shlex.quote(path)} ]" for path in certificate) + " && echo present",
        "programs": shlex.join(programs_status(layout, COLORS)),
        **{f"answer-{color}": shlex.join(probe(python, paths=[health], socket=layout.socket(color), ready=ready))
           for color in COLORS},
    }
    script = facts_command + "".join(f"printf '\\n### {name}\\n'; {{ {code}; }} 2>/dev/null || true\n"
                                     for name, code in looks.items())
    return ["sh", "-c", script]
