"""Host facts: parsing captured outputs, cgroup caps, errors, and the command run for real."""
from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest

from deploy.facts import (FACTS_COMMAND, FactsError, Health, HostFacts, Swap, board_brief, health_lines, load_brief,
                          parse_facts)

DATA = Path(__file__).parent / "data" / "facts"
SECTION_NAMES = ["nproc", "online", "cpu.max", "meminfo", "memory.max", "uname", "os-release",
                 "init", "nginx", "python3", "board", "throttled", "thermal", "root", "swaps", "loadavg", "build"]

CAPTURED = {
    "debian-12-amd64.txt": HostFacts(
        cores=2, cpus_online=2, memory_total_mb=24105, memory_available_mb=23784,
        architecture="x86_64", os_id="debian", os_version="12",
        os_name="Debian GNU/Linux 12 (bookworm)", init="process_api",
        nginx_version=(1, 22, 1), python_version=(3, 11, 2), board=None),
    "ubuntu-24.04-amd64.txt": HostFacts(
        cores=2, cpus_online=2, memory_total_mb=1967, memory_available_mb=1550,
        architecture="x86_64", os_id="ubuntu", os_version="24.04", os_name="Ubuntu 24.04.1 LTS",
        init="systemd", nginx_version=(1, 24, 0), python_version=(3, 12, 3), board=None,
        health=Health(root_device="vda1", root_kind="virtual disk", root_size_mb=49433, root_free_mb=39772, swap=())),
    "raspios-bookworm-arm64.txt": HostFacts(
        cores=4, cpus_online=4, memory_total_mb=3791, memory_available_mb=3272,
        architecture="aarch64", os_id="debian", os_version="12",
        os_name="Debian GNU/Linux 12 (bookworm)", init="systemd",
        nginx_version=(1, 22, 1), python_version=(3, 11, 2),
        board="Raspberry Pi 4 Model B Rev 1.4",
        health=Health(throttled=0, temperature_c=48.686, thermal_zone="cpu-thermal", root_device="mmcblk0p2",
                      root_kind="SD card", root_size_mb=29646, root_free_mb=24335,
                      swap=(Swap("/var/swap", "file", 99, 0),))),
    "raspios-bookworm-armhf.txt": HostFacts(
        cores=4, cpus_online=4, memory_total_mb=923, memory_available_mb=685,
        architecture="armv7l", os_id="raspbian", os_version="12",
        os_name="Raspbian GNU/Linux 12 (bookworm)", init="systemd",
        nginx_version=None, python_version=(3, 11, 2),
        board="Raspberry Pi 3 Model B Plus Rev 1.3",
        health=Health(throttled=0x50005, temperature_c=61.224, thermal_zone="cpu-thermal", root_device="sda2",
                      root_kind="USB drive", root_size_mb=59819, root_free_mb=53376,
                      swap=(Swap("/var/swap", "file", 99, 50),))),
}

# A small made-up host: 4 cpus, MemTotal 4000 MiB, MemAvailable 3000 MiB.
BASE = {
    "nproc": "4",
    "online": "4",
    "cpu.max": "",
    "meminfo": "MemTotal:        4096000 kB\nMemFree:         2048000 kB\n"
               "MemAvailable:    3072000 kB\nBuffers:           10240 kB",
    "memory.max": "",
    "uname": "aarch64",
    "os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nID=debian',
    "init": "systemd",
    "nginx": "nginx version: nginx/1.22.1",
    "python3": "Python 3.11.2",
    "board": "Raspberry Pi 4 Model B Rev 1.4",
}


def output(changes: dict[str, str | None] | None = None) -> str:
    """FACTS_COMMAND-style output of BASE with some sections changed; None leaves one out."""
    sections = {**BASE, **(changes or {})}
    return "".join(f"\n### {name}\n{text}\n" for name, text in sections.items() if text is not None)


def run_facts(*argv_prefix: str, **kwargs) -> subprocess.CompletedProcess:
    """FACTS_COMMAND run on this machine through argv_prefix + [FACTS_COMMAND]."""
    return subprocess.run([*argv_prefix, FACTS_COMMAND], capture_output=True, text=True,
                          timeout=30, check=False, **kwargs)


