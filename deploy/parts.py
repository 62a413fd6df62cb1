"""A release's parts, each an `ensure_*` step that looks first and changes only what is missing:
prerequisites, directories, secrets, the model, the Python environment, the release itself, its
release command; and prune, which removes what no kept release uses.

On the target (everything under the layout's root, but the data directory):

    releases/<time>-<rev>/   the app's files at a git revision; its instance folder and shared paths
                             are links into the data directory
      .modelhost/            the kit's entries, apart from the app's files: gunicorn.conf.py,
                             release.json, venv -> venvs/<key>, model -> models/<checksum>
    venvs/<key>/             one Python environment per dependency set (and Python, architecture)
    models/<checksum>/<name> one copy of each model (a file or a folder, under its own name)
    <data directory>/        the app's data (DATA_DIR), the same for every release: never pruned
"""
from __future__ import annotations

import json
import secrets
import shlex
from dataclasses import asdict
from pathlib import Path

from deploy import commands, state
from deploy.context import Context, DeployError, Step, now, release_time
from deploy.render import App, process_environment, render_gunicorn_conf, threads_of
from deploy.settings import KIT_DIR, MADE_UP_SECRETS
from deploy.source import Model, Source, digest
from deploy.state import Release


def ensure_prerequisites(ctx: Context) -> None:
    """A host is provisioned; the local target has python3 with venv, and nginx (installed with apt
    when root or passwordless sudo allows it)."""
    with ctx.step("prerequisites") as step:
        if ctx.layout.needs_provision:
            check_provisioned(ctx, step)
            return
        if ctx.run(commands.python_has_venv(ctx.python), check=False).exited != 0:
            raise DeployError(f"python3 with venv is missing on {ctx.target.name}: install it with "
                              "`sudo apt-get install -y python3-venv`, then deploy again")
        if not ctx.nginx.installed:
            install_nginx(ctx)
            step.changed = True
        installed = " (installed with apt)" if step.changed else ""
        step.detail = f"nginx {ctx.nginx.binary}{installed}, {ctx.python}"


def install_nginx(ctx: Context) -> None:
    if ctx.run(commands.user_id()).stdout.strip() == "0":
        sudo = False
    elif ctx.run(commands.passwordless_sudo(), check=False).exited == 0:
        sudo = True
    else:
        raise DeployError(f"nginx is not installed on {ctx.target.name}: install it with "
                          "`sudo apt-get install -y nginx`, then deploy again")
    if ctx.run(commands.apt_get("install", "nginx", sudo=sudo), check=False, timeout=900).exited != 0:
        ctx.run(commands.apt_get("update", sudo=sudo), timeout=900)
        ctx.run(commands.apt_get("install", "nginx", sudo=sudo), timeout=900)
    ctx.nginx.look_again()


def check_provisioned(ctx: Context, step: Step) -> None:
    """A host has what `fab provision` installs: the app's user, nginx, supervisor, python3 with venv."""
    ctx.programs.check()
    layout = ctx.layout
    missing = ctx.run(commands.missing_for_deploy(layout.user, ctx.python, layout.nginx_group,
                                                  layout.process_manager)).stdout.splitlines()
    if not ctx.nginx.installed:
        missing.append("nginx")
    if missing:
        raise DeployError(f"{ctx.target.name} is not provisioned ({', '.join(missing)} missing): run "
                          f"fab -H {ctx.target.name} provision, then deploy again")
    step.detail = f"provisioned: user {layout.user}, {ctx.nginx.binary}, {layout.process_manager}, {ctx.python}"


def ensure_directories(ctx: Context) -> None:
    layout = ctx.layout
    with ctx.step("directories") as step:
        made, fixed = commands.parse_ensure_directories(ctx.run(commands.ensure_directories(layout.directories)).stdout)
        step.changed = bool(made or fixed)
        step.detail = "; ".join(part for part in (
            f"made {len(made)} ({', '.join(made[:3])}{', ...' if len(made) > 3 else ''})" if made else "",
            f"set owner and mode of {', '.join(fixed)}" if fixed else "") if part) or (
            f"all there under {layout.host_root or layout.root}")


