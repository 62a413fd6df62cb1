"""The fleet's balancer ([fleet] balancer) without hosts: its nginx site spreads the site over the
app hosts with passive health checks, repeats only requests that are safe to repeat, marks a host
being deployed down, keeps the app's limits, headers and /metrics rules, and passes nginx -t."""
from __future__ import annotations

from pathlib import Path

from invoke import Context

from deploy.facts import parse_facts
from deploy.layout import system_layout
from deploy.render import Upstream, balancer_settings, plan_app, render, render_balancer
from deploy.settings import check_settings
from deploy.target import Target
from deploy.validate import check_rendered
from tests.test_render import assert_nginx_takes_tls_site, needs_nginx

FACTS = parse_facts((Path(__file__).parent / "data" / "facts" / "debian-12-amd64.txt").read_text())
FLEET = {"app": {"name": "words"}, "nginx": {"server_names": ["words.example.com"], "cache": True,
                                             "static_dir": "app/static", "metrics_allow": ["10.0.0.0/8"]},
         "fleet": {"app": ["pi1", "pi2", "pi3"], "balancer": ["edge"]}}
UPSTREAMS = [Upstream("pi1", "10.0.0.11:80"), Upstream("pi2", "10.0.0.12:80", down=True),
             Upstream("pi3", "10.0.0.13:80")]


def balancer_site(settings: dict, certificate: bool = False) -> tuple[dict, str]:
    balanced = balancer_settings(check_settings(settings))
    layout = system_layout(balanced)
    files = render_balancer(balanced, layout, FACTS, UPSTREAMS, certificate)
    return files, files[layout.nginx_sites / "words.example.com.conf"]


def test_the_balancer_spreads_the_site_over_the_app_hosts_and_repeats_only_safe_requests():
    _, site = balancer_site(FLEET)
    assert "upstream words-fleet {" in site
    assert "    server 10.0.0.11:80 max_fails=1 fail_timeout=10s;  # pi1\n" in site
    assert "    server 10.0.0.12:80 max_fails=1 fail_timeout=10s down;  # pi2\n" in site
    assert "proxy_next_upstream error timeout http_502 http_503 http_504;" in site
    assert "non_idempotent" not in site  # POST and the like are never sent twice
    assert "proxy_next_upstream_tries 3;" in site
    # The app's limits and /metrics rules hold at the balancer; the cache, static files and password
    # stay with each app host's own nginx.
    assert "limit_req zone=words_fleet_api burst=20 nodelay;" in site
    assert "allow 10.0.0.0/8;\n            deny all;" in site
    assert "proxy_cache " not in site and "    alias " not in site and 'auth_basic "' not in site
    assert "add_header X-Frame-Options DENY always;" in site and "proxy_hide_header X-Frame-Options;" in site
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in site


@needs_nginx
def test_the_balancers_site_passes_nginx_t(tmp_path):
    files, _ = balancer_site(FLEET | {"nginx": {**FLEET["nginx"], "tls": True}}, certificate=True)
    assert_nginx_takes_tls_site(files, tmp_path, moved=("/var/log/words-fleet",))


@needs_nginx
def test_an_app_host_behind_the_balancer_believes_its_forwarded_headers_and_passes_nginx_t(tmp_path):
    """The client's address and scheme come from the balancer's X-Forwarded-For and -Proto, believed
    from the balancer's address only: the app host's limits count each client, not the balancer."""
    settings = check_settings({"app": {"name": "words"}, "nginx": {"server_names": ["words.example.com"]},
                               "fleet": {"app": ["pi1", "pi2"], "balancer": ["edge"],
                                         "addresses": {"edge": "10.0.0.7"}}})
    app = plan_app(settings, system_layout(settings), FACTS, model_mb=0)
    files = {str(f.destination): f.content for f in render([app], FACTS) if f.destination}
    site = next(text for path, text in files.items() if path.endswith("words.example.com.conf"))
    assert "    set_real_ip_from 10.0.0.7;\n    real_ip_header X-Forwarded-For;\n" in site
    host_wide = next(text for path, text in files.items() if path.endswith("modelhost.conf") and "map " in text)
    assert '    "10.0.0.7" $http_x_forwarded_proto;  # [fleet] balancer\n' in host_wide
    (tmp_path / "check").mkdir()
    assert check_rendered(Target(Context()), [app], FACTS, tmp_path / "check", "blue")