def meminfo_kb(name: str) -> int:
    return int(re.search(rf"^{name}:\s+(\d+) kB$", Path("/proc/meminfo").read_text(), re.M)[1])


def cgroup_file(name: str) -> str:
    path = Path("/sys/fs/cgroup") / name
    return path.read_text().strip() if path.exists() else ""


# Parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", CAPTURED.items(), ids=list(CAPTURED))
def test_captured_output_parses_to_its_host(name, expected):
    assert parse_facts((DATA / name).read_text()) == expected


@pytest.mark.parametrize("name, line", [
    ("debian-12-amd64.txt", "2 cores, 23.5 GiB RAM (23.2 GiB available),"
     " Debian GNU/Linux 12 (bookworm), x86_64, no systemd (PID 1 is process_api)"),
    ("ubuntu-24.04-amd64.txt", "2 cores, 1.9 GiB RAM (1.5 GiB available), Ubuntu 24.04.1 LTS,"
     " x86_64"),
    ("raspios-bookworm-arm64.txt", "Raspberry Pi 4 Model B Rev 1.4, 4 cores, 3.7 GiB RAM"
     " (3.2 GiB available), Debian GNU/Linux 12 (bookworm), aarch64"),
    ("raspios-bookworm-armhf.txt", "Raspberry Pi 3 Model B Plus Rev 1.3, 4 cores, 923 MiB RAM"
     " (685 MiB available), Raspbian GNU/Linux 12 (bookworm), armv7l"),
])
def test_describe_is_one_line_for_humans(name, line):
    assert CAPTURED[name].describe() == line


@pytest.mark.parametrize("name, lines", [
    ("raspios-bookworm-arm64.txt", [
        ("power", "no under-voltage or throttling since boot (get_throttled 0x0)"),
        ("temperature", "48.7 °C (cpu-thermal)"),
        ("storage", "/ on SD card mmcblk0p2: 23.8 GiB free of 29.0 GiB"),
        ("swap", "/var/swap (file) 99 MiB, 0 MiB used")]),
    ("raspios-bookworm-armhf.txt", [
        ("power", "now: under-voltage, throttled; since boot: under-voltage, throttled (get_throttled 0x50005); "
                  "under-voltage slows the board and corrupts SD cards: use the board's own power supply "
                  "(5 V 3 A for a Pi 4, 5 A for a Pi 5) and a short cable; too hot: give it a heatsink or a fan, "
                  "or more air"),
        ("temperature", "61.2 °C (cpu-thermal)"),
        ("storage", "/ on USB drive sda2: 52.1 GiB free of 58.4 GiB"),
        ("swap", "/var/swap (file) 99 MiB, 50 MiB used")]),
    # A VPS reports no board, no temperature; the older capture of this machine has none of it.
    ("ubuntu-24.04-amd64.txt", [("storage", "/ on virtual disk vda1: 38.8 GiB free of 48.3 GiB"), ("swap", "none")]),
    ("debian-12-amd64.txt", []),
])
def test_status_shows_what_the_board_reports_about_its_health_and_nothing_else(name, lines):
    assert health_lines(parse_facts((DATA / name).read_text()).health) == lines


@pytest.mark.parametrize("text, bits, says", [
    ("throttled=0x0", 0, "no under-voltage or throttling since boot"),
    ("0", 0, "no under-voltage or throttling since boot"),
    ("throttled=0x10000", 0x10000, "since boot: under-voltage (get_throttled 0x10000); under-voltage slows"),
    ("80008", 0x80008, "now: soft temperature limit; since boot: soft temperature limit (get_throttled 0x80008); "
                       "too hot"),
    ("throttled=0x20002", 0x20002, "now: ARM frequency capped; since boot: ARM frequency capped"),
    ("throttled=0x100000", 0x100000, "no under-voltage or throttling since boot (get_throttled 0x100000)"),
])
def test_the_firmwares_throttling_bits_are_read_from_vcgencmd_or_sysfs_and_said_in_words(text, bits, says):
    health = parse_facts(output({"throttled": text})).health
    assert health.throttled == bits and says in health_lines(health)[0][1]


