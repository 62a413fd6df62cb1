"""The app's dependency file made into the one requirements file the target installs: includes inlined,
the app's own directory left out, gunicorn added, unpinned names reported, local paths refused."""
from __future__ import annotations

import re
import tomllib

import pytest

from deploy.requirements import (
    FILES,
    GUNICORN_PIN,
    Requirements,
    RequirementsError,
    find_requirements,
    read_requirements,
    unpinned_message,
)
from tests.remote import KITS_TOOLS
from tests.servers import ROOT


def write(directory, files: dict[str, str]):
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def body(req: Requirements) -> list[str]:
    """The output's lines without comments."""
    return [line for line in req.text.splitlines() if not line.startswith("#")]


def test_the_gunicorn_pin_is_the_one_in_the_kits_requirements_lock():
    pins = re.findall(r"^gunicorn==\S+", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
    assert pins == [GUNICORN_PIN]


# The kit's own lock files: the reference app's (what its virtualenv on a host gets), the kit's
# (where fab runs) and the development one (both, with the test tools).
def pins(name: str) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9-]+)==(\S+)$", (ROOT / name).read_text(), re.MULTILINE))


def declared(lines: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9._-]+", line)[0].lower() for line in lines}


def test_the_reference_apps_lock_holds_none_of_the_kits_tools():
    app, kit = pins("requirements.lock"), pins("requirements-kit.lock")
    assert "flask" in app and "gensim" in app and not KITS_TOOLS & set(app)
    assert KITS_TOOLS <= set(kit) and not {"flask", "gensim", "numpy", "gunicorn"} & set(kit)


def test_the_lock_files_pin_what_their_inputs_declare_and_agree_on_every_shared_package():
    app_in = [line for line in (ROOT / "requirements.in").read_text().splitlines() if line and line[0] != "#"]
    kit_in = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    app, kit, dev = pins("requirements.lock"), pins("requirements-kit.lock"), pins("requirements-dev.lock")
    assert declared(app_in) <= set(app) and declared(kit_in) <= set(kit)
    for name in ("requirements.lock", "requirements-kit.lock"):  # every line is a pin
        lines = [line for line in (ROOT / name).read_text().splitlines() if line and not line.lstrip().startswith("#")]
        assert len(lines) == len(pins(name)), name
    # quickstart demo installs the first two together; the tests run with the third
    assert {name: app[name] for name in set(app) & set(kit)} == {name: kit[name] for name in set(app) & set(kit)}
    assert app.items() <= dev.items() and kit.items() <= dev.items()


@pytest.mark.parametrize("text, lines, unpinned", [
    # pinned, gunicorn added
    ("flask==3.1.3\n", ["flask==3.1.3", GUNICORN_PIN], ()),
    # comments, blank lines, continuations, markers, extras, per-requirement options
    (("# top\n\nflask==3.1.3  # the web framework\nnumpy==2.0.0 ; python_version < \"3.12\"\n"
     "numpy==2.4.6 ; python_version >= \"3.12\"\nrequests[socks]==2.32.3 \\\n    --config-settings=x=y\n"),
     ["flask==3.1.3", 'numpy==2.0.0 ; python_version < "3.12"', 'numpy==2.4.6 ; python_version >= "3.12"',
      "requests[socks]==2.32.3     --config-settings=x=y", GUNICORN_PIN], ()),
    # options kept as they are
    (("--index-url https://pypi.example.com/simple\n--extra-index-url=https://b.example.com\n"
     "--find-links https://wheels.example.com\nflask==3.1.3\n"),
     ["--index-url https://pypi.example.com/simple", "--extra-index-url=https://b.example.com",
      "--find-links https://wheels.example.com", "flask==3.1.3", GUNICORN_PIN], ()),
    # the app's own directory is left out, in every spelling
    (".\n-e .\n./\n--editable ./\nflask==3.1.3\n", ["flask==3.1.3", GUNICORN_PIN], ()),
    # what counts as pinned
    ("a==1.0\nb===1.0\nc==1.*\nd>=1\ne~=1.2\nf\ng>=1,==1.2\nh (==1.0)\nI_Am.Odd==1\n",
     ["a==1.0", "b===1.0", "c==1.*", "d>=1", "e~=1.2", "f", "g>=1,==1.2", "h (==1.0)", "I_Am.Odd==1", GUNICORN_PIN],
     ("c", "d", "e", "f")),
    # direct URLs and VCS URLs are pinned
    (("pkg @ https://files.example.com/pkg-1.0.tar.gz\n-e git+https://github.com/o/lib.git@v1#egg=lib\n"
     "git+https://github.com/o/other.git@abc123#egg=other\nhttps://files.example.com/tool-2.0-py3-none-any.whl\n"),
     ["pkg @ https://files.example.com/pkg-1.0.tar.gz", "-e git+https://github.com/o/lib.git@v1#egg=lib",
      "git+https://github.com/o/other.git@abc123#egg=other",
      "https://files.example.com/tool-2.0-py3-none-any.whl", GUNICORN_PIN], ()),
])
def test_a_requirements_file_becomes_what_pip_installs(tmp_path, text, lines, unpinned):
    req = read_requirements(write(tmp_path, {"requirements.txt": text}) / "requirements.txt")
    assert body(req) == lines
    assert req.unpinned == unpinned and req.added == (GUNICORN_PIN,)


