#!/usr/bin/env python3
"""Shrinks a `cdl train` checkpoint for shipping with the browser page (web/assets/).

Keeps the metadata and the model and EMA tensors, drops the Adam moments (two thirds of the
file), so the page loads the weights at once and continues training with a fresh optimizer.
Standard library only: the safetensors layout is an 8-byte little-endian header length, a JSON
header of {name: {dtype, shape, data_offsets}} plus __metadata__, then the tensor bytes.

    python3 tools/ship_weights.py runs/moons-cdl/checkpoint.safetensors web/assets/moons-cdl.safetensors
"""

import json
import struct
import sys

KEEP = ("model.", "ema.")


def main(src: str, dst: str) -> None:
    raw = open(src, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    out_header = {"__metadata__": header.get("__metadata__", {})}
    chunks = []
    offset = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0] if kv[0] != "__metadata__" else -1):
        if name == "__metadata__" or not name.startswith(KEEP):
            continue
        a, b = info["data_offsets"]
        chunks.append(body[a:b])
        out_header[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [offset, offset + b - a]}
        offset += b - a
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the tensor bytes to 8
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    print(f"{dst}: {len(out_header) - 1} tensors, {8 + len(text) + offset} bytes (from {len(raw)})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: ship_weights.py CHECKPOINT OUT")
    main(sys.argv[1], sys.argv[2])