def test_unreadable_throttling_bits_say_what_was_expected():
    with pytest.raises(FactsError, match="section 'throttled': expected 'throttled=0x50005'"):
        parse_facts(output({"throttled": "VCHI initialization failed"}))


@pytest.mark.parametrize("root, kind", [
    ("device /sys/devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0/mmcblk0p2\ntype MMC",
     "eMMC"),  # a Compute Module's eMMC is an mmcblk too
    ("device /sys/devices/platform/axi/1000110000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/nvme/nvme0/nvme0n1/"
     "nvme0n1p2\ntype ", "NVMe SSD"),
    ("device /sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda1\ntype ",
     "SATA/SCSI disk"),
    ("device /sys/devices/virtual/block/dm-0\ntype ", ""),
])
def test_the_root_device_is_named_as_people_know_it(root, kind):
    health = parse_facts(output({"root": root + "\n/dev/x 1048576 0 524288 0% /"})).health
    assert (health.root_kind, health.root_size_mb, health.root_free_mb) == (kind, 1024, 512)


@pytest.mark.parametrize("build, can", [
    ("/usr/bin/cc\n/usr/include/python3.11/Python.h", True),
    ("/usr/bin/cc\n/usr/include/python3.11/Python.h\n/usr/include/python3.12/Python.h", True),
    ("/usr/include/python3.11/Python.h", False),  # headers, no compiler
    ("/usr/bin/cc", False),  # a compiler, no python3-dev
    ("", False),
])
def test_a_host_can_build_c_extensions_with_a_compiler_and_pythons_headers(build, can):
    assert parse_facts(output({"build": build})).can_build is can


def test_zram_swap_is_named_zram_and_the_soc_zone_is_preferred_for_the_temperature():
    health = parse_facts(output({
        "swaps": "Filename Type Size Used Priority\n/dev/zram0 partition 2097148 1024 100",
        "thermal": "acpitz 27800\nx86_pkg_temp 51000"})).health
    assert health.swap == (Swap("/dev/zram0", "zram", 2047, 1),)
    assert (health.temperature_c, health.thermal_zone) == (51.0, "x86_pkg_temp")


@pytest.mark.parametrize("changes, cores, online, line", [
    ({"nproc": "1"}, 1, 4, "1 of 4 cores"),
    ({"nproc": "1", "online": "1"}, 1, 1, "1 core,"),
    ({"cpu.max": "150000 100000"}, 2, 4, "2 of 4 cores"),
])
def test_describe_says_how_many_cores_are_usable(changes, cores, online, line):
    facts = parse_facts(output(changes))
    assert (facts.cores, facts.cpus_online) == (cores, online)
    assert line in facts.describe()


def test_base_output_parses_with_nothing_capped():
    assert parse_facts(output()) == HostFacts(
        cores=4, cpus_online=4, memory_total_mb=4000, memory_available_mb=3000,
        architecture="aarch64", os_id="debian", os_version="12",
        os_name="Debian GNU/Linux 12 (bookworm)", init="systemd", nginx_version=(1, 22, 1),
        python_version=(3, 11, 2), board="Raspberry Pi 4 Model B Rev 1.4")


@pytest.mark.parametrize("cpu_max, nproc, cores", [
    ("max 100000", "4", 4),
    ("150000 100000", "4", 2),  # 1.5 CPUs of time: round up
    ("200000 100000", "4", 2),
    ("50000 100000", "4", 1),  # half a CPU still runs one worker
    ("800000 100000", "4", 4),  # a quota above the affinity mask does not add cores
    ("150000 100000", "1", 1),
])
def test_cgroup_cpu_quota_caps_usable_cores(cpu_max, nproc, cores):
    facts = parse_facts(output({"cpu.max": cpu_max, "nproc": nproc}))
    assert facts.cores == cores
    assert facts.cpus_online == 4


