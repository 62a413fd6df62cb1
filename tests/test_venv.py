"""The app's Python environment on a target (deploy/venv.py) with the fake target: Debian's packages in
place of pip's, extra indexes, and the refusal before pip on a 32-bit board with no wheels and no
compiler. tests/test_pi32.py does the same on a real armhf host."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy.context import DeployError
from deploy.requirements import (Requirements, build_failure_hint, debian_package, leave_out, no_wheels_message,
                                 parse_python_projects)
from deploy.venv import ensure_venv
from tests.fake import fake_context

LOCK = ("# requirements.lock for `pip install -r`, made by modelhost\nflask==3.1.3\nnumpy==2.4.6\nscipy==1.17.1\n"
        "gensim==4.4.0\nmarkupsafe==3.0.4\njieba==0.42.1\n")


def source(text: str = LOCK):
    return SimpleNamespace(requirements=Requirements(Path("requirements.lock"), text, (), ()))


def on(settings: dict | None = None, machine: str = "armv7l", can_build: bool = False):
    ctx, target = fake_context(settings)
    ctx.__dict__["facts"] = replace(ctx.facts, architecture=machine, can_build=can_build, python_version=(3, 11, 2))
    return ctx, target


def written(ctx, target) -> str:
    venv = ctx.layout.venvs / ctx.steps[-1].detail.split("/venvs/")[1].split(" ")[0]
    return target.files[venv / "requirements.txt"]


DEBIAN = ("python3-numpy numpy-1.24.2\npython3-scipy scipy-1.10.1\npython3-gensim gensim-4.3.0\n"
          "python3-gensim smart_open-6.3.0\n")


def test_debians_packages_are_seen_by_the_venv_and_left_out_of_pips_requirements():
    ctx, target = on({"python": {"system_packages": ["python3-numpy", "python3-scipy", "python3-gensim"]}},
                     machine="armv7l", can_build=True)
    target.answer(r"dpkg-query -L", DEBIAN)
    ensure_venv(ctx, source())
    assert target.ran(r"-m venv --system-site-packages .*/venvs/")
    text = written(ctx, target)
    assert "numpy" not in text and "scipy" not in text and "gensim" not in text and "flask==3.1.3" in text
    assert ctx.steps[-1].detail.endswith("; from Debian: numpy 1.24.2 (python3-numpy), scipy 1.10.1 (python3-scipy), "
                                         "gensim 4.3.0 (python3-gensim))")


def test_a_debian_package_that_is_not_installed_is_named_with_how_to_install_it():
    ctx, target = on({"python": {"system_packages": ["python3-numpy", "python3-gensim"]}})
    ctx.layout = replace(ctx.layout, needs_provision=True)
    target.answer(r"dpkg-query -L", "python3-numpy numpy-1.24.2\npython3-gensim -\n")
    with pytest.raises(DeployError, match=r"python3-gensim \(\[python\] system_packages\) not installed on fake: "
                                          r"run fab provision, which installs \[python\] system_packages"):
        ensure_venv(ctx, source())
    assert not target.ran("pip")


def test_extra_indexes_come_first_in_pips_requirements():
    ctx, target = on({"python": {"extra_index_urls": ["https://www.piwheels.org/simple"]}}, can_build=True)
    ensure_venv(ctx, source())
    assert written(ctx, target).startswith("--extra-index-url https://www.piwheels.org/simple\n# requirements.lock")


def test_a_32_bit_board_without_a_compiler_stops_before_pip_naming_each_package_with_c_code():
    ctx, target = on(machine="armv7l", can_build=False)
    missing = iter(["numpy==2.4.6", "scipy==1.17.1", "gensim==4.4.0", "markupsafe==3.0.4", "jieba==0.42.1"])

    def dry_run(argv, command):  # the fake's own answer: each round, the next package without a wheel
        if "--platform" in argv:  # jieba has no wheel for any machine: pure Python, pip builds it
            asked = target.files[Path(argv[-1])]
            return ("", "", 1) if "jieba" in asked else ("", "", 0)
        name = next(missing, None)
        return ("", f"ERROR: No matching distribution found for {name}\n", 1) if name else ("", "", 0)
    target.respond(r"pip install --quiet --disable-pip-version-check --dry-run", dry_run)
    with pytest.raises(DeployError) as error:
        ensure_venv(ctx, source())
    message = str(error.value)
    assert message.startswith("fake (armv7l) cannot install numpy==2.4.6, scipy==1.17.1, gensim==4.4.0, "
                              "markupsafe==3.0.4 from requirements.lock: ")
    assert "jieba" not in message and "Nothing was installed" in message
    assert '[python] system_packages = ["python3-numpy", "python3-scipy", "python3-gensim", "python3-markupsafe"]' \
        in message and 'extra_index_urls = ["https://www.piwheels.org/simple"]' in message
    assert not target.ran(r"pip install --quiet --disable-pip-version-check -r")  # pip never installed a thing
    assert target.ran(r"^rm -rf -- .*/venvs/")


@pytest.mark.parametrize("machine, can_build", [("aarch64", False), ("x86_64", False), ("armv7l", True)])
def test_machines_with_wheels_or_a_compiler_go_straight_to_pip(machine, can_build):
    ctx, target = on(machine=machine, can_build=can_build)
    ensure_venv(ctx, source())
    assert not target.ran("--dry-run") and target.ran(r"pip install --quiet --disable-pip-version-check -r")


@pytest.mark.parametrize("output, names", [
    ("  ERROR: Failed building wheel for numpy\nFailed to build numpy scipy\nERROR: Could not build wheels for numpy, "
     "scipy, which is required to install pyproject.toml-based projects\n", "numpy, scipy"),  # pip 23
    ("ERROR: Failed to build installable wheels for some pyproject.toml based projects (pyfoo)\n", "pyfoo"),  # pip 24
    ("error: metadata-generation-failed\n", "a package"),  # a build that failed while pip read its metadata
])
def test_pips_build_failures_are_named_in_each_of_its_wordings(output, names):
    assert build_failure_hint(output).startswith(f"pip had to build {names} from source and could not")


def test_other_pip_failures_get_no_build_hint():
    assert build_failure_hint("ERROR: No matching distribution found for flask==99\n") == ""


def test_a_failed_build_inside_pip_says_what_to_do():
    ctx, target = on(machine="x86_64")
    target.answer(r"pip install --quiet --disable-pip-version-check -r", "", 1,
                  "error: subprocess-exited-with-error\n  ERROR: Failed building wheel for pyfoo\n"
                  "Failed to build pyfoo\n")
    with pytest.raises(DeployError, match=r"pip had to build pyfoo from source and could not: .*extra_index_urls"):
        ensure_venv(ctx, source())


def test_debian_names_and_projects():
    assert [debian_package(n) for n in ("numpy", "scikit_learn", "PyYAML")] == \
        ["python3-numpy", "python3-sklearn", "python3-yaml"]
    assert parse_python_projects(DEBIAN + "python3-foo -\n") == (
        {"numpy": ("1.24.2", "python3-numpy"), "scipy": ("1.10.1", "python3-scipy"),
         "gensim": ("4.3.0", "python3-gensim"), "smart-open": ("6.3.0", "python3-gensim")}, ["python3-foo"])
    text, left = leave_out("--extra-index-url x\nNumPy==2.4.6 ; python_version > '3'\nflask==3.1.3\n", {"numpy"})
    assert (text, left) == ("--extra-index-url x\nflask==3.1.3\n", ["NumPy==2.4.6 ; python_version > '3'"])
    assert "cannot install numpy==2 from requirements.txt" in no_wheels_message("pi", "armv7l", ["numpy==2"],
                                                                                 "requirements.txt")
