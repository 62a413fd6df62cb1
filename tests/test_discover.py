"""`modelhost init`'s inspection of app checkouts written here: what it finds, the deploy.toml it writes
(always valid settings) and what it tells the user."""
from __future__ import annotations

import ast
import textwrap
import tomllib

import pytest

from deploy import discover as d
from deploy.discover import Discovery, DiscoveryError, deploy_toml, discover, report
from deploy.requirements import GUNICORN_PIN
from deploy.settings import check_settings


def write(directory, files: dict[str, str | bytes]):
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
    return directory


def checked(found: Discovery):
    """The deploy.toml init writes, parsed and checked as every task would."""
    text = deploy_toml(found)
    return check_settings(tomllib.loads(text)), text


def says(found: Discovery, *parts: str) -> bool:
    return any(all(part in line for part in parts) for line in report(found))


# ---- whole checkouts ---------------------------------------------------------------------------

FLASKR = {  # the Flask tutorial's shape: a factory in a package, the instance folder, an init-db command
    "flaskr/__init__.py": """\
        import os
        from flask import Flask

        def create_app(test_config=None):
            app = Flask(__name__, instance_relative_config=True)
            app.config.from_mapping(SECRET_KEY="dev", DATABASE=os.path.join(app.instance_path, "flaskr.sqlite"))
            from . import db
            db.init_app(app)

            @app.route("/healthz")
            def healthz():
                return "ok"
            return app
        """,
    "flaskr/db.py": """\
        import click

        @click.command("init-db")
        def init_db_command():
            click.echo("Initialized the database.")

        def init_app(app):
            app.cli.add_command(init_db_command)
        """,
    "flaskr/schema.sql": "DROP TABLE IF EXISTS user;\nCREATE TABLE user (id INTEGER PRIMARY KEY);\n",
    "flaskr/static/style.css": "body {}\n",
    "requirements.txt": "flask==3.1.3\n",
    ".gitignore": "instance/\n.venv/\n*.pyc\n",
    "tests/conftest.py": "from flask import Flask\napp = Flask(__name__)\n",
    ".venv/lib/python3.11/site-packages/other/__init__.py": "from flask import Flask\napp = Flask('x')\n",
    "instance/flaskr.sqlite": b"",
}


def test_a_factory_in_a_package_with_its_instance_folder_and_an_init_db_command(tmp_path):
    checkout = write(tmp_path / "flaskr", FLASKR)
    found = discover(checkout, {p for p in FLASKR if not p.startswith((".venv", "instance"))})
    assert (found.name, found.wsgi, found.requirements, found.unpinned) == (
        "flaskr", "flaskr:create_app()", "requirements.txt", ())
    assert found.static_dir == "flaskr/static" and found.instance_path == "instance"
    assert found.instance_used.endswith(" in flaskr/__init__.py")
    assert found.health_path == "/healthz" and found.release_commands == ("flask --app flaskr init-db",)
    assert found.models == () and found.model_path == "" and found.data_dirs == ()
    settings, text = checked(found)
    assert settings.app.wsgi == "flaskr:create_app()" and settings.nginx.static_dir == "flaskr/static"
    assert settings.deploy.health_path == "/healthz" and settings.deploy.release_command == ""
    assert '# release_command = "flask --app flaskr init-db"' in text and "EVERY deploy" in text
    assert "instance_path" not in text  # the default
    assert says(found, "found: wsgi", "create_app() in flaskr/__init__.py")
    assert says(found, "check: flaskr/schema.sql drops tables")
    assert says(found, "check: flaskr/__init__.py sets SECRET_KEY to a literal")
    assert says(found, "check: release_command", "commented")


SINGLE_FILE = {  # one app.py, a Procfile, unpinned requirements, a model kept out of git
    "app.py": """\
        import os
        import pickle
        from flask import Flask, jsonify

        app = Flask(__name__)
        app.secret_key = os.environ["SECRET_KEY"]
        model = pickle.load(open(os.environ.get("MODEL_PATH", "model.pkl"), "rb"))
        UPLOADS = os.getenv("UPLOAD_DIR", "uploads")

        @app.get("/health")
        def health():
            return jsonify(ok=True)
        """,
    "Procfile": "release: python migrate.py\nweb: gunicorn --workers 3 -b 0.0.0.0:$PORT --preload app:app\n",
    "requirements.txt": "flask\nscikit-learn>=1.3\n",
    ".gitignore": "model.pkl\n/uploads/\n__pycache__/\n.venv\nbuild/\n*.sqlite3\n",
    "model.pkl": b"\x80" * 2048,
}


