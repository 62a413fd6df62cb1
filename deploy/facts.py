"""What a host is: cores, memory, architecture, OS, init system, nginx and Python versions, board.

FACTS_COMMAND is one POSIX sh script that the executor runs on the target (`sh -c FACTS_COMMAND`,
as any user, no Python needed there); parse_facts turns its output into HostFacts, and gather
does both through a deploy.target.Target.
"""
from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass

# Section name -> the sh code that prints it.
_SECTIONS = {
    "nproc": "nproc",  # CPUs in the sched affinity mask
    "online": "getconf _NPROCESSORS_ONLN",
    # cgroup v2 limits of the cgroup /sys/fs/cgroup shows: a container's own when it has a cgroup
    # namespace; on a VM or bare metal the root cgroup has neither file, so no cap.
    "cpu.max": "cat /sys/fs/cgroup/cpu.max",
    "meminfo": "cat /proc/meminfo",
    "memory.max": "cat /sys/fs/cgroup/memory.max",
    "uname": "uname -m",
    "os-release": "cat /etc/os-release || cat /usr/lib/os-release",
    # sd_booted(): systemd is PID 1 exactly when /run/systemd/system is a directory.
    "init": "if [ -d /run/systemd/system ]; then echo systemd; else cat /proc/1/comm; fi",
    # nginx is in /usr/sbin, often not on an unprivileged user's PATH; -v prints to stderr.
    "nginx": 'nginx_bin=$(command -v nginx || command -v /usr/sbin/nginx) && "$nginx_bin" -v 2>&1',
    "python3": "python3 -V",
    "board": "tr -d '\\000' < /proc/device-tree/model",  # NUL-terminated; only on ARM boards
    # A Raspberry Pi's firmware: under-voltage and throttling bits. vcgencmd needs the video group;
    # the kernel's firmware driver gives the same bits to anyone (hex, without 0x).
    "throttled": "vcgencmd get_throttled || cat /sys/devices/platform/soc/soc:firmware/get_throttled",
    # Each thermal zone's type and millidegrees Celsius ("cpu-thermal 48850" on a Pi).
    "thermal": ('for zone in /sys/class/thermal/thermal_zone*; do [ -e "$zone/temp" ] || continue; '
                'echo "$(cat "$zone/type") $(cat "$zone/temp")"; done'),
    # The root filesystem's block device (through its major:minor: /proc/mounts may say /dev/root),
    # an SD card's or eMMC's type, and its size and free space in KiB.
    "root": ("dev=$(awk '$5 == \"/\" {d = $3} END {print d}' /proc/self/mountinfo); "
             'echo "device $(readlink -e "/sys/dev/block/$dev")"; '
             'echo "type $(cat "/sys/dev/block/$dev/../device/type")"; '
             "df -Pk / | tail -n 1"),
    "swaps": "cat /proc/swaps",  # swap partitions, files and zram devices
    "loadavg": "cat /proc/loadavg",  # runnable processes averaged over 1, 5 and 15 minutes
    # What pip needs to build a package with C code that has no wheel for this machine.
    "build": "command -v cc; ls /usr/include/python3*/Python.h",
}

# Each section runs with stderr discarded and `|| true`, so a missing file or command leaves it
# empty and the rest still run, even under `sh -e`. Headers start with a newline because a section
# need not end with one (the board model does not).
# nproc answers OMP_NUM_THREADS / OMP_THREAD_LIMIT instead of the affinity mask when they are set.
FACTS_COMMAND = "unset OMP_NUM_THREADS OMP_THREAD_LIMIT\n" + "".join(
    f"printf '\\n### {name}\\n'; {{ {code}; }} 2>/dev/null || true\n"
    for name, code in _SECTIONS.items())


class FactsError(Exception):
    """The output of FACTS_COMMAND cannot be understood."""


@dataclass(frozen=True)
class Swap:
    name: str  # /dev/zram0, /var/swap, /dev/sda3
    type: str  # "zram" (compressed RAM), "file" or "partition"
    size_mb: int
    used_mb: int