def crontab_with(current: str, lines: list[str], marker: str) -> str:
    """A crontab's text with the lines marked by marker replaced by lines; other lines as they are."""
    kept = [entry for entry in current.splitlines() if not entry.endswith(marker)]
    return "".join(f"{entry}\n" for entry in kept + lines)


def read_crontab(ctx: Context) -> str | None:
    """The deploying user's crontab ("" when there is none; None when cron is not installed)."""
    if ctx.run(commands.has_command("crontab"), check=False).exited != 0:
        return None
    return ctx.run(commands.crontab("-l"), check=False).stdout


def install_crontab(ctx: Context, text: str) -> None:
    """The user's crontab becomes text (staged in a file only the user reads)."""
    staged = ctx.layout.config_dir / ".crontab"
    ctx.target.write(staged, text, mode=0o600)
    ctx.run(commands.crontab(str(staged)))
    ctx.run(commands.remove(staged))


def ensure_start_at_boot(ctx: Context) -> None:
    """The local target's supervisord starts at boot ([local] start_at_boot): a crontab @reboot line
    of the user who deploys, marked with the target's root; taken away again when it is off."""
    layout, wanted = ctx.layout, ctx.settings.local.start_at_boot
    if not layout.supervisord_conf:
        return  # a host's services start at boot already (provision)
    marker = f"  # modelhost: {layout.host_root}"
    current = read_crontab(ctx)
    if not wanted and marker not in (current or ""):
        return
    with ctx.step("boot") as step:
        start = shlex.join(commands.supervisord_start(layout))
        if current is None:
            raise DeployError("[local] start_at_boot = true needs cron, which is not installed: sudo apt-get install "
                              f"cron (or start the target yourself at boot: {start})")
        line = f"@reboot {start}"
        text = crontab_with(current, [line + marker] if wanted else [], marker)
        step.detail = (f"supervisord starts at boot (your crontab: {line})" if wanted else
                       "supervisord no longer starts at boot (its line left your crontab)")
        if text != current:
            install_crontab(ctx, text)
            step.changed = True


def env_values(text: str) -> dict[str, str]:
    """The NAME=value lines of an env file."""
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def merge_secrets(current: str, names: list[str], environ: dict) -> tuple[str, list[str], list[str]]:
    """The env file's new text, the secrets made up for it, and those missing.

    A value comes from the environment `fab` runs in, else stays as it is in the file; a missing
    signing key (settings.MADE_UP_SECRETS) is made up (random); any other is missing. Lines of the
    file beyond the names are kept."""
    wanted, made, missing = env_values(current), [], []
    for name in names:
        if environ.get(name):
            wanted[name] = environ[name]
        elif not wanted.get(name):
            if name in MADE_UP_SECRETS:
                wanted[name] = secrets.token_hex(32)
                made.append(name)
            else:
                missing.append(name)
    return "".join(f"{name}={value}\n" for name, value in sorted(wanted.items())), made, missing


def ensure_secrets(ctx: Context, environ: dict) -> str:
    """The env file holds a value for every secret; returns a digest of it (part of the release identity)."""
    path, owner = ctx.layout.env_file, ctx.layout.secrets_owner
    with ctx.step("secrets") as step:
        current = ctx.target.read(path)
        text, made, missing = merge_secrets(current or "", ctx.settings.app.secrets, environ)
        if missing:
            raise DeployError(f"secret {missing[0]} has no value on {ctx.target.name}: give it once, in the "
                              f"environment of the deploy ({missing[0]}=... fab deploy); it is kept in {path}. "
                              "If the app does without it (it has a default, or copes when it is unset), take it "
                              "out of [app] secrets in deploy.toml")
        step.changed = text != current
        ctx.wrote(path, text)
        if step.changed:
            ctx.target.upload(text.encode("utf-8"), path, mode=0o600, owner=owner)
        else:  # a file written by hand keeps its content, not a looser mode or owner
            ctx.run(commands.restrict(path, 0o600, owner))
        names = ", ".join(ctx.settings.app.secrets) or "none"
        step.detail = (f"{path} ({names}; made {', '.join(made)})" if made else
                       f"{path} updated ({names})" if step.changed else f"{path} ({names})")
    return digest(text)


