"""Train the iris classifier and pickle it.

Usage: python train.py [OUTPUT]   (default: model.pkl next to this file)
"""
import os
import pickle
import sys

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    out = argv[1] if len(argv) > 1 else os.path.join(here, "model.pkl")

    iris = load_iris()
    clf = LogisticRegression(max_iter=500)
    # Fit on the species names so the model's classes_ are names, not 0/1/2.
    labels = iris.target_names[iris.target]
    clf.fit(iris.data, labels)

    with open(out, "wb") as f:
        pickle.dump(clf, f)
    print(f"accuracy on training data: {clf.score(iris.data, labels):.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