@dataclass(frozen=True)
class Health:
    """How the machine is doing, as far as it reports it (a Raspberry Pi reports the most); each
    field None or empty where it does not."""

    throttled: int | None = None  # the firmware's get_throttled bits (THROTTLED)
    temperature_c: float | None = None
    thermal_zone: str = ""  # the zone the temperature is from: "cpu-thermal"
    root_device: str = ""  # the root filesystem's block device: "mmcblk0p2", "sda2", "nvme0n1p2"
    root_kind: str = ""  # "SD card", "eMMC", "NVMe SSD", "USB drive", ...; "" when not known
    root_size_mb: int | None = None
    root_free_mb: int | None = None
    swap: tuple[Swap, ...] | None = None  # None when /proc/swaps was unreadable; () when there is none
    load: tuple[float, float, float] | None = None  # /proc/loadavg: 1, 5 and 15 minutes


# The firmware's get_throttled bits: 0-3 now, the same at 16-19 since boot.
THROTTLED = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled", 3: "soft temperature limit"}
UNDER_VOLTAGE, HOT = 0x10001, 0xE000E


@dataclass(frozen=True)
class HostFacts:
    """A host's hardware and software, as far as a deploy needs them."""

    cores: int  # usable: affinity mask, capped by a cgroup CPU quota
    cpus_online: int
    memory_total_mb: int  # MiB, capped by a cgroup memory limit
    memory_available_mb: int  # MiB, MemAvailable capped by a cgroup memory limit
    architecture: str  # uname -m: x86_64, aarch64, armv7l
    os_id: str  # os-release ID: debian, ubuntu, raspbian
    os_version: str  # os-release VERSION_ID: "12", "24.04"; "" when absent (e.g. testing)
    os_name: str  # os-release PRETTY_NAME
    init: str  # "systemd", else PID 1's command name ("sh", "init"); "" when unreadable
    nginx_version: tuple[int, ...] | None
    python_version: tuple[int, ...] | None
    board: str | None  # device-tree model, e.g. "Raspberry Pi 4 Model B Rev 1.4"
    health: Health = Health()
    can_build: bool = False  # a C compiler and Python's headers: pip can build C extensions here

    @property
    def wheels_sparse(self) -> bool:
        """Whether PyPI often has no wheels for this machine: it has them for x86_64 and aarch64, but many
        projects publish none for 32-bit ARM (armv7l, armv6l) and other machines."""
        return self.architecture not in ("x86_64", "aarch64")

    @property
    def systemd(self) -> bool:
        """Whether systemd is the init system."""
        return self.init == "systemd"

    def describe(self) -> str:
        """One line for humans: board, cores, memory, OS, architecture (and init if not systemd)."""
        cores = f"{self.cores} core{'s' if self.cores != 1 else ''}"
        if self.cores != self.cpus_online:
            cores = f"{self.cores} of {self.cpus_online} cores"
        memory = (f"{_size(self.memory_total_mb)} RAM"
                  f" ({_size(self.memory_available_mb)} available)")
        parts = [self.board, cores, memory, self.os_name, self.architecture]
        if not self.systemd:
            parts.append(f"no systemd (PID 1 is {self.init or 'unknown'})")
        return ", ".join(part for part in parts if part)


def _size(mb: int) -> str:
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb} MiB"


def health_lines(health: Health) -> list[tuple[str, str]]:
    """(label, text) for each thing the machine reports about its condition, for `fab status`."""
    lines = []
    if health.throttled is not None:
        lines.append(("power", _throttled(health.throttled)))
    if health.temperature_c is not None:
        lines.append(("temperature", f"{health.temperature_c:.1f} °C ({health.thermal_zone})"))
    if health.root_size_mb is not None:
        device = " ".join(part for part in (health.root_kind, health.root_device) if part)
        lines.append(("storage", f"/ on {device or 'its disk'}: {_size(health.root_free_mb)} free of "
                                 f"{_size(health.root_size_mb)}"))
    if health.load is not None:
        lines.append(("load", f"{health.load[0]:.2f} {health.load[1]:.2f} {health.load[2]:.2f} (1, 5, 15 minutes)"))
    if health.swap is not None:
        lines.append(("swap", "; ".join(f"{swap.name} ({swap.type}) {_size(swap.size_mb)}, {_size(swap.used_mb)} used"
                                        for swap in health.swap) or "none"))
    return lines


