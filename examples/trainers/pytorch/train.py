#!/usr/bin/env python3
"""A Tessera external trainer in PyTorch (protocol tessera-trainer/1).

The model is an ordinary `nn.Module`; its `state_dict` is what the federation
averages. Make the federation's initial model once:

    python3 examples/trainers/pytorch/train.py --init model.safetensors --inputs 4 --classes 3

and give the coordinator

    [task]
    kind = "multiclass"
    model = "external"            # any architecture: its tensors are the initial model's
    classes = ["setosa", "versicolor", "virginica"]
    ...
    [training]
    initial_model = "model.safetensors"

and each participant `[trainer] command = ["python3", "examples/trainers/pytorch/train.py"]`.
Per job the participant sets TESSERA_MODE, TESSERA_MODEL_IN, TESSERA_MODEL_OUT,
TESSERA_PREDICTIONS_OUT, TESSERA_DATA, TESSERA_TASK and the training settings
(see the README, "Bring your own trainer"). It needs torch and safetensors.
"""

import argparse
import csv
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class Net(nn.Module):
    """A small perceptron: inputs -> 16 -> outputs."""

    def __init__(self, inputs, outputs, hidden=16):
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.fc2 = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def read_data(path, task):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    if header[:-1] != task["inputs"]:
        sys.exit(f"unexpected columns {header}")
    values = torch.tensor([[float(v) for v in r] for r in body], dtype=torch.float32)
    return values[:, :-1], values[:, -1]


def loss_fn(kind, logits, y):
    if kind == "binary":
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y)
    if kind == "multiclass":
        return nn.functional.cross_entropy(logits, y.long())
    return 0.5 * nn.functional.mse_loss(logits[:, 0], y)


def outputs(kind, logits):
    if kind == "binary":
        return torch.sigmoid(logits)
    if kind == "multiclass":
        return torch.softmax(logits, dim=1)
    return logits


def run_job():
    env = os.environ
    with open(env["TESSERA_TASK"]) as f:
        task = json.load(f)
    if task["protocol"] != 1:
        sys.exit(f"this trainer speaks protocol 1, not {task['protocol']}")
    state = load_file(env["TESSERA_MODEL_IN"])
    net = Net(len(task["inputs"]), task["outputs"])
    # strict: the tensors must be exactly the module's (names and shapes).
    net.load_state_dict(state, strict=True)
    x, y = read_data(env["TESSERA_DATA"], task)
    kind = task["kind"]

    if env.get("TESSERA_MODE", "train") == "predict":
        with torch.no_grad():
            p = outputs(kind, net(x)).float().contiguous()
        save_file({"predictions": p}, env["TESSERA_PREDICTIONS_OUT"])
        return

    torch.manual_seed(int(env["TESSERA_SEED"]) % (2**63))
    batch = int(env["TESSERA_BATCH_SIZE"]) or len(y)
    opt = torch.optim.SGD(
        net.parameters(),
        lr=float(env["TESSERA_LEARNING_RATE"]),
        weight_decay=float(env["TESSERA_WEIGHT_DECAY"]),
    )
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True
    )
    net.train()
    last = float("nan")
    for _ in range(int(env["TESSERA_EPOCHS"])):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(kind, net(xb), yb)
            loss.backward()
            opt.step()
            last = loss.item()
    # Same names, shapes and dtypes as the model received.
    save_file(
        {k: v.detach().float().contiguous() for k, v in net.state_dict().items()},
        env["TESSERA_MODEL_OUT"],
    )
    if "TESSERA_METRICS_OUT" in env:
        with open(env["TESSERA_METRICS_OUT"], "w") as f:
            json.dump({"last_batch_loss": last, "rows": len(y)}, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", help="write the initial model here and exit")
    parser.add_argument("--inputs", type=int, help="model inputs (after preprocessing)")
    parser.add_argument("--classes", type=int, default=1, help="outputs: classes, or 1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.init:
        if not args.inputs:
            sys.exit("--init needs --inputs")
        torch.manual_seed(args.seed)
        net = Net(args.inputs, args.classes)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.init)
        return
    run_job()


if __name__ == "__main__":
    main()