def unpack(ctx: Context, tar: Path, destination: Path) -> None:
    """A tar file from this machine, unpacked at destination on the target (all or nothing)."""
    partial = destination.with_name(f".{destination.name}.partial")
    ctx.run(commands.remove(partial))
    ctx.run(commands.make_directory(partial))
    with ctx.target.staged(tar) as staged:
        ctx.run(commands.tar_extract(staged, partial))
    ctx.run(commands.move(partial, destination))


def ensure_model(ctx: Context, model: Model | None, scratch: Path) -> str:
    """The model stored once on the target, named by its checksum; "" when the app has none."""
    if model is None:
        return ""
    stored = ctx.layout.models / model.key
    with ctx.step("model") as step:
        files = f"{model.files} file{'s' if model.files > 1 else ''}"
        step.detail = f"{model.path.name} {model.version} ({files}, {model.size_mb} MB) in {stored}"
        if ctx.exists(stored / model.path.name):
            return model.key
        tar = scratch / "model.tar"
        ctx.local.run(commands.tar_create(tar, model.path.parent, model.path.name, dereference=True))
        unpack(ctx, tar, stored)
        step.changed = True
    return model.key


def ensure_release(ctx: Context, source: Source, app: App, venv: str, model: Model | None, model_key: str,
                   secrets_digest: str, scratch: Path) -> Release:
    """The release for this revision, environment, model and settings: found, or made."""
    gunicorn_conf = render_gunicorn_conf(app)
    settings = {k: vars(v) for k, v in vars(ctx.settings).items() if k != "source"}
    identity = digest(source.tree, venv, model_key, settings, secrets_digest)
    with ctx.step("release") as step:
        for release in state.releases(ctx):
            if release.identity == identity:
                step.detail = f"{release.id} (already made: same code, environment, model and settings)"
                return release
        release = Release(
            id=f"{ctx.release_time or release_time()}-{source.label}",
            revision=source.label, identity=identity, venv=venv, model=model_key,
            model_version=model.version if model else "-", workers=app.plan.workers,
            explanation=app.plan.explanation, created=now(), kit_dir=KIT_DIR, threads=threads_of(ctx.settings))
        path = ctx.layout.releases / release.id
        tar = scratch / "release.tar"
        ctx.local.run(commands.archive(source.checkout, source.commit, tar))
        unpack(ctx, tar, path)
        kit = path / KIT_DIR
        if ctx.exists(kit):
            ctx.run(commands.remove(path))
            raise DeployError(f"the app has a {KIT_DIR} of its own at its top: modelhost keeps its entries in a "
                              f"release there; rename it in the app, commit, and deploy again")
        ctx.run(commands.make_directory(kit))
        ctx.link(f"../../../venvs/{venv}", kit / "venv")
        if model:
            ctx.link(f"../../../models/{model_key}", kit / "model")
            inside = model_in_checkout(source, model)
            if inside:  # where the app finds it when run from its checkout; a file git ships there wins
                ctx.run(commands.link_missing(kit / "model" / model.path.name, path / inside))
        made = keep_data(ctx, path)
        ctx.target.write(kit / "gunicorn.conf.py", gunicorn_conf)
        ctx.target.write(kit / "release.json", json.dumps(asdict(release)) + "\n")
        step.changed = True
        step.detail = f"{release.id} ({release.workers} workers)" + (
            f"; made {', '.join(made)} in {ctx.layout.data_dir}" if made else "")
    return release