def load_brief(facts: HostFacts) -> str:
    """The 1-minute load against the cores, for the fleet's status table."""
    load = facts.health.load
    return f"{load[0]:.2f} of {facts.cores} cores" if load else "-"


def board_brief(health: Health) -> str:
    """What the board reports in a few words (what health_lines says at length): its temperature,
    power or heat trouble, free storage."""
    parts = [f"{health.temperature_c:.0f} °C"] if health.temperature_c is not None else []
    if health.throttled is not None and health.throttled & 0xF000F:
        parts.append(", ".join(name for bit, name in THROTTLED.items() if health.throttled >> bit & 0x10001))
    if health.root_free_mb is not None:
        parts.append(f"{_size(health.root_free_mb)} free")
    return "; ".join(parts) or "-"


def _throttled(bits: int) -> str:
    """The get_throttled bits in words, with what to do about them."""
    if not bits & 0xF000F:
        return f"no under-voltage or throttling since boot (get_throttled {bits:#x})"
    now = [name for bit, name in THROTTLED.items() if bits >> bit & 1]
    since = [name for bit, name in THROTTLED.items() if bits >> (bit + 16) & 1]
    said = "; ".join(part for part in (f"now: {', '.join(now)}" if now else "",
                                       f"since boot: {', '.join(since)}" if since else "") if part)
    fixes = []
    if bits & UNDER_VOLTAGE:
        fixes.append("under-voltage slows the board and corrupts SD cards: use the board's own power supply "
                     "(5 V 3 A for a Pi 4, 5 A for a Pi 5) and a short cable")
    if bits & HOT:
        fixes.append("too hot: give it a heatsink or a fan, or more air")
    return f"{said} (get_throttled {bits:#x}); " + "; ".join(fixes)


def gather(target) -> HostFacts:
    """A target's facts: FACTS_COMMAND run there (by the executor, deploy.target), parsed."""
    return parse_facts(target.run(["sh", "-c", FACTS_COMMAND]).stdout)


def parse_facts(output: str) -> HostFacts:
    """HostFacts from FACTS_COMMAND's output; FactsError names the section it cannot use."""
    sections = split_sections(output)
    cores = _count(sections, "nproc")
    cpu_limit = _cpu_limit(sections)
    if cpu_limit is not None:
        cores = min(cores, cpu_limit)
    total_mb, available_mb = _memory(sections)
    memory_limit = _memory_limit(sections)
    if memory_limit is not None:
        total_mb, available_mb = min(total_mb, memory_limit), min(available_mb, memory_limit)
    os_release = _os_release(sections)
    return HostFacts(
        cores=cores,
        cpus_online=_count(sections, "online"),
        memory_total_mb=total_mb,
        memory_available_mb=available_mb,
        architecture=_architecture(sections),
        # Defaults from os-release(5) for keys a file leaves out.
        os_id=os_release.get("ID", "linux"),
        os_version=os_release.get("VERSION_ID", ""),
        os_name=os_release.get("PRETTY_NAME", "Linux"),
        init=sections.get("init", "").partition("\n")[0].strip(),
        nginx_version=_version(sections, "nginx", r"nginx version: \S*?/(\d+(?:\.\d+)*)",
                               "nginx version: nginx/1.22.1"),
        python_version=_version(sections, "python3", r"Python (\d+(?:\.\d+)*)", "Python 3.11.2"),
        board=sections.get("board") or None,
        health=Health(throttled=_throttled_bits(sections), **_thermal(sections), **_root(sections),
                      swap=_swaps(sections), load=_load(sections)),
        can_build=_can_build(sections.get("build", "")),
    )