def test_a_single_module_app_with_a_procfile_unpinned_requirements_and_a_model_outside_git(tmp_path):
    checkout = write(tmp_path / "Iris_Classifier", SINGLE_FILE)
    found = discover(checkout, {"app.py", "Procfile", "requirements.txt", ".gitignore"})
    assert (found.name, found.wsgi, found.wsgi_found) == ("iris-classifier", "app:app", "the Procfile's web: line")
    assert found.unpinned == ("flask", "scikit-learn")
    assert found.models == (d.ModelFile("model.pkl", 2048, False),) and found.model_path == "model.pkl"
    assert found.secrets == ("SECRET_KEY",) and found.data_dirs == ("uploads",)
    assert found.health_path == "/health" and found.static_dir == "" and found.release_commands == ()
    settings, text = checked(found)
    assert settings.model.path == "model.pkl" and settings.app.secrets == ("SECRET_KEY",)
    assert settings.app.shared_paths == () and '# shared_paths = ["uploads"]' in text
    assert "links it into every release at\n# the same relative path and sets MODEL_PATH" in text
    assert says(found, "guessed: name \"iris-classifier\" from the directory 'Iris_Classifier'")
    assert says(found, "check: requirements.txt: flask, scikit-learn not pinned", "pip freeze > requirements.lock")
    assert says(found, "found: model model.pkl (2 KB), not in git: [model] path", "MODEL_PATH")
    assert says(found, "check: the app reads UPLOAD_DIR from the environment")
    assert says(found, "check: .gitignore lists *.sqlite3: a database file")
    assert says(found, "check: .gitignore lists uploads: if the app writes there, uncomment shared_paths")


MODULE_WITH_FACTORY = {  # a module with create_app, pyproject.toml dependencies, its model in git, no health route
    "service.py": """\
        from flask import Flask, request

        def create_app():
            app = Flask(__name__)
            app.config.from_prefixed_env()

            @app.route("/predict", methods=["POST"])
            def predict():
                return {}

            @app.route("/status", methods=["POST"])
            def not_a_get():
                return {}
            return app
        """,
    "pyproject.toml": '[project]\nname = "service"\ndependencies = ["flask>=3", "joblib==1.4.2"]\n',
    "model/clf.joblib": b"0" * 3000,
    "model/vectorizer.joblib": b"0" * 1000,
}


def test_a_module_factory_with_pyproject_dependencies_and_its_own_model_in_git(tmp_path):
    checkout = write(tmp_path / "svc", MODULE_WITH_FACTORY)
    found = discover(checkout, set(MODULE_WITH_FACTORY))
    assert (found.wsgi, found.requirements, found.unpinned) == ("service:create_app()", "pyproject.toml", ("flask",))
    assert [(m.path, m.tracked) for m in found.models] == [("model/clf.joblib", True), ("model/vectorizer.joblib", True)]
    assert found.model_path == "" and found.health_path == "" and found.secrets == ("FLASK_SECRET_KEY",)
    settings, text = checked(found)
    assert settings.model.path == "" and settings.deploy.health_path == "" and settings.app.name == "svc"
    assert 'No health route found: "" counts the app ready once GET / answers below 500' in text
    assert says(found, "found: model model/clf.joblib", "tracked by git: ships with the code")
    assert says(found, "guessed: no health route", "GET / answers below 500")
    assert says(found, "found: app.config.from_prefixed_env() in service.py reads FLASK_SECRET_KEY")
    assert says(found, "pip-compile pyproject.toml -o requirements.lock")


def test_a_src_layout_is_put_on_the_apps_path(tmp_path):
    checkout = write(tmp_path / "srcapp", {
        "src/myapp/__init__.py": "from .factory import create_app\n",
        "src/myapp/factory.py": "from flask import Flask\ndef create_app():\n    return Flask(__name__)\n",
        "src/myapp/static/app.js": "",
        "requirements.lock": "flask==3.1.3\n",
    })
    found = discover(checkout, None)
    assert found.wsgi == "myapp:create_app()" and found.wsgi_found == "create_app() imported in src/myapp/__init__.py"
    assert found.instance_path == "src/instance" and found.static_dir == "src/myapp/static"
    settings, text = checked(found)
    assert settings.app.instance_path == "src/instance" and settings.app.pythonpath == ("src",)
    assert says(found, 'found: a src layout: [app] pythonpath = ["src"]')
    assert says(found, "check:", "is not a git checkout")


