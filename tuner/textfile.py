"""Reading a user's text file (configuration, scenario, query templates) with one kind of error message."""

from __future__ import annotations

from pathlib import Path

from tuner.errors import TunerError


def read_text(path: str | Path, error: type[TunerError]) -> str:
    """The file's text (UTF-8, a byte-order mark dropped); ``error`` naming the file when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file") from None
