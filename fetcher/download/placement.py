"""``--on-exists``: what happens when a download's final name is already taken.

- ``skip`` (default): an existing file is never touched. When the name is known
  before the request, the URL is recorded as ``skipped`` without any request;
  when it depends on the response (an extension from Content-Type, a
  Content-Disposition name) the request is made and dropped once the headers
  show the name is taken. With an expected checksum, the existing file must
  match it, or the URL fails with ``bad-content`` (nothing is replaced).
- ``overwrite``: the new file replaces the old one atomically (``os.replace``).
- ``rename``: the old file stays and the new one is saved as ``NAME (1).EXT``,
  ``NAME (2).EXT``, ... Spaces and parentheses never occur in the names
  fetcher derives from URLs, so a renamed copy can never take another URL's name.

Except with ``overwrite``, the final step is a no-clobber rename, so a file that
appears while a download runs (another process, another URL of the same list
with the same ``filename``) is never overwritten either. On Linux that is one
``renameat2(RENAME_NOREPLACE)`` call; where the kernel, the C library or the
filesystem lacks it, a hard link (``os.link`` fails if the name exists) and an
unlink of the ``.part``; where hard links are not supported either, a
check-then-rename, with a small race window.
"""

from __future__ import annotations

import errno
import os
import posixpath
import sys
from collections.abc import Callable, Iterator

from fetcher.download.checksum import file_matches
from fetcher.models import ErrorKind, Result, Status, FetchTask, failed, input_extra
from fetcher.files.paths import ensure_folder, join_within

MAX_COPIES = 1000


def kept_file(task: FetchTask, name: str, out: str, on_exists: str, attempts: int,
              target: str | None = None) -> Result | None:
    """With ``skip``, the Result for a file already at ``name``; None when the download should go on.

    ``attempts`` is 0 when no request was made, else the task's attempt;
    ``target`` is ``join_within(out, name)`` when the caller has it already.
    """
    if on_exists != "skip":
        return None
    if target is None:
        target = join_within(out, name)
    if not os.path.isfile(target):
        return None
    # Called before fetch_one's error translation: a disk error must still be a Result.
    try:
        matches = task.checksum is None or file_matches(target, task.checksum)
        size = os.path.getsize(target)
    except OSError as exc:
        return failed(task, ErrorKind.IO, f"cannot read existing file {name}: {exc.strerror or exc}",
                      attempts=attempts)
    algorithm, _, expected = (task.checksum or "").partition(":")
    if not matches:
        return failed(task, ErrorKind.BAD_CONTENT,
                      f"existing file {name} does not match the expected {algorithm}; "
                      "--on-exists overwrite replaces it", attempts=attempts)
    return Result(url=task.url, status=Status.SKIPPED, path=name, bytes=size,
                  sha256=expected if algorithm == "sha256" else None, attempts=attempts,
                  index=task.index, extra=input_extra(task.meta))


def taken_meanwhile(task: FetchTask, name: str, out: str) -> Result:
    """The Result when ``skip`` found ``name`` taken after the download began; the body is dropped."""
    kept = kept_file(task, name, out, "skip", task.attempt)
    return kept or failed(task, ErrorKind.IO, f"{name} is taken by something that is not a file")


def place(part: str, out: str, name: str, on_exists: str, target: str | None = None) -> str | None:
    """Move a complete, verified ``.part`` file to ``name`` under ``out``.

    ``target`` is ``join_within(out, name)`` when the caller has it already.

    Returns:
        The name used (``rename`` may add `` (N)``), or None when ``skip`` found
        the name taken meanwhile (the ``.part`` is then removed).

    Raises:
        OSError: the disk refused, or ``rename`` ran out of copy numbers.
    """
    if target is None:
        target = join_within(out, name)
    ensure_folder(os.path.dirname(target))
    if on_exists == "overwrite":
        os.replace(part, target)
        return name
    candidates = copy_names(name) if on_exists == "rename" else iter([name])
    placed = False
    try:
        for candidate in candidates:
            if _name_no_clobber(part, target if candidate == name else join_within(out, candidate)):
                placed = True
                return candidate
    finally:
        if not placed:  # skip found the name taken, rename ran out, or the disk refused
            _remove_quietly(part)
    if on_exists == "skip":
        return None
    raise OSError(f"{name} and its first {MAX_COPIES} numbered copies all exist")


def copy_names(name: str) -> Iterator[str]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``, ... in the same folder."""
    yield name
    folder, base = posixpath.split(name)
    stem, ext = posixpath.splitext(base)
    for number in range(1, MAX_COPIES + 1):
        yield posixpath.join(folder, f"{stem} ({number}){ext}")


def _name_no_clobber(source: str, destination: str) -> bool:
    """Rename ``source`` to ``destination`` unless that name exists.

    True: done, ``source`` is gone. False: the name is taken, ``source`` is untouched.
    """
    renamed = _rename_no_clobber(source, destination)
    if renamed is not None:
        return renamed
    if not _link_no_clobber(source, destination):
        return False
    _remove_quietly(source)  # gone already if the link fell back to a rename
    return True


# renameat2(2) from the C library, or None where there is none (not Linux, or glibc older than 2.28).
_RenameAt2 = Callable[[int, bytes, int, bytes, int], int]
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
# errno values meaning "RENAME_NOREPLACE is not available here", not "this rename failed".
_NO_NOREPLACE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


def _load_renameat2() -> _RenameAt2 | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here, not at the top: it costs a few ms at start, and only placing needs it

    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


class _NotLoaded:
    """``_renameat2`` before its first use."""


_NOT_LOADED = _NotLoaded()
_renameat2: _RenameAt2 | None | _NotLoaded = _NOT_LOADED


def renameat2() -> _RenameAt2 | None:
    """The C library's renameat2, looked up on first use; None where there is none."""
    global _renameat2
    if isinstance(_renameat2, _NotLoaded):
        _renameat2 = _load_renameat2()
    return _renameat2


def _rename_no_clobber(source: str, destination: str) -> bool | None:
    """One atomic ``renameat2(RENAME_NOREPLACE)``: True if renamed, False if the name is taken.

    None when that call is not available (the caller falls back to a hard link).
    The first refusal by the kernel or the filesystem turns it off for the rest
    of the process: the fallback is as safe, only one system call dearer.
    """
    global _renameat2
    function = renameat2()
    if function is None:
        return None
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), _RENAME_NOREPLACE) == 0:
        return True
    code = _ctypes_errno()
    if code == errno.EEXIST:
        return False
    if code in _NO_NOREPLACE:
        _renameat2 = None
        return None
    raise OSError(code, os.strerror(code), source, None, destination)


def _ctypes_errno() -> int:
    import ctypes  # loaded already by renameat2()

    return ctypes.get_errno()


def _link_no_clobber(source: str, destination: str) -> bool:
    """Give ``source`` the name ``destination`` too, unless that name exists; True on success."""
    try:
        os.link(source, destination)
        return True
    except FileExistsError:
        return False
    except OSError:
        # No hard links here (some FUSE, SMB or FAT mounts): check, then rename.
        if os.path.lexists(destination):
            return False
        os.replace(source, destination)
        return True


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
