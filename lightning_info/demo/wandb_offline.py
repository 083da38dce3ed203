"""Read back a W&B offline run without an account: its name, group, config, history rows and summary.

wandb >= 0.30 offline runs write only a binary ``run-<id>.wandb`` file and ship no public reader. Its format: a
7-byte header (``:W&B`` + version bytes), then LevelDB-log-style chunks in 32 KiB blocks. Each chunk has a 7-byte
header (crc32: 4 bytes, payload length: 2 bytes little-endian, type: 1 byte, 1 full / 2 first / 3 middle / 4 last)
and never crosses a block; a block tail shorter than 7 bytes is padding. Each reassembled record is a
``wandb.proto.wandb_internal_pb2.Record``: ``run`` (name, group, initial config), ``config`` and ``summary`` updates,
and ``history`` rows (``item.key`` or ``item.nested_key`` with ``value_json``). Checked on wandb 0.31.0. Needs wandb
(for its protobuf classes), imported on use.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEADER = 7
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What one offline run holds: ``history`` has one dict per ``wandb.log`` call (``_step`` included)."""

    path: Path
    name: str = ""
    group: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


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


def run_files(run_dir: str | Path) -> list[Path]:
    """Every ``run-*.wandb`` file under ``run_dir``, oldest run first (wandb names run folders by start time)."""
    return sorted(Path(run_dir).rglob("run-*.wandb"), key=lambda f: f.parent.name)


def _items(items: Iterable[Any]) -> dict[str, Any]:
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in items}


def read_run(run_file: str | Path, timeout: float = 30.0) -> OfflineRun:
    """Read one finished offline run from its ``run-*.wandb`` file.

    wandb 0.31's ``finish()`` can return before its writer has flushed the file (seen on a loaded machine), so this
    re-reads the file (also when it was caught mid-record) until the run's final ``exit`` record is in it, for up to
    ``timeout`` seconds.

    Raises:
        ValueError: the file is not a W&B datastore file.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    path = Path(run_file)
    deadline = time.monotonic() + timeout
    while True:
        records = []
        try:
            for raw in _records(path.read_bytes()):
                record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf
                record.ParseFromString(raw)
                records.append(record)
        except DecodeError:  # read while wandb's writer was mid-record: read again
            if time.monotonic() > deadline:
                raise
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    run = OfflineRun(path)
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.group = record.run.display_name, record.run.run_group
            run.config.update(_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
    run.config.pop("_wandb", None)
    return run


def read_history(run_dir: str | Path, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The history rows of the one offline run under ``run_dir`` (its folder or any folder above it).

    Raises:
        FileNotFoundError: ``run_dir`` does not hold exactly one run.
    """
    files = run_files(run_dir)
    if len(files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb file under {run_dir}, found {[str(f) for f in files]}")
    return read_run(files[0], timeout).history


def series(rows: list[dict[str, Any]], key: str, step_key: str = "trainer/global_step") -> list[tuple[int, Any]]:
    """``(step, value)`` pairs of one logged key, with the step read from ``step_key`` (Lightning's x-axis)."""
    return [(int(row[step_key]) if step_key in row else int(row["_step"]), row[key]) for row in rows if key in row]
