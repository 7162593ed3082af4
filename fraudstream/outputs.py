"""The paths commands write to: checked before any work, written atomically.

A command checks its output with :func:`check_output_file` or :func:`check_output_dir`
before it reads, computes or sends anything, so that a path it would refuse costs no time
and destroys nothing; :func:`write_atomically` writes a file through a temporary name.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from fraudstream.errors import FraudstreamError


class OutputError(FraudstreamError):
    """An output path that cannot be written, or would replace data it must not."""


def _check_parents(path: Path, option: str) -> None:
    """Refuse ``path`` when its nearest existing ancestor is not a directory."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{option} {path}: {parent} is not a directory")
            return


def _covers(path: Path, source: Path) -> bool:
    """Whether ``source`` is ``path`` (symbolic and hard links included) or lies inside it."""
    if path.exists() and source.exists() and path.samefile(source):
        return True
    return source.resolve().is_relative_to(path.resolve())


def _refuse_inputs(path: Path, option: str, inputs: Iterable[Path | None]) -> None:
    for source in inputs:
        if source is not None and _covers(path, source):
            raise OutputError(
                f"{option} {path} would replace the input {source}; give another path"
            )


def check_output_file(
    path: Path, option: str, *, inputs: Iterable[Path | None] = (), force: bool = False
) -> Path:
    """Refuse the output file ``path`` (named ``option`` in messages) when it is a directory,
    an input, or exists without ``force``; return it."""
    _check_parents(path, option)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a directory; give a file path")
    _refuse_inputs(path, option, inputs)
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputError(f"{option} {path} exists; pass --force to replace it")
    return path


def check_output_dir(path: Path, option: str, *, inputs: Iterable[Path | None] = ()) -> Path:
    """Refuse the output directory ``path`` when it exists but is not a directory, or is or
    holds an input; return it."""
    _check_parents(path, option)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise OutputError(f"{option} {path} exists and is not a directory")
    _refuse_inputs(path, option, inputs)
    return path


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a fresh temporary file beside ``path``, then rename it to ``path``;
    the temporary file is removed when writing fails. Refuses a directory ``path``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
