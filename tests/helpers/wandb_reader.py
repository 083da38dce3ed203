"""Read back what a W&B offline run logged (the one place in the suite that parses ``run-*.wandb`` files).

wandb >= 0.30 offline runs write only a binary ``run-<id>.wandb`` file and ship no public reader. Its format: a
7-byte header (``:W&B`` + version bytes), then LevelDB-log-style chunks in 32 KiB blocks. Each chunk has a 7-byte
header (crc32: 4 bytes, payload length: 2 bytes little-endian, type: 1 byte, 1 full / 2 first / 3 middle / 4 last)
and never crosses a block; a block tail shorter than 7 bytes is padding. Each reassembled record is a
``wandb.proto.wandb_internal_pb2.Record``; history rows are ``record.history.item`` (``key``/``nested_key``,
``value_json``).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

_HEADER = 7
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes) -> list[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B datastore file (missing ':W&B' header)")
    records: list[bytes] = []
    pending = b""
    pos = _HEADER
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        payload = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            records.append(payload)
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            records.append(pending + payload)
            pending = b""
        elif kind == 0 and length == 0:  # zero padding at the end of the file
            break
    return records


def _run_file(run_dir: str | Path) -> Path:
    files = sorted(Path(run_dir).rglob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb file under {run_dir}, found {[str(f) for f in files]}")
    return files[0]


def read_history(run_dir: str | Path, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Return the history rows (one dict per ``wandb.log`` call, ``_step`` included) of a finished offline run.

    ``run_dir`` is the run's folder (``.../wandb/offline-run-*``) or any folder above it holding exactly one run.
    wandb 0.31's ``finish()`` can return before its writer has flushed the file (seen on a loaded machine), so this
    re-reads the file (also when it was caught mid-record) until the run's final ``exit`` record is in it, for up to
    ``timeout`` seconds.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout
    while True:
        records = []
        try:
            for raw in _records(_run_file(run_dir).read_bytes()):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(raw)
                records.append(record)
        except DecodeError:  # read while wandb's writer was mid-record: read again
            if time.monotonic() > deadline:
                raise
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rows: list[dict[str, Any]] = []
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows


def series(rows: list[dict[str, Any]], key: str, step_key: str = "trainer/global_step") -> list[tuple[int, Any]]:
    """``(step, value)`` pairs of one logged key, with the step read from ``step_key`` (Lightning's x-axis)."""
    return [(int(row[step_key]) if step_key in row else int(row["_step"]), row[key]) for row in rows if key in row]