@pytest.mark.parametrize("memory_max, total, available", [
    ("max", 4000, 3000),
    (str(1024 * 1024 * 1024), 1024, 1024),  # 1 GiB limit below MemAvailable caps both
    (str(3500 * 1024 * 1024), 3500, 3000),  # between the two: caps total only
    (str(8 * 1024 ** 3), 4000, 3000),  # above MemTotal: no effect
])
def test_cgroup_memory_limit_caps_total_and_available(memory_max, total, available):
    facts = parse_facts(output({"memory.max": memory_max}))
    assert (facts.memory_total_mb, facts.memory_available_mb) == (total, available)


@pytest.mark.parametrize("changes, field, value", [
    ({"nginx": None}, "nginx_version", None),
    ({"nginx": ""}, "nginx_version", None),
    ({"python3": None}, "python_version", None),
    ({"python3": ""}, "python_version", None),
    ({"board": None}, "board", None),
    ({"board": ""}, "board", None),
    ({"cpu.max": None}, "cores", 4),
    ({"memory.max": None}, "memory_available_mb", 3000),
    ({"init": ""}, "init", ""),
])
def test_missing_optional_section_gives_none_or_no_cap(changes, field, value):
    assert getattr(parse_facts(output(changes)), field) == value


@pytest.mark.parametrize("changes, field, value", [
    ({"nginx": "nginx version: nginx/1.24.0 (Ubuntu)"}, "nginx_version", (1, 24, 0)),
    ({"nginx": "nginx version: openresty/1.21.4.1"}, "nginx_version", (1, 21, 4, 1)),
    ({"python3": "Python 3.13.0rc1"}, "python_version", (3, 13, 0)),
    ({"init": "sh"}, "init", "sh"),
    ({"os-release": "ID=debian\nPRETTY_NAME='Debian GNU/Linux trixie/sid'"}, "os_version", ""),
    ({"os-release": 'PRETTY_NAME="Debian GNU/Linux trixie/sid"\nID=debian'},
     "os_name", "Debian GNU/Linux trixie/sid"),
    ({"os-release": "# comment\n\nPRETTY_NAME=\"It's \\\"quoted\\\"\"\nID=x"},
     "os_name", 'It\'s "quoted"'),
    ({"os-release": "NAME=Something"}, "os_id", "linux"),  # os-release(5) default
    ({"uname": "  armv7l  "}, "architecture", "armv7l"),
])
def test_section_values_are_read_as_their_tools_print_them(changes, field, value):
    assert getattr(parse_facts(output(changes)), field) == value


def test_extra_whitespace_unknown_sections_and_leading_noise_are_ignored():
    noisy = ("Welcome to the host!\n"
             + output().replace("\n### ", "\n\n  ### ").replace("\n", "  \n")
             + "### future-section\nwhatever\n")
    assert parse_facts(noisy) == parse_facts(output())


def test_board_model_without_trailing_newline_still_ends_at_the_next_section():
    text = output().replace("\n### board\nRaspberry Pi 4 Model B Rev 1.4\n",
                            "\n### board\nRaspberry Pi 4 Model B Rev 1.4")
    assert parse_facts(text).board == "Raspberry Pi 4 Model B Rev 1.4"


@pytest.mark.parametrize("section", ["nproc", "online", "meminfo", "uname", "os-release"])
@pytest.mark.parametrize("text", [None, ""], ids=["no header", "empty"])
def test_missing_essential_section_raises_naming_it(section, text):
    with pytest.raises(FactsError, match=f"'(### )?{re.escape(section)}'"):
        parse_facts(output({section: text}))


