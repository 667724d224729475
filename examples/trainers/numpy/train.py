#!/usr/bin/env python3
"""A Tessera external trainer in plain NumPy (protocol tessera-trainer/1).

It trains the built-in linear models' layout, `weight` [k, d] and `bias` [k]:
logistic regression (binary), softmax regression (multi-class) and linear
regression, by minibatch SGD with the settings the coordinator announced. Use
it with `[trainer] command = ["python3", "examples/trainers/numpy/train.py"]`
in a participant's configuration, or `tessera-sim run --trainer "python3
examples/trainers/numpy/train.py"`. It needs numpy and safetensors.

The participant runs it once per job with these variables set (see the
README, "Bring your own trainer"):

  TESSERA_MODE            train, or predict (federated evaluation)
  TESSERA_MODEL_IN        the global model: safetensors, F32 tensors by name
  TESSERA_MODEL_OUT       where to write the trained model (same names, shapes, dtypes)
  TESSERA_PREDICTIONS_OUT predict mode: where to write `predictions` [rows, outputs]
  TESSERA_DATA            the site's rows, preprocessed: inputs, then the label
  TESSERA_TASK            the task as JSON (kind, inputs, label, classes, tensors...)
  TESSERA_SEED, TESSERA_EPOCHS, TESSERA_LEARNING_RATE, TESSERA_BATCH_SIZE,
  TESSERA_WEIGHT_DECAY    the training settings
  TESSERA_METRICS_OUT     optional JSON of local figures (logged by the site, never sent)
"""

import csv
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def read_data(path, task):
    """The inputs as a float matrix and the targets as a vector."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    if header[:-1] != task["inputs"] or header[-1] != task["label"]:
        sys.exit(f"unexpected columns {header}")
    values = np.array(body, dtype=np.float64).reshape(len(body), len(header))
    return values[:, :-1], values[:, -1]


def outputs(kind, z):
    """Probabilities (classification) or values (regression) from logits z [n, k]."""
    if kind == "binary":
        return 1.0 / (1.0 + np.exp(-z))
    if kind == "multiclass":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


def loss_and_grad(kind, z, y):
    """Mean loss and its gradient with respect to the logits."""
    n = len(y)
    p = outputs(kind, z)
    if kind == "binary":
        t = y.reshape(-1, 1)
        eps = 1e-12
        loss = -np.mean(t * np.log(p + eps) + (1 - t) * np.log(1 - p + eps))
        return loss, (p - t) / n
    if kind == "multiclass":
        onehot = np.zeros_like(p)
        onehot[np.arange(n), y.astype(int)] = 1.0
        loss = -np.mean(np.log(p[np.arange(n), y.astype(int)] + 1e-12))
        return loss, (p - onehot) / n
    err = p - y.reshape(-1, 1)
    return np.mean(err**2), err / n


def main():
    env = os.environ
    with open(env["TESSERA_TASK"]) as f:
        task = json.load(f)
    if task["protocol"] != 1:
        sys.exit(f"this trainer speaks protocol 1, not {task['protocol']}")
    names = [t["name"] for t in task["tensors"]]
    if names != ["weight", "bias"]:
        sys.exit(f"this trainer trains the linear models' layout, not {names}")
    model = load_file(env["TESSERA_MODEL_IN"])
    w = model["weight"].astype(np.float64)
    b = model["bias"].astype(np.float64)
    x, y = read_data(env["TESSERA_DATA"], task)
    kind = task["kind"]

    if env.get("TESSERA_MODE", "train") == "predict":
        p = outputs(kind, x @ w.T + b)
        save_file({"predictions": p.astype(np.float32)}, env["TESSERA_PREDICTIONS_OUT"])
        return

    rng = np.random.default_rng(int(env["TESSERA_SEED"]))
    epochs = int(env["TESSERA_EPOCHS"])
    lr = float(env["TESSERA_LEARNING_RATE"])
    batch = int(env["TESSERA_BATCH_SIZE"]) or len(y)
    decay = float(env["TESSERA_WEIGHT_DECAY"])
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            loss, dz = loss_and_grad(kind, x[idx] @ w.T + b, y[idx])
            losses.append(loss)
            w -= lr * (dz.T @ x[idx] + decay * w)
            b -= lr * dz.sum(axis=0)
    save_file(
        {"weight": w.astype(np.float32), "bias": b.astype(np.float32)},
        env["TESSERA_MODEL_OUT"],
    )
    if "TESSERA_METRICS_OUT" in env:
        with open(env["TESSERA_METRICS_OUT"], "w") as f:
            json.dump({"rows": int(len(y)), "last_batch_loss": float(losses[-1])}, f)


if __name__ == "__main__":
    main()