@pytest.mark.parametrize("line, unpinned", [
    ("gunicorn==23.0.0", ()),
    ("Gunicorn==23.0.0", ()),
    ("gunicorn[gevent]==23.0.0", ()),
    ("GUNICORN>=22", ("gunicorn",)),
    ("gunicorn @ https://files.example.com/gunicorn-23.0.0.tar.gz", ()),
    ("git+https://github.com/benoitc/gunicorn.git@23.0.0#egg=gunicorn", ()),
])
def test_gunicorn_is_not_added_when_the_app_requires_it_in_any_spelling(tmp_path, line, unpinned):
    req = read_requirements(write(tmp_path, {"requirements.txt": f"flask==3.1.3\n{line}\n"}) / "requirements.txt")
    assert req.added == () and GUNICORN_PIN not in req.text and req.unpinned == unpinned


def test_includes_are_inlined_relative_to_the_file_that_names_them_and_each_file_once(tmp_path):
    write(tmp_path, {
        "requirements.txt": "-r reqs/prod.txt\n--requirement=reqs/base.txt\n-c constraints.txt\nrequests\n",
        "reqs/prod.txt": "-rbase.txt\nflask\n",
        "reqs/base.txt": "--index-url https://pypi.example.com/simple\nclick==8.5.1\n",
        "constraints.txt": "flask==3.1.3\nrequests==2.32.3\n"})
    req = read_requirements(tmp_path / "requirements.txt")
    assert body(req) == ["--index-url https://pypi.example.com/simple", "click==8.5.1", "flask", "flask==3.1.3",
                         "requests==2.32.3", "requests", GUNICORN_PIN]
    # a constraint pins the requirement of the same name
    assert req.unpinned == ()


def test_the_output_is_the_same_bytes_for_the_same_input_and_ends_in_a_newline(tmp_path):
    write(tmp_path, {"requirements.txt": "-r base.txt\nflask==3.1.3", "base.txt": "numpy==2.4.6"})
    first, second = (read_requirements(tmp_path / "requirements.txt").text for _ in range(2))
    assert first == second and first.endswith("==3.1.3\n" + "# added by modelhost: the app does not require "
                                                            "gunicorn, which serves it\n" + GUNICORN_PIN + "\n")
    assert str(tmp_path) not in first


@pytest.mark.parametrize("files, message", [
    # local paths the target cannot see
    ({"requirements.txt": "./libs/foo\n"}, ("requirements.txt line 1: ./libs/foo is a path on this machine, but the "
                                           "target cannot see this machine's files: publish the package")),
    ({"requirements.txt": "flask==3.1.3\n-e ../bar\n"}, "requirements.txt line 2: -e ../bar installs a directory"),
    ({"requirements.txt": "file:///srv/pkgs/foo\n"}, "file:///srv/pkgs/foo is a path on this machine"),
    ({"requirements.txt": "foo @ file:///srv/pkgs/foo\n"}, "use a VCS URL such as"),
    ({"requirements.txt": "wheels/foo-1.0-py3-none-any.whl\n"}, "vendor its code into the app's own directory"),
    ({"requirements.txt": "libs/foo\n"}, "libs/foo is a path on this machine"),
    ({"requirements.txt": ".[dev]\n"}, ".[dev] installs the app itself with extras"),
    # includes
    ({"requirements.txt": "-r base.txt\n"}, "requirements.txt line 1: includes base.txt, but there is no file"),
    ({"requirements.txt": "-r a.txt\n", "a.txt": "-r b.txt\n", "b.txt": "\n\n-r a.txt\n"},
     "b.txt line 3: includes go round in a circle (requirements.txt -> a.txt -> b.txt -> a.txt): remove one"),
    ({"requirements.txt": "-r requirements.txt\n"}, "go round in a circle"),
    ({"requirements.txt": "-r https://example.com/r.txt\n"}, "a URL: download it into the app"),
    # hash-checking mode cannot take an added gunicorn
    ({"requirements.txt": "flask==3.1.3 \\\n    --hash=sha256:abc\n"},
     "requirements.txt uses --hash (pip's hash-checking mode), so modelhost cannot add gunicorn"),
    ({"requirements.txt": "--require-hashes\nflask==3.1.3\n"}, "cannot add gunicorn without its hashes"),
    # unreadable
    ({"requirements.txt": "flask=3.1\n"}, "requirements.txt line 1: cannot read 'flask=3.1' as a requirement"),
])
def test_what_the_target_cannot_install_is_refused_with_the_fix(tmp_path, files, message):
    write(tmp_path, files)
    with pytest.raises(RequirementsError) as caught:
        read_requirements(tmp_path / "requirements.txt")
    assert message in str(caught.value)


