"""Atomic file output: nothing is ever written half.

Every output goes to a temporary ``.<name>.<host>-<pid>.<random>.part`` file
beside its target and is moved into place when complete. The finished file
gets the permissions any new file would (``0o666`` minus the umask), so
colleagues on shared storage can read it as they can read everything else the
user writes. ``.part`` files left behind by killed writers (their process
gone, or untouched for :data:`STALE_SECONDS`) are removed by the next write
into their folder (:func:`remove_stale_parts`; each folder is listed once per
process). Running out of disk space, a read-only or
write-protected folder and similar failures of the file system become one
:class:`~s2l_tools.errors.S2LError` naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from s2l_tools.errors import S2LError

#: a ``.part`` file untouched for this long is a leftover whoever wrote it
STALE_SECONDS = 6 * 3600

_FIXES = {
    errno.ENOSPC: ("the disk is full", "free some space or choose another output folder"),
    errno.EDQUOT: ("the disk quota is exceeded",
                   "free some space or choose another output folder"),
    errno.EROFS: ("the folder is on a read-only file system", "choose another output folder"),
    errno.EACCES: ("permission denied", "choose an output folder you can write to"),
    errno.EPERM: ("permission denied", "choose an output folder you can write to"),
    errno.EEXIST: ("a parent of the output is a file, not a folder",
                   "choose another output folder"),  # mkdir(exist_ok=True) over a file
    errno.ENOTDIR: ("a parent of the output is a file, not a folder",
                    "choose another output folder"),
    errno.EISDIR: ("a folder of this name is in the way",
                   "move it away or choose another output name"),
    errno.EFBIG: ("the file is larger than this file system or a limit allows",
                  "choose another output folder"),
    errno.ENAMETOOLONG: ("the file name is too long", "choose a shorter output name"),
}


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and put back (not thread-safe, but brief)
    os.umask(mask)
    return mask


def _host() -> str:
    return "".join(c for c in socket.gethostname().split(".")[0] if c.isalnum() or c == "-")[:32]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (someone else's) or cannot tell: keep the file
    return True


#: folders already cleaned by this process (a folder is listed once, not once per write)
_CLEANED: set[str] = set()
#: ``.<target>.<host>-<pid>.<random>.part`` (ours), or ``.<target>.<random>.part`` (before 0.3)
_PART = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.)?"
                   r"[A-Za-z0-9_]{6,}\.part$")


def remove_stale_parts(folder: str | os.PathLike, *, max_age: float = STALE_SECONDS,
                       force: bool = False) -> list[Path]:
    """Remove the temporary files that killed writes left in ``folder``.

    A ``.<name>.<host>-<pid>.<random>.part`` file is stale when it names
    this host and a process that no longer runs; any ``.<name>.<...>.part``
    file written by :func:`atomic_path` is stale when it has not been
    modified for ``max_age`` seconds (a writer on another host, or an older
    name). Each folder is listed once per process unless ``force``.

    Returns
    -------
    removed : list of Path
    """
    folder = Path(folder)
    key = os.path.abspath(folder)
    if key in _CLEANED and not force:
        return []
    _CLEANED.add(key)
    removed = []
    host, now = _host(), time.time()
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(".part")]
    except OSError:
        return removed
    for entry in entries:
        match = _PART.match(entry.name)
        if match is None:
            continue
        stale = False
        if match["pid"] and match["host"] == host:
            pid = int(match["pid"])
            stale = pid != os.getpid() and not _pid_alive(pid)
        with contextlib.suppress(OSError):
            stale = stale or now - entry.stat(follow_symlinks=False).st_mtime > max_age
        if stale and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def os_error_message(path: str | os.PathLike, exc: BaseException) -> str | None:
    """One line for a failure of the file system writing ``path``, or None.

    Known ``errno`` values get their own words; other ``OSError`` (e.g. a
    short write, as tifffile reports a full disk) and torch's writer failures
    get the generic check-the-folder advice.
    """
    if isinstance(exc, OSError):
        known = _FIXES.get(exc.errno)
        if known is not None:
            what, fix = known
            return f"{path}: cannot write ({what}); {fix}"
    elif not (isinstance(exc, RuntimeError)
              and any(k in str(exc) for k in ("inline_container", "PytorchStreamWriter",
                                               "file write failed"))):
        return None
    text = " ".join(str(exc).split())[:120] or type(exc).__name__
    return (f"{path}: cannot write ({text}); check that the disk has free space and the "
            "folder is writable, or choose another output folder")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary file lives in the same folder (same file system), so the
    final ``os.replace`` is atomic: readers see the old file or the new one,
    never a partial one. On error the temporary file is removed. The result
    has the permissions of any new file (``0o666`` minus the umask).

    Raises
    ------
    S2LError
        The folder cannot be created or written (disk full, read-only,
        permission denied...): one line naming ``path`` and the fix.

    Examples
    --------
    >>> with atomic_path("out.tif") as tmp:   # doctest: +SKIP
    ...     tifffile.imwrite(tmp, mask)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}-{os.getpid()}.",
                                   suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        msg = os_error_message(path, exc)
        if msg is None:
            raise
        raise S2LError(msg) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError, OSError):
            os.unlink(tmp)
        msg = os_error_message(path, exc) if isinstance(exc, Exception) else None
        if msg is not None:
            raise S2LError(msg) from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_csv_atomic(path: str | os.PathLike, fieldnames, rows, *,
                     lineterminator: str = "\r\n") -> None:
    """Write a CSV table atomically: a header of ``fieldnames``, then one dict per row
    (UTF-8; ``lineterminator`` as :class:`csv.DictWriter`'s)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator=lineterminator)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(path, buf.getvalue().encode())