def test_a_procfile_app_with_arguments_is_refused_and_the_code_is_used(tmp_path):
    checkout = write(tmp_path / "web", {
        "Procfile": "web: gunicorn \"web:create_app('production')\"\n",
        "web/__init__.py": "from flask import Flask\ndef create_app(config_name):\n    return Flask(__name__)\n",
        "requirements.txt": "flask==3.1.3\n",
    })
    found = discover(checkout, set())
    assert found.wsgi == "web:create_app()"
    assert says(found, "check: the Procfile runs gunicorn web:create_app('production'), which [app] wsgi cannot hold")
    assert says(found, "check: create_app() in web/__init__.py takes arguments without defaults")
    checked(found)


def test_a_checkout_without_a_flask_app_gets_a_placeholder_and_a_note(tmp_path):
    checkout = write(tmp_path / "tool", {"tool.py": "print('hello')\n"})
    found = discover(checkout, {"tool.py"})
    settings, text = checked(found)
    assert settings.app.wsgi == "app:app" and "CHECK, a guess" in text
    assert says(found, "check: no Flask app found")
    assert says(found, "check: no dependency file in")
    assert "CHECK: none usable" in text


def test_a_checkout_without_python_is_an_error_saying_where_to_run(tmp_path):
    write(tmp_path / "empty", {"README.md": "hi\n", "tests/test_x.py": "from flask import Flask\n"})
    with pytest.raises(DiscoveryError) as caught:
        discover(tmp_path / "empty", set())
    assert "no Python files in" in str(caught.value) and "run modelhost init at the top" in str(caught.value)


def test_a_bad_requirements_file_is_a_note_not_a_failure(tmp_path):
    checkout = write(tmp_path / "app", {"app.py": "from flask import Flask\napp = Flask(__name__)\n",
                                        "requirements.txt": "flask==3.1.3\n-e ../shared-lib\n"})
    found = discover(checkout, {"app.py", "requirements.txt"})
    assert found.requirements == "" and says(found, "check: requirements.txt line 2", "cannot see this machine")
    checked(found)


def test_gensim_sidecars_belong_to_their_model_and_the_folder_is_proposed(tmp_path):
    checkout = write(tmp_path / "words", {
        "app.py": "from flask import Flask\napp = Flask(__name__)\n",
        "models/w2v.model": b"m" * 100, "models/w2v.model.wv.vectors.npy": b"v" * 1000,
        "models/w2v.model.syn1neg.npy": b"s" * 10,
    })
    found = discover(checkout, {"app.py"})
    assert found.models == (d.ModelFile("models/w2v.model", 1110, False,
                                        ("models/w2v.model.syn1neg.npy", "models/w2v.model.wv.vectors.npy")),)
    assert found.model_path == "models" and checked(found)[0].model.path == "models"


@pytest.mark.parametrize("files, tracked, model_path, note", [
    # several untracked models in one folder of their own: the folder
    ({"models/a.onnx": b"1", "models/b.onnx": b"2"}, set(), "models", None),
    # models at the top beside the code: no folder to propose
    ({"a.pt": b"1", "b.pt": b"22"}, set(), "", "move them into a folder of their own"),
    # in two folders: the largest, with a note
    ({"small/a.h5": b"1", "big/b.h5": b"22"}, set(), "big/b.h5", "more than one folder (small too)"),
    # tracked ones are not proposed
    ({"models/a.onnx": b"1", "extra/b.gguf": b"22"}, {"models/a.onnx"}, "extra/b.gguf", None),
    # a folder holding code is never proposed
    ({"pkg/a.npy": b"1", "pkg/b.npy": b"2", "pkg/util.py": ""}, set(), "", "beside code"),
])
def test_the_model_path_proposed(tmp_path, files, tracked, model_path, note):
    checkout = write(tmp_path / "m", {"app.py": "from flask import Flask\napp = Flask(__name__)\n", **files})
    found = discover(checkout, tracked | {"app.py"})
    assert found.model_path == model_path
    assert note is None or says(found, note)
    checked(found)