@pytest.mark.parametrize("changes, message", [
    ({"nproc": "lots"}, r"section 'nproc': expected a number of CPUs, got 'lots'; run `nproc`"),
    ({"online": "0"}, r"section 'online': expected a number of CPUs, got '0'"),
    ({"cpu.max": "1.5"}, r"section 'cpu.max': expected 'max PERIOD' or 'QUOTA PERIOD'"),
    ({"memory.max": "2G"}, r"section 'memory.max': expected 'max' or a number of bytes, got '2G'"),
    ({"meminfo": "MemFree: 1 kB\nMemAvailable: 2 kB"}, r"section 'meminfo':.*MemTotal"),
    ({"meminfo": "MemTotal: 1024000 kB\nMemFree: 512000 kB"},
     r"section 'meminfo': expected a MemAvailable line \(Linux 3.14 or newer"),
    ({"uname": "Linux host 6.1.0"}, r"section 'uname': expected a machine name"),
    ({"os-release": "cat: /etc/os-release: Permission denied"},
     r"section 'os-release': expected KEY=value lines"),
    ({"os-release": 'ID=debian\nPRETTY_NAME="unterminated'}, r"section 'os-release':.*balanced"),
    ({"nginx": "nginx: error while loading shared libraries: libpcre2-8.so.0"},
     r"section 'nginx': expected a line like 'nginx version: nginx/1.22.1', got 'nginx: error"),
    ({"python3": "pyenv: python3: command not found"}, r"section 'python3':.*'Python 3.11.2'"),
])
def test_unreadable_section_raises_showing_section_text_and_what_to_run(changes, message):
    with pytest.raises(FactsError, match=message):
        parse_facts(output(changes))


def test_long_offending_text_is_shortened_in_the_message():
    with pytest.raises(FactsError) as error:
        parse_facts(output({"uname": "x " * 500}))
    assert len(str(error.value)) < 300
    assert "..." in str(error.value)


def test_output_without_headers_says_where_it_should_come_from():
    with pytest.raises(FactsError, match="no '### nproc' section.*FACTS_COMMAND"):
        parse_facts("sh: 1: Syntax error: end of file unexpected\n")


# The command on this machine -----------------------------------------------------------------

def expected_cores() -> int:
    cores = len(os.sched_getaffinity(0))
    quota, _, period = cgroup_file("cpu.max").partition(" ")
    if quota and quota != "max":
        cores = min(cores, math.ceil(int(quota) / int(period)))
    return cores


def expected_total_mb() -> int:
    total = meminfo_kb("MemTotal") // 1024
    limit = cgroup_file("memory.max")
    return min(total, int(limit) // 2**20) if limit not in ("", "max") else total


SHELLS = [["/bin/sh", "-c"], ["/bin/dash", "-eu", "-c"], ["/bin/bash", "--posix", "-eu", "-c"]]


@pytest.mark.parametrize("shell", SHELLS, ids=" ".join)
def test_command_runs_cleanly_in_posix_shells_and_prints_every_section(shell):
    if not Path(shell[0]).exists():
        pytest.skip(f"{shell[0]} is not installed")
    result = run_facts(*shell)
    assert (result.returncode, result.stderr) == (0, "")
    assert re.findall(r"^### (\S+)$", result.stdout, re.M) == SECTION_NAMES


def test_command_on_this_machine_matches_what_python_sees():
    facts = parse_facts(run_facts("/bin/sh", "-c").stdout)
    assert facts.cores == expected_cores()
    assert facts.cpus_online == os.sysconf("SC_NPROCESSORS_ONLN")
    assert facts.memory_total_mb == expected_total_mb()
    assert facts.architecture == os.uname().machine
    assert facts.systemd == Path("/run/systemd/system").is_dir()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to restrict one")
def test_cores_follow_the_affinity_mask_not_the_online_count():
    one_cpu = {min(os.sched_getaffinity(0))}
    facts = parse_facts(run_facts("/bin/sh", "-c",
                                  preexec_fn=lambda: os.sched_setaffinity(0, one_cpu)).stdout)
    assert (facts.cores, facts.cpus_online) == (1, os.sysconf("SC_NPROCESSORS_ONLN"))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell 1 apart")
def test_cores_ignore_openmp_variables_that_nproc_would_obey():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_THREAD_LIMIT": "1"}
    assert parse_facts(run_facts("/bin/sh", "-c", env=env).stdout).cores == expected_cores()


def test_command_works_without_sbin_on_path_and_still_finds_nginx():
    result = run_facts("env", "-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c")
    assert (result.returncode, result.stderr) == (0, "")
    facts = parse_facts(result.stdout)
    assert facts.memory_total_mb == expected_total_mb()
    if not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed in /usr/sbin: cannot check it is found there")
    nginx = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True, check=True)
    version = re.search(r"nginx/([\d.]+)", nginx.stderr)[1]
    assert facts.nginx_version == tuple(int(part) for part in version.split("."))


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged: the other tests cover it")
def test_command_works_as_an_unprivileged_user():
    result = run_facts("env", "-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c",
                       user=65534, group=65534, extra_groups=[])
    assert (result.returncode, result.stderr) == (0, "")
    assert parse_facts(result.stdout).cores == expected_cores()