def split_sections(output: str) -> dict[str, str]:
    """Section name -> its text, stripped; lines before the first header are ignored."""
    lines: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        header = re.fullmatch(r"\s*### (\S+)\s*", line)
        if header:
            current = lines[header[1]] = []
        elif current is not None:
            current.append(line)
    return {name: "\n".join(text).strip() for name, text in lines.items()}


def _problem(name: str, text: str | None, expected: str) -> FactsError:
    """A FactsError for a section that is missing or holds something unexpected."""
    if text is None:
        return FactsError(
            f"host facts: the output has no '### {name}' section; it should come from"
            f" FACTS_COMMAND of this version of modelhost, run as `sh -c FACTS_COMMAND`")
    shown = text if len(text) <= 80 else text[:77] + "..."
    return FactsError(
        f"host facts, section '{name}': expected {expected}, got {shown!r};"
        f" run `{_SECTIONS[name]}` on the host to see why")


def _section(sections: dict[str, str], name: str, expected: str) -> str:
    text = sections.get(name)
    if not text:
        raise _problem(name, text, expected)
    return text


def _count(sections: dict[str, str], name: str) -> int:
    text = _section(sections, name, "a number of CPUs")
    if not text.isdigit() or int(text) < 1:
        raise _problem(name, text, "a number of CPUs")
    return int(text)


def _cpu_limit(sections: dict[str, str]) -> int | None:
    """Whole CPUs the cgroup quota allows ("150000 100000" -> 2), or None without a quota."""
    text = sections.get("cpu.max", "")
    if not text or text.split()[0] == "max":
        return None
    match = re.fullmatch(r"(\d+)\s+(\d+)", text)
    if not match or int(match[2]) == 0:
        raise _problem("cpu.max", text, "'max PERIOD' or 'QUOTA PERIOD' in microseconds")
    return max(1, math.ceil(int(match[1]) / int(match[2])))


def _memory(sections: dict[str, str]) -> tuple[int, int]:
    """MemTotal and MemAvailable in MiB."""
    text = _section(sections, "meminfo", "/proc/meminfo with MemTotal and MemAvailable")
    values = dict(re.findall(r"^(\w+):\s*(\d+) kB\s*$", text, re.MULTILINE))
    if "MemTotal" not in values:
        raise _problem("meminfo", text, "/proc/meminfo with a MemTotal line")
    if "MemAvailable" not in values:
        raise _problem("meminfo", text, "a MemAvailable line (Linux 3.14 or newer is needed)")
    return int(values["MemTotal"]) // 1024, int(values["MemAvailable"]) // 1024


def _memory_limit(sections: dict[str, str]) -> int | None:
    """The cgroup memory limit in MiB, or None when there is none."""
    text = sections.get("memory.max", "")
    if text in ("", "max"):
        return None
    if not text.isdigit():
        raise _problem("memory.max", text, "'max' or a number of bytes")
    return int(text) // (1024 * 1024)


def _architecture(sections: dict[str, str]) -> str:
    text = _section(sections, "uname", "a machine name such as x86_64")
    if len(text.split()) != 1:
        raise _problem("uname", text, "a machine name such as x86_64")
    return text


def _os_release(sections: dict[str, str]) -> dict[str, str]:
    """KEY=value pairs of os-release(5), unquoted the way sh would."""
    text = _section(sections, "os-release", "the lines of /etc/os-release")
    fields = {}
    for line in text.splitlines():
        key, equals, value = line.strip().partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue  # blank lines and comments
        try:
            words = shlex.split(value, comments=True)
        except ValueError:
            raise _problem("os-release", line, "KEY=value lines with balanced quotes") from None
        fields[key] = " ".join(words)
    if not fields:
        raise _problem("os-release", text, "KEY=value lines such as ID=debian")
    return fields


