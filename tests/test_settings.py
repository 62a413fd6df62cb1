"""deploy.toml: declared once, checked with messages that name the key, the value and what is allowed."""
from __future__ import annotations

import pytest

from deploy import settings
from deploy.settings import SETTINGS, SettingsError, check_settings, load
from tests.servers import ROOT


def test_the_example_deploy_toml_is_valid_and_gives_the_demo_its_values():
    loaded = load(ROOT / "deploy.toml")
    assert loaded.app.name == "modelhost" and loaded.app.wsgi == "app:create_app()"
    assert loaded.app.secrets == ("FLASK_SECRET_KEY",) and loaded.app.env == {"FLASK_LOG_LEVEL": "INFO"}
    assert loaded.gunicorn.workers == "auto" and loaded.nginx.server_names == ("localhost", "127.0.0.1")


def test_an_empty_file_gives_every_default(tmp_path):
    (tmp_path / "deploy.toml").write_text("")
    loaded = load(tmp_path / "deploy.toml")
    for setting in SETTINGS:
        assert getattr(getattr(loaded, setting.section), setting.name) == setting.check(setting.default)


def test_every_setting_has_a_doc_and_a_default_that_passes_its_own_check():
    for setting in SETTINGS:
        assert setting.doc.endswith(".") and len(setting.doc) < 200, setting.key
        setting.check(setting.default)