# ---- the parts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("directory, name", [
    ("flaskr", "flaskr"), ("My_App", "my-app"), ("flask app ", "flask-app"), ("123api", "app-123api"),
    ("x", "app-x"), ("___", "app"), ("a" * 40, "a" * 32), ("Web.Service-", "web-service"),
])
def test_the_app_name_is_made_valid_from_the_directory_name(directory, name):
    assert d.app_name(directory) == name
    check_settings({"app": {"name": name}})


@pytest.mark.parametrize("command, argument", [
    ("gunicorn app:app", "app:app"),
    ("gunicorn -w 4 -b :$PORT wsgi:application", "wsgi:application"),
    ("gunicorn --bind=localhost:8000 --preload 'pkg:create_app()'", "pkg:create_app()"),
    ("gunicorn -w4 --reload -k gevent app:app", "app:app"),
    ("python -m gunicorn app:app", "app:app"),
    (".venv/bin/gunicorn --chdir src app:app", "app:app"),
    ("gunicorn -c gunicorn.conf.py", None),
    ("python app.py", None),
    ("gunicorn -c conf.py && echo app:app", None),
])
def test_the_app_argument_of_a_gunicorn_command(command, argument):
    import shlex
    assert d.gunicorn_app_argument(shlex.split(command))[0] == argument


@pytest.mark.parametrize("source, paths", [
    ("@app.route('/healthz')\ndef f(): pass", ["/healthz"]),
    ("@bp.get('/ping')\ndef f(): pass", ["/ping"]),
    ("@app.route('/ready', methods=['POST'])\ndef f(): pass", []),
    ("@app.route('/ready', methods=('GET', 'HEAD'))\ndef f(): pass", ["/ready"]),
    ("bp = Blueprint('h', __name__, url_prefix='/api/')\n@bp.route('/health')\ndef f(): pass", ["/api/health"]),
    ("app.add_url_rule('/livez', view_func=f)", ["/livez"]),
    ("def create_app():\n    app = Flask(__name__)\n    @app.get('/status')\n    def s(): pass", ["/status"]),
])
def test_route_paths_are_read_from_decorators_and_url_rules(source, paths):
    assert d.route_paths(ast.parse(source)) == paths


@pytest.mark.parametrize("paths, best", [
    (["/", "/readyz", "/healthz"], "/readyz"),
    (["/ping", "/api/health"], "/api/health"),
    (["/status", "/livez"], "/livez"),
    (["/user/<id>/health", "/about"], None),
])
def test_the_best_health_route_is_chosen(paths, best):
    ranked = sorted((p for p in paths if d.health_rank(p) is not None), key=d.health_rank)
    assert (ranked[0] if ranked else None) == best


@pytest.mark.parametrize("size, text", [(512, "512 bytes"), (2048, "2 KB"), (3 * 1024 * 1024 + 400_000, "3.4 MB")])
def test_sizes_are_written_for_people(size, text):
    assert d.size_text(size) == text


@pytest.mark.parametrize("function, name", [
    ("init_db_command", "init-db"), ("init_db", "init-db"), ("migrate", "migrate"), ("Seed_Cmd", "seed"),
])
def test_command_names_follow_click(function, name):
    assert d.click_name(function) == name


@pytest.mark.parametrize("source, commands", [
    ("@app.cli.command('init-db')\ndef f(): pass", ["flask --app app init-db"]),
    ("@app.cli.command()\ndef create_tables(): pass", ["flask --app app create-tables"]),
    ("@click.command('init-db')\ndef f(): pass", []),  # never added to the app's CLI
    ("@app.cli.command('seed')\ndef f(): pass", []),  # not a schema command
    ("from flask_migrate import Migrate", ["flask --app app db upgrade"]),
])
def test_release_command_candidates(tmp_path, source, commands):
    module = d.Module("app.py", "app", ast.parse(source), False)
    assert list(d.release_commands([module], "app:app", [], tmp_path, [])) == commands