def test_hashed_requirements_that_include_gunicorn_are_kept_as_they_are(tmp_path):
    text = "flask==3.1.3 \\\n    --hash=sha256:abc\ngunicorn==27.0.1 --hash=sha256:def\n"
    req = read_requirements(write(tmp_path, {"requirements.lock": text}) / "requirements.lock")
    assert body(req) == ["flask==3.1.3     --hash=sha256:abc", "gunicorn==27.0.1 --hash=sha256:def"]


@pytest.mark.parametrize("pyproject, lines, unpinned", [
    ('[project]\nname = "x"\ndependencies = ["flask>=3.1", "joblib==1.4.2", "numpy; python_version>=\'3.11\'"]\n',
     ["flask>=3.1", "joblib==1.4.2", "numpy; python_version>='3.11'", GUNICORN_PIN], ("flask", "numpy")),
    ('[project]\nname = "x"\ndependencies = []\n', [GUNICORN_PIN], ()),
])
def test_pyproject_dependencies_are_read(tmp_path, pyproject, lines, unpinned):
    req = read_requirements(write(tmp_path, {"pyproject.toml": pyproject}) / "pyproject.toml")
    assert body(req) == lines and req.unpinned == unpinned


@pytest.mark.parametrize("pyproject, message", [
    ('[project]\nname = "x"\ndynamic = ["dependencies"]\n', "[project] dependencies are dynamic"),
    ('[tool.poetry]\nname = "x"\n', "has no [project] table, so it lists no dependencies: write requirements.txt"),
    ('[project\n', "is not valid TOML"),
    ('[project]\ndependencies = ["./libs/foo"]\n', "pyproject.toml [project] dependencies: ./libs/foo is a path"),
])
def test_a_pyproject_without_readable_dependencies_is_refused(tmp_path, pyproject, message):
    write(tmp_path, {"pyproject.toml": pyproject})
    with pytest.raises(RequirementsError) as caught:
        read_requirements(tmp_path / "pyproject.toml")
    assert message in str(caught.value)


@pytest.mark.parametrize("present, named, found", [
    (FILES, "", "requirements.lock"),
    (("requirements.txt", "pyproject.toml"), "", "requirements.txt"),
    (("pyproject.toml",), "", "pyproject.toml"),
    (FILES, "reqs/prod.txt", "reqs/prod.txt"),
])
def test_the_named_file_wins_else_the_first_there(tmp_path, present, named, found):
    write(tmp_path, {name: '[project]\ndependencies = ["flask"]\n' if name.endswith(".toml") else "flask\n"
                     for name in (*present, "reqs/prod.txt")})
    assert find_requirements(tmp_path, named) == tmp_path / found


@pytest.mark.parametrize("files, named, message", [
    ({}, "", ("no dependency file in {}: looked for requirements.lock, requirements.txt and pyproject.toml with "
             "[project] dependencies; make one with `pip freeze > requirements.lock`")),
    # a pyproject.toml without [project] dependencies is not a dependency file
    ({"pyproject.toml": "[tool.black]\nline-length = 100\n"}, "", "no dependency file in"),
    ({"pyproject.toml": '[project]\nname = "x"\n'}, "", "no dependency file in"),
    ({"requirements.txt": "flask\n"}, "reqs.txt", ("[app] requirements = 'reqs.txt': no such file {}/reqs.txt (fix "
                                                  'the path, or set it to "" to take the first of')),
])
def test_a_missing_dependency_file_is_named_with_how_to_make_one(tmp_path, files, named, message):
    write(tmp_path, files)
    with pytest.raises(RequirementsError) as caught:
        find_requirements(tmp_path, named)
    assert message.format(tmp_path) in str(caught.value)


def test_a_pyproject_with_dynamic_dependencies_is_found_so_its_error_is_seen(tmp_path):
    write(tmp_path, {"pyproject.toml": '[project]\nname = "x"\ndynamic = ["dependencies"]\n'})
    assert find_requirements(tmp_path) == tmp_path / "pyproject.toml"


@pytest.mark.parametrize("file, unpinned, message", [
    ("requirements.txt", (), ""),
    ("requirements.txt", ("flask", "numpy"),
     ("requirements.txt: flask, numpy not pinned to one version, so two deploys may install different versions; "
     "write requirements.lock with `pip freeze > requirements.lock` in a virtualenv where the app works, or with "
     "`pip-compile requirements.txt -o requirements.lock` (pip-tools)")),
    ("pyproject.toml", ("flask",), "`pip-compile pyproject.toml -o requirements.lock`"),
    ("requirements.lock", ("flask",), ("requirements.lock: flask not pinned to one version, so two deploys may "
                                      "install different versions; pin each with == in requirements.lock")),
    ("requirements.txt", tuple("abcdefghij"), "a, b, c, d, e, f, g, h and 2 more not pinned"),
])
def test_the_unpinned_message_names_them_and_how_to_pin(tmp_path, file, unpinned, message):
    req = Requirements(file=tmp_path / file, text="", unpinned=unpinned, added=())
    assert (unpinned_message(req) == message) if not message else (message in unpinned_message(req))
    assert "\n" not in unpinned_message(req)