@pytest.mark.parametrize("data, message", [
    # unknown names, with a suggestion when one is close
    ({"gunicron": {}}, "unknown section [gunicron]; did you mean [gunicorn]?"),
    ({"fancy": {}}, "unknown section [fancy]"),
    ({"gunicorn": {"worker": 3}}, "[gunicorn] worker = 3: unknown setting; did you mean workers? (known: workers,"),
    ({"nginx": {"server_name": "x.org"}}, '[nginx] server_name = "x.org": unknown setting; did you mean server_names?'),
    ({"gunicorn": 3}, "gunicorn = 3: must be a section [gunicorn]"),
    # each kind of check
    ({"gunicorn": {"workers": 0}},
     '[gunicorn] workers = 0: must be "auto" (2 x cores + 1, capped by memory) or a whole number >= 1'),
    ({"gunicorn": {"workers": "many"}}, '[gunicorn] workers = "many": must be "auto"'),
    ({"gunicorn": {"threads": True}}, "[gunicorn] threads = true: must be a whole number from 1 to 64"),
    ({"gunicorn": {"timeout": 2.5}}, "[gunicorn] timeout = 2.5: must be a whole number >= 1"),
    ({"gunicorn": {"worker_class": "gevent"}}, '[gunicorn] worker_class = "gevent": must be one of "gthread", "sync"'),
    ({"app": {"name": "My App"}}, '[app] name = "My App": must be a name of 2-32 lowercase letters'),
    ({"app": {"wsgi": "app.py"}}, '[app] wsgi = "app.py": must be a module:name such as "app:app" or "app:create_app()"'),
    ({"app": {"env": {"flask_debug": "1"}}}, '[app] env = {flask_debug = "1"}: must be a table of NAME = "value"'),
    ({"app": {"env": {"FLASK_X": 1}}}, "[app] env = {FLASK_X = 1}: must be a table"),
    ({"app": {"secrets": "FLASK_SECRET_KEY"}}, '[app] secrets = "FLASK_SECRET_KEY": must be a list of items'),
    ({"app": {"process_manager": "runit"}}, '[app] process_manager = "runit": must be one of "supervisor", "systemd"'),
    ({"model": {"shared": "yes"}}, '[model] shared = "yes": must be true or false'),
    ({"model": {"size_mb": -1}}, '[model] size_mb = -1: must be "auto" (sum the files) or a whole number >= 0'),
    ({"nginx": {"server_names": []}}, "[nginx] server_names = []: must be a list of one or more items, each a host name"),
    ({"nginx": {"server_names": ["bad name"]}}, '[nginx] server_names = ["bad name"]: must be a list'),
    ({"nginx": {"port": 70000}}, "[nginx] port = 70000: must be a whole number from 1 to 65535"),
    ({"nginx": {"client_max_body_size": "2 MB"}}, '[nginx] client_max_body_size = "2 MB": must be an nginx size'),
    ({"nginx": {"static_max_age": "a week"}}, '[nginx] static_max_age = "a week": must be an nginx time'),
    ({"nginx": {"rate_limit": "10/s"}}, '[nginx] rate_limit = "10/s": must be "off" or a rate such as "10r/s"'),
    ({"nginx": {"prefix": "/words/"}}, '[nginx] prefix = "/words/": must be empty (the app at /) or a path'),
    ({"nginx": {"prefix": "words"}}, '[nginx] prefix = "words": must be empty'),
    ({"nginx": {"metrics_allow": ["everyone"]}}, '[nginx] metrics_allow = ["everyone"]: must be a list of items'),
    ({"local": {"port": 80}}, "[local] port = 80: must be a whole number from 1024 to 65535"),
    ({"firewall": {"enabled": "no"}}, '[firewall] enabled = "no": must be true or false'),
    ({"firewall": {"allow": "8080"}}, '[firewall] allow = "8080": must be a list of items, each a port to let in'),
    ({"firewall": {"allow": [70000]}}, "[firewall] allow = [70000]: must be a list of items, each a port to let in"),
    ({"firewall": {"allow": ["80/icmp"]}}, '[firewall] allow = ["80/icmp"]: must be a list of items, each a port'),
    ({"firewall": {"allow": ["80,443"]}}, '[firewall] allow = ["80,443"]: must be a list of items, each a port'),
    ({"firewall": {"allow": ["22 from the office"]}}, '[firewall] allow = ["22 from the office"]: must be a list'),
    # settings that are wrong together
    ({"app": {"env": {"FLASK_SECRET_KEY": "x"}}},
     "[app] env sets FLASK_SECRET_KEY, which [app] secrets lists as secret: keep secrets out of deploy.toml"),
    ({"gunicorn": {"max_requests": 100, "max_requests_jitter": 500}},
     "[gunicorn] max_requests_jitter = 500: must not exceed max_requests (100)"),
    ({"nginx": {"client_max_body_size": "512k"}},
     '[nginx] client_max_body_size = "512k": must be at least the app\'s FLASK_MAX_CONTENT_LENGTH (1048576 bytes)'),
    ({"app": {"env": {"FLASK_MAX_CONTENT_LENGTH": "4194304"}}}, "must be at least the app's FLASK_MAX_CONTENT_LENGTH "
                                                                "(4194304 bytes)"),
    ({"nginx": {"tls": True, "tls_port": 80}}, "[nginx] tls_port = 80: must differ from port"),
])
def test_bad_settings_are_refused_naming_key_value_and_what_is_allowed(data, message):
    with pytest.raises(SettingsError) as error:
        check_settings(data, "deploy.toml")
    assert str(error.value).startswith("deploy.toml: ")
    assert message in str(error.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as error:
        check_settings({"gunicorn": {"workers": 0, "threads": 0}, "nginx": {"tls": "on"}})
    lines = str(error.value).splitlines()
    assert lines[0] == "deploy.toml: bad settings:"
    assert [line.split(" =")[0].strip() for line in lines[1:]] == [
        "[gunicorn] workers", "[gunicorn] threads", "[nginx] tls"]


def test_a_file_that_is_not_toml_or_missing_says_so(tmp_path):
    broken = tmp_path / "deploy.toml"
    broken.write_text("[gunicorn\nworkers = 3\n")
    with pytest.raises(SettingsError, match=r"deploy.toml is not valid TOML: .*line 1"):
        load(broken)
    with pytest.raises(SettingsError, match=r"missing.toml: no such file"):
        load(tmp_path / "missing.toml")


def test_the_readme_settings_table_is_made_from_the_declaration():
    readme = (ROOT / "README.md").read_text()
    assert settings.markdown_table() in readme, "the README's settings table is stale: python -m deploy.settings --readme"
    for setting in SETTINGS:
        assert f"`[{setting.section}] {setting.name}`" in settings.markdown_table()


def test_replace_table_swaps_only_the_table():
    old = f"intro\n{settings.TABLE_START}\n| old |\n{settings.TABLE_END}\noutro\n"
    new = settings.replace_table(old)
    assert new.startswith("intro\n") and new.endswith("\noutro\n") and "| old |" not in new
    assert settings.markdown_table() in new