def test_a_factory_with_another_name_is_quoted_for_flask_app(tmp_path):
    module = d.Module("m.py", "m", ast.parse("@app.cli.command('init-db')\ndef f(): pass"), False)
    assert d.release_commands([module], "m:build()", [], tmp_path, []) == ("flask --app 'm:build()' init-db",)


@pytest.mark.parametrize("gitignore, dirs, files", [
    ("uploads/\n", ("uploads",), ()),
    ("/data/*\nmedia/**\n**/storage\n", ("data", "media", "storage"), ()),
    ("static/uploads/\n", ("static/uploads",), ()),
    (".venv/\nvenv\nbuild/\n__pycache__/\n.cache/\nnode_modules/\n*.log\n", (), ()),
    ("# uploads\n!data/\ndata/*.csv\n", (), ()),
    ("instance/\ninstance/uploads/\nmodels/data\ninstance/app.db\n", (), ()),  # kept already, or the model's
    ("app.db\n/db/site.sqlite3\n*.sqlite\n", (), ("app.db", "db/site.sqlite3")),  # a glob names no file: a note
])
def test_gitignored_directories_and_databases_that_look_like_run_time_data(tmp_path, gitignore, dirs, files):
    write(tmp_path, {".gitignore": gitignore})
    notes: list[str] = []
    assert d.gitignored_data(tmp_path, ("instance", "models/data/m.pkl"), notes) == (dirs, files)
    assert notes == (["check: .gitignore lists *.sqlite: a database file in the release directory starts anew with "
                      "each release; name it in [app] shared_files, or keep it in the instance folder"]
                     if "*.sqlite" in gitignore else [])


@pytest.mark.parametrize("source, secrets, found", [
    ("app.config.from_prefixed_env()", ("FLASK_SECRET_KEY",), "from_prefixed_env() in m.py"),
    ("import os\nKEY = os.environ['SECRET_KEY']", ("SECRET_KEY",), "the code reads SECRET_KEY"),
    ("import os\nos.getenv('FLASK_SECRET_KEY')\nos.environ.get('API_TOKEN')", ("FLASK_SECRET_KEY", "API_TOKEN"),
     "the code reads FLASK_SECRET_KEY"),
    ("x = 1", ("FLASK_SECRET_KEY",), ""),
])
def test_secrets_come_from_what_the_code_reads(source, secrets, found):
    names, how = d.secret_names([d.Module("m.py", "m", ast.parse(source), False)], [])
    assert names == secrets and found in how


def test_a_secret_the_code_has_a_default_for_is_left_out_and_a_signing_key_kept():
    source = """import os
SECRET_KEY = os.environ.get('SECRET_KEY') or 'you-will-never-guess'
SQLALCHEMY_DATABASE_URI = os.environ.get('DATABASE_URL') or 'sqlite:///app.db'
MAIL_PASSWORD = os.environ.get('MAIL_PASSWORD')
TOKEN = os.getenv('API_TOKEN', default='')
KEY = os.environ.get('STRIPE_SECRET_KEY', '') or os.environ['STRIPE_SECRET_KEY']
"""  # microblog's config.py, and a name read both ways (needed once is needed)
    notes = []
    names, _ = d.secret_names([d.Module("config.py", "config", ast.parse(source), False)], notes)
    assert names == ("SECRET_KEY", "MAIL_PASSWORD", "STRIPE_SECRET_KEY")
    assert notes == ["check: the code has a default for DATABASE_URL, API_TOKEN, so [app] secrets leaves them out; "
                     "name one there (and give its value once, NAME=... fab deploy) for a host to have its own"]


def test_the_deploy_toml_written_for_every_shape_is_valid_and_the_same_each_time(tmp_path):
    for number, files in enumerate((FLASKR, SINGLE_FILE, MODULE_WITH_FACTORY)):
        checkout = write(tmp_path / f"app{number}", files)
        texts = {deploy_toml(discover(checkout, set(files))) for _ in range(2)}
        assert len(texts) == 1
        check_settings(tomllib.loads(texts.pop()))


def test_the_kit_adds_gunicorn_to_what_init_found(tmp_path):
    checkout = write(tmp_path / "app", SINGLE_FILE)
    found = discover(checkout, set(SINGLE_FILE))
    assert says(found, f"found: dependencies in {found.requirements}; modelhost adds gunicorn")
    assert GUNICORN_PIN.startswith("gunicorn==")