def _throttled_bits(sections: dict[str, str]) -> int | None:
    """vcgencmd's "throttled=0x50005" or the firmware driver's "50005"; None off a Pi."""
    text = sections.get("throttled", "")
    if not text:
        return None
    match = re.fullmatch(r"(?:throttled=)?(?:0x)?([0-9a-fA-F]+)", text)
    if not match:
        raise _problem("throttled", text, "'throttled=0x50005' (vcgencmd) or '50005' (sysfs)")
    return int(match[1], 16)


def _thermal(sections: dict[str, str]) -> dict:
    """The SoC's temperature: the first zone named for the CPU or SoC, else the first zone."""
    zones = [tuple(line.strip().rsplit(" ", 1)) for line in sections.get("thermal", "").splitlines()
             if re.fullmatch(r"\S+ -?\d+", line.strip())]
    if not zones:
        return {}
    zone, millidegrees = next((z for z in zones if re.search(r"cpu|soc|pkg", z[0], re.I)), zones[0])
    return {"temperature_c": int(millidegrees) / 1000, "thermal_zone": zone}


def _root(sections: dict[str, str]) -> dict:
    """The root filesystem's device, what kind it is, and its size and free space."""
    found: dict = {}
    path = card = ""
    for line in sections.get("root", "").splitlines():
        fields = line.split()
        if fields[:1] == ["device"] and len(fields) == 2:
            path = fields[1]
        elif fields[:1] == ["type"] and len(fields) == 2:
            card = fields[1]  # an SD card's or eMMC's own word for itself: SD, MMC
        elif len(fields) >= 6 and fields[-1] == "/" and fields[-5].isdigit() and fields[-3].isdigit():  # df -P
            found["root_size_mb"], found["root_free_mb"] = int(fields[-5]) // 1024, int(fields[-3]) // 1024
    if path:
        found["root_device"] = path.rsplit("/", 1)[-1]
        found["root_kind"] = _device_kind(found["root_device"], path, card)
    return found


def _device_kind(name: str, path: str, card: str) -> str:
    """What a block device is, in the words people use: SD card, eMMC, NVMe SSD, USB drive."""
    if name.startswith("mmcblk"):
        return "eMMC" if card == "MMC" else "SD card"
    if name.startswith("nvme"):
        return "NVMe SSD"
    if name.startswith("sd"):
        return "USB drive" if "/usb" in path else "SATA/SCSI disk"
    if name.startswith(("vd", "xvd")):
        return "virtual disk"
    return ""


def _load(sections: dict[str, str]) -> tuple[float, float, float] | None:
    found = re.match(r"([\d.]+) ([\d.]+) ([\d.]+) ", sections.get("loadavg", ""))
    return (float(found[1]), float(found[2]), float(found[3])) if found else None


def _swaps(sections: dict[str, str]) -> tuple[Swap, ...] | None:
    """/proc/swaps: name, type, size and used (KiB); zram devices named as such."""
    text = sections.get("swaps", "")
    if not text.startswith("Filename"):
        return None
    swaps = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
            kind = "zram" if "/zram" in fields[0] else fields[1]
            swaps.append(Swap(fields[0], kind, int(fields[2]) // 1024, int(fields[3]) // 1024))
    return tuple(swaps)


def _can_build(text: str) -> bool:
    """A C compiler's path and a Python.h among the lines."""
    paths = [line.strip() for line in text.splitlines() if line.strip().startswith("/")]
    return any(p.endswith("/Python.h") for p in paths) and any(not p.endswith("/Python.h") for p in paths)


def _version(sections: dict[str, str], name: str, pattern: str,
             example: str) -> tuple[int, ...] | None:
    """The version the section's pattern finds, or None when the section is empty."""
    text = sections.get(name)
    if not text:
        return None
    match = re.search(pattern, text)
    if not match:
        raise _problem(name, text, f"a line like {example!r}")
    return tuple(int(part) for part in match[1].split("."))
