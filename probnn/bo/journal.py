"""Append-only JSON Lines journal of a Bayesian optimization run.

The first line is a header with the run's settings; every later line is one evaluation.
Each line is flushed and synced to disk before :meth:`Journal.append` returns, so a run
killed at any moment keeps every evaluation whose ``tell`` completed.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

JOURNAL_VERSION = 1


class Journal:
    """Open journal file; create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path, header: dict, evaluations: list[dict]):
        self.path = Path(path)
        self.header = header
        self.evaluations = evaluations

    @classmethod
    def create(cls, path, header: dict) -> "Journal":
        """Start a new journal at ``path``; an existing non-empty file is an error."""
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            raise ValueError(
                f"Journal {path} already exists; resume it with BayesianOptimization.resume({str(path)!r}) "
                "(or `probnn bo --resume DIR`), or choose another output folder."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"kind": "header", "version": JOURNAL_VERSION, **header}
        journal = cls(path, header, [])
        journal._write_line(header)
        return journal

    @classmethod
    def open(cls, path) -> "Journal":
        """Read an existing journal for resuming.

        A last line cut off by a crash (no trailing newline, invalid JSON) was never
        acknowledged to the caller. It is moved to ``<journal>.partial``, so the file is
        valid again and nothing is discarded silently.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"No journal at {path}; start a new run instead of resuming.")
        text = path.read_text()
        lines = text.split("\n")
        if not text.endswith("\n") and lines[-1]:
            fragment = lines[-1]
            partial = path.with_name(path.name + ".partial")
            with open(partial, "a") as handle:
                handle.write(fragment + "\n")
            with open(path, "r+") as handle:
                handle.truncate(len(text) - len(fragment))
            warnings.warn(
                f"The last line of {path} was cut off (the run was killed while writing it); "
                f"it was moved to {partial}.",
                RuntimeWarning,
                stacklevel=2,
            )
            lines = lines[:-1]
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: invalid JSON ({error.msg}); fix or remove that line.") from None
        if not records or records[0].get("kind") != "header":
            raise ValueError(f"{path} does not start with a probnn journal header.")
        header = records[0]
        if header.get("version") != JOURNAL_VERSION:
            raise ValueError(f"{path} has journal version {header.get('version')}, expected {JOURNAL_VERSION}.")
        evaluations = [record for record in records[1:] if record.get("kind") == "evaluation"]
        return cls(path, header, evaluations)

    def append(self, record: dict) -> None:
        """Append one evaluation and sync it to disk before returning."""
        record = {"kind": "evaluation", **record}
        self._write_line(record)
        self.evaluations.append(record)

    def _write_line(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False) + "\n"
        with open(self.path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