def test_command_reads_device_tree_and_cgroup_files_as_the_kernel_writes_them(tmp_path):
    """This machine has no device tree or cgroup v2 limits: point the command at files like them."""
    files = {
        "/proc/device-tree/model": b"Raspberry Pi 4 Model B Rev 1.4\x00",  # NUL-terminated
        "/sys/devices/platform/soc/soc:firmware/get_throttled": b"50000\n",  # hex, no 0x
        "/sys/class/thermal/thermal_zone*": None,  # a directory with type and temp
        "/sys/fs/cgroup/cpu.max": b"150000 100000\n",
        "/sys/fs/cgroup/memory.max": b"536870912\n",
    }
    command = FACTS_COMMAND
    for path, content in files.items():
        fake = tmp_path / Path(path).name
        if content is None:
            fake = tmp_path / "thermal_zone0"
            fake.mkdir()
            (fake / "type").write_text("cpu-thermal\n")
            (fake / "temp").write_text("47236\n")
            fake = tmp_path / "thermal_zone*"
        else:
            fake.write_bytes(content)
        assert path in command
        command = command.replace(path, str(fake))
    result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, check=True)
    facts = parse_facts(result.stdout.decode())
    assert facts.board == "Raspberry Pi 4 Model B Rev 1.4"
    assert (facts.health.throttled, facts.health.temperature_c) == (0x50000, 47.236)
    assert facts.cores == min(2, len(os.sched_getaffinity(0)))
    assert facts.memory_total_mb == min(512, meminfo_kb("MemTotal") // 1024)


def test_missing_commands_leave_sections_empty_without_stopping_the_others():
    result = run_facts("env", "-i", "PATH=/nonexistent", "/bin/sh", "-c")
    assert result.returncode == 0
    assert re.findall(r"^### (\S+)$", result.stdout, re.M) == SECTION_NAMES
    with pytest.raises(FactsError, match="section 'nproc'"):
        parse_facts(result.stdout)
    # Sections that need no command (shell builtins, the absolute nginx path) still filled in.
    init = result.stdout.split("### init\n")[1].split("\n###")[0].strip()
    assert init == ("systemd" if Path("/run/systemd/system").is_dir() else "")



@pytest.mark.parametrize("name, load, board", [
    ("raspios-bookworm-arm64.txt", "-", "49 °C; 23.8 GiB free"),
    ("raspios-bookworm-armhf.txt", "-", "61 °C; under-voltage, throttled; 52.1 GiB free"),
    ("ubuntu-24.04-amd64.txt", "-", "38.8 GiB free"),
    ("debian-12-amd64.txt", "-", "-"),
])
def test_the_fleet_table_says_load_and_board_health_in_a_few_words(name, load, board):
    facts = parse_facts((DATA / name).read_text())
    assert (load_brief(facts), board_brief(facts.health)) == (load, board)


def test_load_is_read_from_proc_loadavg():
    facts = parse_facts(output({"loadavg": "0.52 0.40 0.33 2/311 4711"}))
    assert facts.health.load == (0.52, 0.40, 0.33) and load_brief(facts) == "0.52 of 4 cores"
    assert ("load", "0.52 0.40 0.33 (1, 5, 15 minutes)") in health_lines(facts.health)
