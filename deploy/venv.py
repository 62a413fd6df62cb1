"""The app's Python environment on the target: one virtualenv per set of requirements (and Python,
machine, indexes and Debian packages), made again only when one of them changes.

pip runs with the host's own configuration (/etc/pip.conf: Raspberry Pi OS names piwheels there),
plus the indexes of [python] extra_index_urls. [python] system_packages lets the environment see
Debian's builds of the heavy libraries; pip then leaves out the requirements they provide.

On a machine PyPI has few wheels for (32-bit ARM, ...) and with no compiler, the requirements are
checked before pip installs anything: a package with C code and no wheel for this machine stops the
deploy, named, with the ways out, instead of a compiler error from deep inside pip.
"""
from __future__ import annotations

from deploy import commands
from deploy.context import Context, DeployError
from deploy.requirements import (NO_DISTRIBUTION, build_failure_hint, leave_out, no_wheels_message, options_of,
                                 parse_python_projects, requirement_name, with_indexes)
from deploy.source import Source, digest
from deploy.target import CommandFailed

# Wheels built for these machines show that a project has C code (checked when none fits this one).
OTHER_MACHINES = "manylinux_2_28_x86_64"


def ensure_venv(ctx: Context, source: Source) -> str:
    """A Python environment for the app's dependencies; reused while they (and Python) stay the same."""
    requirements, python_settings = source.requirements, ctx.settings.python
    system, indexes = list(python_settings.system_packages), list(python_settings.extra_index_urls)
    # The [python] settings join the key only when set: environments made before they existed stay valid.
    key = digest(requirements.text, ctx.facts.python_version, ctx.facts.architecture,
                 *((indexes, system) if system or indexes else ()))
    venv = ctx.layout.venvs / key
    done = venv / ".complete"
    name = requirements.file.name
    with ctx.step("python") as step:
        step.detail = f"{venv} ({name} unchanged, pip skipped)"
        if ctx.exists(done):
            return key
        text, from_debian = requirements.text, ""
        if system:
            provided = debian_projects(ctx, system)
            text, left_out = leave_out(text, provided)
            from_debian = "; from Debian: " + ", ".join(
                f"{project} {version} ({package})" for project, (version, package) in provided.items()
                if any(requirement_name(line) == project for line in left_out))
        text = with_indexes(text, indexes)
        # Made in its final place (a venv's scripts name their path), finished when .complete exists.
        ctx.run(commands.remove(venv))
        try:
            ctx.run(commands.make_venv(ctx.python, venv, system_site_packages=bool(system)))
        except CommandFailed as exc:
            raise DeployError(f"cannot make a Python environment on {ctx.target.name}: {exc}\n"
                              "install python3-venv (apt-get install python3-venv) and deploy again") from None
        ctx.target.write(venv / "requirements.txt", text)
        if ctx.facts.wheels_sparse and not ctx.facts.can_build:
            check_wheels(ctx, venv, text, name)
        try:
            ctx.run(commands.pip_install(venv, venv / "requirements.txt"), timeout=1800)
        except CommandFailed as exc:
            hint = build_failure_hint(exc.output)
            raise DeployError(f"pip could not install the app's dependencies ({name}) on {ctx.target.name}: "
                              f"{exc}\n{hint or f'fix {name} and deploy again'}") from None
        ctx.run(commands.touch(done))
        step.changed = True
        added = f", and {', '.join(requirements.added)}" if requirements.added else ""
        step.detail = f"{venv} (installed {name}{added}{from_debian})"
    return key


def debian_projects(ctx: Context, packages: list[str]) -> dict[str, tuple[str, str]]:
    """The Python projects [python] system_packages provide: {project: (version, package)}."""
    provided, missing = parse_python_projects(ctx.run(commands.python_projects(packages)).stdout)
    if missing:
        how = ("run fab provision, which installs [python] system_packages" if ctx.layout.needs_provision else
               f"install them: sudo apt-get install -y {' '.join(missing)}")
        raise DeployError(f"{', '.join(missing)} ([python] system_packages) not installed on {ctx.target.name}: "
                          f"{how}, then deploy again")
    return provided


def check_wheels(ctx: Context, venv, text: str, file_name: str) -> None:
    """Stop before pip when a requirement with C code has no wheel for this machine (nothing here can build
    it). Requirements with no wheel for any machine (pure Python, source only) are left to pip."""
    lines, missing = text.splitlines(), []
    probe = venv / "wheels-check.txt"
    for _ in range(len(lines)):  # one requirement without a wheel found per round
        ctx.target.write(probe, "\n".join(lines) + "\n")
        result = ctx.run(commands.pip_wheels_only(venv, probe), check=False, timeout=900)
        found = NO_DISTRIBUTION.search(result.stdout + result.stderr)
        name = requirement_name(found.group(1)) if result.exited and found else ""
        if not name:
            break  # all have wheels, or another problem that pip install will name
        missing += [line for line in lines if requirement_name(line) == name]
        lines = [line for line in lines if requirement_name(line) != name]
    python_version = ".".join(map(str, ctx.facts.python_version[:2]))
    compiled = []
    for requirement in missing:
        ctx.target.write(probe, options_of(text) + requirement + "\n")
        elsewhere = ctx.run(commands.pip_wheels_only(venv, probe, OTHER_MACHINES, python_version), check=False,
                            timeout=900)
        if elsewhere.exited == 0:
            compiled.append(requirement)
    ctx.run(commands.remove(probe))
    if compiled:
        ctx.run(commands.remove(venv))
        raise DeployError(no_wheels_message(ctx.target.name, ctx.facts.architecture, compiled, file_name))
