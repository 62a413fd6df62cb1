"""The sample apps in tests/apps/ (typical user apps the end-to-end deploys ship) work on their own.

Each test runs a copy in tmp_path, so nothing is written into the repository. The apps' module names
(`app`, `service`, `notes`) are loaded under unique names or removed afterwards: the repository has
its own top-level `app` package.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

APPS = Path(__file__).parent / "apps"
ROOT = Path(__file__).parent.parent
IGNORED = shutil.ignore_patterns("__pycache__", "instance", "uploads", "model.pkl", ".venv")


def copy_app(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(APPS / name, tmp_path / name, ignore=IGNORED))


def load_module(path: Path, name: str):
    """Import one file as a module called `name` (registered, so Flask finds its root path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.fixture
def forget_modules():
    """Remove the named modules (and their submodules) from sys.modules after the test."""
    names: list[str] = []
    yield names.append
    for loaded in list(sys.modules):
        if any(loaded == name or loaded.startswith(name + ".") for name in names):
            del sys.modules[loaded]


def init_db(app):
    """`flask init-db`: the flask command pushes an app context, which the command (flaskr-style) relies on."""
    with app.app_context():
        return app.test_cli_runner().invoke(args=["init-db"])


def locked(name: str) -> str:
    match = re.search(rf"(?m)^{re.escape(name)}==(\S+)$", (ROOT / "requirements.lock").read_text())
    assert match, f"{name} is not in requirements.lock"
    return match.group(1)


# notes: an app factory in a package, SQLite in the instance folder, an init-db command.

@pytest.fixture
def notes(tmp_path, monkeypatch, forget_modules):
    copy = copy_app("notes", tmp_path)
    monkeypatch.syspath_prepend(str(copy))
    forget_modules("notes")
    assert "notes" not in sys.modules
    package = importlib.import_module("notes")
    assert Path(package.__file__).parent == copy / "notes"
    return copy, package


def test_notes_serves_healthz_only_after_init_db_and_keeps_notes_across_init_db(notes):
    copy, package = notes
    app = package.create_app()
    assert app.config["DATABASE"] == str(copy / "instance" / "notes.sqlite")
    client = app.test_client()

    unavailable = client.get("/healthz")
    assert unavailable.status_code == 503 and unavailable.json["status"] != "ok"

    result = init_db(app)
    assert result.exit_code == 0 and "Initialized the database." in result.output
    assert client.get("/healthz").json == {"status": "ok"}

    created = client.post("/api/notes", json={"text": "buy milk"})
    assert created.status_code == 201 and created.json["text"] == "buy milk" and created.json["id"] == 1
    client.post("/", data={"text": "from the form"})
    assert [n["text"] for n in client.get("/api/notes").json] == ["from the form", "buy milk"]

    # Repeating init-db (as a deploy does) keeps the data.
    assert init_db(app).exit_code == 0
    assert len(client.get("/api/notes").json) == 2
    page = client.get("/")
    assert page.status_code == 200 and b"buy milk" in page.data and b"/static/style.css" in page.data
    assert client.get("/static/style.css").status_code == 200


@pytest.mark.parametrize("body", [{}, {"text": ""}, {"text": "   "}, {"text": 3}, None])
def test_notes_refuses_a_note_without_text(notes, body):
    _, package = notes
    app = package.create_app()
    assert init_db(app).exit_code == 0
    client = app.test_client()
    response = client.post("/api/notes", json=body) if body is not None else client.post("/api/notes", data="x")
    assert response.status_code == 400 and "error" in response.json
    assert client.get("/api/notes").json == []


def test_notes_reads_its_settings_from_the_instance_config_and_flask_variables(notes, monkeypatch, tmp_path):
    copy, package = notes
    (copy / "instance").mkdir()
    (copy / "instance" / "config.py").write_text("SECRET_KEY = 'from-instance'\n")
    monkeypatch.setenv("FLASK_DATABASE", str(tmp_path / "elsewhere.sqlite"))
    app = package.create_app()
    assert app.config["SECRET_KEY"] == "from-instance"
    assert app.config["DATABASE"] == str(tmp_path / "elsewhere.sqlite")
    assert init_db(app).exit_code == 0
    assert (tmp_path / "elsewhere.sqlite").is_file()


def test_notes_pins_the_locked_flask():
    assert (APPS / "notes" / "requirements.txt").read_text().split() == [f"flask=={locked('flask')}"]


# iris: a module-level app that unpickles a scikit-learn model trained by train.py.

@pytest.fixture(scope="module")
def trained_iris(tmp_path_factory):
    """A copy of the app with its model trained as its README says (once: training takes seconds)."""
    pytest.importorskip("sklearn")
    copy = copy_app("iris", tmp_path_factory.mktemp("trained"))
    subprocess.run([sys.executable, "train.py"], cwd=copy, check=True, capture_output=True)
    assert (copy / "model.pkl").is_file()
    return copy


@pytest.fixture
def iris(trained_iris, tmp_path, forget_modules):
    copy = Path(shutil.copytree(trained_iris, tmp_path / "iris"))
    forget_modules("iris_sample_app")
    return copy, load_module(copy / "app.py", "iris_sample_app").app


def test_iris_train_writes_to_the_path_given(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "elsewhere.pkl"
    subprocess.run([sys.executable, str(APPS / "iris" / "train.py"), str(out)], check=True, capture_output=True)
    assert out.is_file() and not (APPS / "iris" / "model.pkl").exists()


def test_iris_predicts_a_species_with_probabilities(iris):
    _, app = iris
    client = app.test_client()
    assert client.get("/").status_code == 200
    response = client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
    assert response.status_code == 200 and response.json["class"] == "setosa"
    probabilities = response.json["probabilities"]
    assert set(probabilities) == {"setosa", "versicolor", "virginica"}
    assert abs(sum(probabilities.values()) - 1) < 1e-3
    assert client.post("/predict", json={"features": [6.7, 3.0, 5.2, 2.3]}).json["class"] == "virginica"


@pytest.mark.parametrize("body", [{}, {"features": [1, 2, 3]}, {"features": ["a", 2, 3, 4]},
                                  {"features": [1, 2, 3, True]}, [1, 2, 3, 4], None])
def test_iris_refuses_bad_features(iris, body):
    _, app = iris
    client = app.test_client()
    response = client.post("/predict", json=body) if body is not None else client.post("/predict", data="x")
    assert response.status_code == 400 and "error" in response.json


def test_iris_appends_feedback_to_uploads_beside_the_app(iris):
    copy, app = iris
    client = app.test_client()
    assert client.get("/feedback").json == {"count": 0}
    first = client.post("/feedback", json={"features": [5.1, 3.5, 1.4, 0.2], "label": "setosa"})
    assert first.status_code == 201 and first.json == {"saved": 1}
    assert client.post("/feedback", json={"features": [6, 3, 5, 2], "label": "virginica"}).json == {"saved": 2}
    assert client.post("/feedback", json={"features": [6, 3, 5, 2], "label": "rose"}).status_code == 400
    lines = (copy / "uploads" / "feedback.jsonl").read_text().splitlines()
    assert [json.loads(line)["label"] for line in lines] == ["setosa", "virginica"]
    assert client.get("/feedback").json == {"count": 2}


def test_iris_needs_no_gunicorn_and_pins_nothing():
    assert (APPS / "iris" / "requirements.txt").read_text().split() == ["flask", "scikit-learn"]
    assert "gunicorn app:app" in (APPS / "iris" / "Procfile").read_text()


# lexicon: a create_app() in a top-level module, its own model/ folder, SQLite in $DATA_DIR.

@pytest.fixture
def lexicon(tmp_path, monkeypatch, forget_modules):
    copy = copy_app("lexicon", tmp_path)
    monkeypatch.delenv("DATA_DIR", raising=False)
    forget_modules("lexicon_sample_service")
    return copy, load_module(copy / "service.py", "lexicon_sample_service")


def test_lexicon_scores_texts_and_keeps_them_in_data_dir(lexicon, monkeypatch, tmp_path):
    _, service = lexicon
    data = tmp_path / "data" / "lexicon"
    monkeypatch.setenv("DATA_DIR", str(data))
    client = service.create_app().test_client()
    assert client.get("/").status_code == 200

    good = client.post("/score", json={"text": "Good, great and helpful!"})
    assert good.status_code == 200 and good.json["id"] == 1 and 0 < good.json["score"] <= 1
    bad = client.post("/score", json={"text": "terrible, the worst"})
    assert bad.json["id"] == 2 and -1 <= bad.json["score"] < 0
    assert client.post("/score", json={"text": ""}).status_code == 400
    assert client.post("/score", json={}).status_code == 400

    scores = client.get("/scores").json
    assert scores["count"] == 2 and [s["id"] for s in scores["last"]] == [2, 1]
    assert (data / "scores.sqlite").is_file()
    # A new app on the same directory (a restart) sees the stored scores.
    assert service.create_app().test_client().get("/scores").json["count"] == 2


def test_lexicon_defaults_to_the_instance_folder(lexicon):
    copy, service = lexicon
    client = service.create_app().test_client()
    assert client.post("/score", json={"text": "bad"}).json["score"] < 0
    assert (copy / "instance" / "scores.sqlite").is_file()


def test_lexicon_ships_its_model_and_pins_the_locked_versions():
    numpy = pytest.importorskip("numpy")
    bias = numpy.load(APPS / "lexicon" / "model" / "bias.npy")
    assert bias.shape == (1,) and bias.dtype.kind == "f"
    weights = json.loads((APPS / "lexicon" / "model" / "weights.json").read_text())
    assert len(weights) >= 24 and weights["good"] > 0 > weights["bad"]
    project = tomllib.loads((APPS / "lexicon" / "pyproject.toml").read_text())
    assert sorted(project["project"]["dependencies"]) == [f"flask=={locked('flask')}", f"numpy=={locked('numpy')}"]
