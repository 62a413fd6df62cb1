"""Write model/bias.npy, the scorer's intercept.

The word weights are edited by hand in model/weights.json; the bias is a
numpy array so the scorer can grow into a real vector model later.

Usage: python make_model.py [BIAS]   (default 0.05)
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    bias = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
    out = os.path.join(HERE, "model", "bias.npy")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    np.save(out, np.array([bias], dtype=np.float64))
    print(f"wrote {out}")
