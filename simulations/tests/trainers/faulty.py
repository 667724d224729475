#!/usr/bin/env python3
"""A trainer that fails on purpose, one way per mode (the tests' hostile
trainers). Standard library only: it reads and writes safetensors itself.

  faulty.py ok        writes the global model back unchanged (a valid answer)
  faulty.py exit      exits with status 3 after a message on stderr
  faulty.py hang      sleeps far past any timeout (in a child process too)
  faulty.py shape     writes every tensor with one value too many
  faulty.py missing   leaves the first tensor out
  faulty.py nan       writes NaN into the first tensor
"""

import json
import os
import struct
import subprocess
import sys
import time


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    meta = header.pop("__metadata__", None)
    tensors = {}
    for name, t in header.items():
        start, end = t["data_offsets"]
        count = (end - start) // 4
        tensors[name] = (t["shape"], list(struct.unpack(f"<{count}f", body[start:end])))
    return tensors, meta


def write(path, tensors):
    header, body = {}, b""
    for name, (shape, values) in tensors.items():
        data = struct.pack(f"<{len(values)}f", *values)
        header[name] = {
            "dtype": "F32",
            "shape": shape,
            "data_offsets": [len(body), len(body) + len(data)],
        }
        body += data
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)


def main():
    mode = sys.argv[1]
    tensors, _ = read(os.environ["TESSERA_MODEL_IN"])
    out = os.environ["TESSERA_MODEL_OUT"]
    first = sorted(tensors)[0]
    if mode == "exit":
        print("this trainer fails on purpose", file=sys.stderr)
        sys.exit(3)
    if mode == "hang":
        # A child in the same process group: the timeout must stop it too.
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", "tessera-faulty-hang"]
        )
        time.sleep(600)
    if mode == "shape":
        tensors = {n: ([len(v) + 1], v + [0.0]) for n, (s, v) in tensors.items()}
    elif mode == "missing":
        del tensors[first]
    elif mode == "nan":
        shape, values = tensors[first]
        tensors[first] = (shape, [float("nan")] + values[1:])
    elif mode != "ok":
        sys.exit(f"unknown mode {mode}")
    write(out, tensors)


if __name__ == "__main__":
    main()