def model_in_checkout(source: Source, model: Model) -> str | None:
    """The model's path relative to the checkout's top, when it is inside it."""
    try:
        return model.path.resolve().relative_to(source.checkout.resolve()).as_posix()
    except ValueError:
        return None


def keep_data(ctx: Context, release_dir: Path) -> list[str]:
    """The release's instance folder, shared paths and shared files are links into the data directory;
    what is not there yet starts as the release ships it (or, for an app deployed before the kit kept
    its data, as the live release has it)."""
    app = ctx.settings.app
    paths = tuple(p.strip("/") for p in (app.instance_path, *app.shared_paths) if p)
    files = tuple(p.strip("/") for p in app.shared_files)
    if not paths and not files:
        return []
    live = state.pointers(ctx).live_release
    seed = ctx.layout.releases / live if live else None
    output = ""
    for keep, kept in ((commands.keep_paths, paths), (commands.keep_files, files)):
        if kept:
            output += ctx.run(keep(release_dir, ctx.layout.data_dir, kept, ctx.layout.secrets_owner, seed)).stdout
    return [line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("made ")]


def ensure_release_command(ctx: Context, release: Release, app: App) -> None:
    """[deploy] release_command, run once in a new release as the app before it starts; a failure
    stops the deploy with its output, and what was serving still is."""
    command = ctx.settings.deploy.release_command
    if not command:
        return
    path = ctx.layout.releases / release.id
    done = path / KIT_DIR / "release-command.done"
    with ctx.step("release command") as step:
        step.detail = f"{command!r} ran in {release.id} before"
        if ctx.exists(done):
            return
        result = ctx.run(app_command(ctx, app, path, command), check=False, timeout=3600)
        output = (result.stdout + result.stderr).strip()
        if result.exited != 0:
            raise DeployError(f"the release command {command!r} failed in {release.id} (exit {result.exited}); the "
                              f"release was not started, what was serving still is.\n{output[-3000:]}")
        ctx.run(commands.touch(done))
        step.changed = True
        last = output.splitlines()[-1] if output else "no output"
        step.detail = f"{command!r}: {last[:100]}"


def app_command(ctx: Context, app: App, release_dir: Path, command: str) -> list[str]:
    """command run by sh in a release directory as the app: its user, environment and secrets."""
    layout = ctx.layout
    env = {**process_environment(app, release_dir), **ctx.settings.app.env}
    return commands.as_app(release_dir / KIT_DIR / "venv" / "bin" / "python", layout.secrets_owner, env,
                           layout.env_file, release_dir, command)


def prune(ctx: Context) -> None:
    """Keep the newest [deploy] keep_releases releases, the ones blue and green run, and the one a
    rollback would go to; then the environments and models no kept release uses."""
    root = ctx.layout.root
    with ctx.step("prune") as step:
        releases = state.releases(ctx)
        kept_ids = state.kept(releases, state.pointers(ctx), state.history(ctx), ctx.settings.deploy.keep_releases)
        kept = [r for r in releases if r.id in kept_ids]
        removed = {}
        for kind, used in (("releases", kept_ids), ("venvs", {r.venv for r in kept}),
                           ("models", {r.model for r in kept})):
            listing = ctx.run(commands.listing(root / kind), check=False).stdout.split()
            removed[kind] = [root / kind / name for name in listing if name not in used]
        paths = [path for found in removed.values() for path in found]
        if paths:
            ctx.run(commands.remove(*paths))
        step.changed = bool(paths)
        step.detail = (", ".join(f"removed {len(found)} {kind}" for kind, found in removed.items() if found)
                       if paths else f"{len(kept)} release{'s' if len(kept) != 1 else ''} kept ([deploy] "
                                     f"keep_releases = {ctx.settings.deploy.keep_releases})")
