import json
import math
import os
import pickle

from flask import Flask, jsonify, request

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
UPLOAD_DIR = os.path.join(BASE_DIR, "uploads")
FEEDBACK_FILE = os.path.join(UPLOAD_DIR, "feedback.jsonl")

app = Flask(__name__)

MODEL = pickle.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.pkl"), "rb"))
CLASS_NAMES = [str(c) for c in MODEL.classes_]

PAGE = """<!doctype html>
<title>Iris classifier</title>
<h1>Iris classifier</h1>
<p>POST JSON like <code>{"features": [5.1, 3.5, 1.4, 0.2]}</code> to <code>/predict</code>
(sepal length, sepal width, petal length, petal width in cm).</p>
<p>Classes: %s</p>
"""


def parse_features(data):
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, list) or len(features) != 4:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in features):
        return None
    if not all(math.isfinite(x) for x in features):
        return None
    return [float(x) for x in features]


def count_feedback():
    if not os.path.exists(FEEDBACK_FILE):
        return 0
    with open(FEEDBACK_FILE) as f:
        return sum(1 for line in f if line.strip())


@app.route("/")
def index():
    return PAGE % ", ".join(CLASS_NAMES)


@app.route("/predict", methods=["POST"])
def predict():
    features = parse_features(request.get_json(silent=True))
    if features is None:
        return jsonify(error="expected {\"features\": [4 numbers]}"), 400
    probs = MODEL.predict_proba([features])[0]
    best = int(probs.argmax())
    return jsonify({
        "class": CLASS_NAMES[best],
        "probabilities": {name: round(float(p), 4) for name, p in zip(CLASS_NAMES, probs)},
    })


@app.route("/feedback", methods=["POST"])
def add_feedback():
    data = request.get_json(silent=True)
    features = parse_features(data)
    label = data.get("label") if isinstance(data, dict) else None
    if features is None or label not in CLASS_NAMES:
        return jsonify(error="expected {\"features\": [4 numbers], \"label\": one of %s}" % CLASS_NAMES), 400
    os.makedirs(UPLOAD_DIR, exist_ok=True)
    with open(FEEDBACK_FILE, "a") as f:
        f.write(json.dumps({"features": features, "label": label}) + "\n")
    return jsonify(saved=count_feedback()), 201


@app.route("/feedback", methods=["GET"])
def feedback_count():
    return jsonify(count=count_feedback())


if __name__ == "__main__":
    app.run(debug=True)
