"""Where files go under the output folder: containment, the folder cache, the ``.part`` suffix.

``join_within``/``locate`` are the last guard before anything touches the disk:
no name, whatever made it, can point outside the output folder, not even
through a symbolic link planted inside it.

This module owns the process-wide folder cache, both halves of it: the folders
``locate`` has checked (``_verified``) and those ``ensure_folder`` has made or
found (``_made``). Only this module changes them: ``forget_folders`` for a folder
removed under a running download (``download.partial.open_part``), ``prune_empty``
for the empty folders fetcher removes itself.
"""

from __future__ import annotations

import os
import stat

PART_SUFFIX = ".part"  # a file still being written: a download, or the manifest


def join_within(root: str, relative: str) -> str:
    """Join ``relative`` under ``root``; raise ValueError if it would escape.

    Like pip's ``join_within_directory``: the result can never point outside root,
    not even through a symbolic link planted inside it. See ``locate``.
    """
    return locate(root, relative)[0]


# What ``locate`` learned about the target on its way, for callers that can skip a system call:
FOUND = "found"  # something is at the target's name, or it is not known
NO_FILE = "no-file"  # the target's name is free (its folder exists)
NO_FOLDER = "no-folder"  # a folder of the target is missing: neither it nor its .part can exist
_LINK = "link"  # a link, or something odd, below root: the thorough check decides


def locate(root: str, relative: str) -> tuple[str, str]:
    """``join_within``, and whether the target exists: ``FOUND``, ``NO_FILE`` or ``NO_FOLDER``.

    Only the components below ``root`` are looked at, one ``lstat`` each (it stops
    at the first that does not exist), avoiding ``realpath``'s lstat of every
    component from ``/``; a link among them is resolved and the real path
    checked. (The root itself may be a link: it is the user's choice.) Folders
    that no other user can replace are remembered (see ``_walk_folders``), so a
    download into a known folder costs one ``lstat``, of the target itself.
    """
    root = _absolute_roots.get(root) or _absolute(root)
    if os.path.isabs(relative) or "\x00" in relative:
        raise ValueError(f"unsafe relative path {relative!r}")
    parts = relative.split(os.sep)
    if os.altsep is None and "" not in parts and "." not in parts and ".." not in parts:
        # Already normal (no empty, "." or ".." component): joining cannot leave root, and
        # normpath would change nothing (the usual name, at a fraction of abspath's cost).
        target = (root if root.endswith(os.sep) else root + os.sep) + relative
    else:
        target = os.path.abspath(os.path.join(root, relative))
        # Both are normalised absolute paths, so "inside" is a prefix up to a separator.
        if not target.startswith(root if root.endswith(os.sep) else root + os.sep) or target == root:
            raise ValueError(f"path {relative!r} escapes {root!r}")
    presence = _inspect(root, target)
    if presence == _LINK:
        real_root = os.path.realpath(root)
        real_target = os.path.realpath(target)
        if os.path.commonpath([real_root, real_target]) != real_root or real_target == real_root:
            raise ValueError(f"path {relative!r} leads out of {root!r} through a symbolic link")
        return target, FOUND
    return target, presence


_absolute_roots: dict[str, str] = {}  # absolute output folders, normalised once


def _absolute(root: str) -> str:
    """``os.path.abspath(root)``, remembered when ``root`` is absolute (a relative one depends on the cwd)."""
    absolute = os.path.abspath(root)
    if os.path.isabs(root) and len(_absolute_roots) < _VERIFIED_ROOTS:
        _absolute_roots[root] = absolute
    return absolute


def _inspect(root: str, target: str) -> str:
    """``_LINK`` if a component below ``root`` is a link (or cannot be looked at), else the target's presence."""
    folder = os.path.dirname(target)
    if folder != root and folder not in _verified.get(root, ()):
        presence = _walk_folders(root, folder)
        if presence is not None:
            return presence
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return NO_FILE
    except OSError:
        return _LINK  # unknown: take the slow, thorough path
    return _LINK if stat.S_ISLNK(mode) else FOUND


# By output folder, the folders below it known to be real directories that no other user
# can replace (with a link, say) while this process runs: lstat'ed once, not once per file.
_verified: dict[str, set[str]] = {}
_VERIFIED_LIMIT = 65_536
_VERIFIED_ROOTS = 64  # a long-lived API process may write to many output folders: stay bounded


def _walk_folders(root: str, folder: str) -> str | None:
    """lstat each folder from ``root`` down to ``folder``: None if all are real directories.

    Else ``NO_FOLDER`` (one is missing) or ``_LINK`` (one is a link, or not a
    folder, or cannot be looked at).

    A folder is remembered only when every folder above it, up to and including
    ``root``, is ``_guarded``: replacing a directory by a link needs write access
    to its parent, so only this user (or root) could, and this user's processes
    are outside what any path check can defend against; fetcher itself never
    removes or renames a folder. The check before remembering is the same as
    the check each file used to make; it only stops being repeated. Folders
    under a group- or world-writable one are looked at for every file, as before.
    """
    try:
        guarded = _guarded(os.stat(root))
    except OSError:
        guarded = False
    if root not in _verified and len(_verified) >= _VERIFIED_ROOTS:
        _verified.clear()
    verified = _verified.setdefault(root, set())
    path = root
    for part in folder[len(root):].strip(os.sep).split(os.sep):
        path = os.path.join(path, part)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return NO_FOLDER  # nothing below a missing folder exists either
        except OSError:
            return _LINK
        if not stat.S_ISDIR(info.st_mode):
            return _LINK
        if guarded:
            if len(verified) >= _VERIFIED_LIMIT:  # a crawl over millions of folders: stay bounded
                verified.clear()
            verified.add(path)
            guarded = _guarded(info)
    return None


def _guarded(info: os.stat_result) -> bool:
    """Only this user (or root) can add, remove or rename entries of this directory."""
    return info.st_uid in (os.geteuid(), 0) and not info.st_mode & 0o022


def forget_folders() -> None:
    """Look at (and make) every folder again: one was removed while this process ran."""
    _verified.clear()
    _made.clear()
    _new.clear()


_made: set[str] = set()  # folders this process made or found: os.makedirs once per folder, not per file
_new: set[str] = set()  # of those, the ones this process made itself: nothing of an earlier run is in them
_MADE_LIMIT = 65_536


def ensure_folder(folder: str) -> None:
    """``os.makedirs(folder, exist_ok=True)``, remembered so the next file in it costs nothing."""
    if folder in _made:
        return
    try:
        os.mkdir(folder)
        made = True
    except FileExistsError:
        made = False
    except FileNotFoundError:  # a parent is missing too
        os.makedirs(folder, exist_ok=True)
        made = True
    if len(_made) >= _MADE_LIMIT:  # a crawl over millions of hosts: stay bounded
        _made.clear()
        _new.clear()
    _made.add(folder)
    if made:
        _new.add(folder)


def made_here(folder: str) -> bool:
    """This process created ``folder`` (``ensure_folder``): what is in it, this process put there."""
    return folder in _new


def unmark_made(folder: str) -> None:
    """``folder`` now holds something ``made_here`` must not vouch for (a resume's meta file)."""
    _new.discard(folder)


def prune_empty(folder: str, root: str) -> None:
    """Remove ``folder`` and its parents below ``root`` while they are empty, and forget them.

    For a failed download that left nothing: an empty ``HOST/`` folder is clutter.
    Only an empty folder can be removed (rmdir), so one that another download is
    writing into stays; one removed just before another download opens its part
    there is made again (see ``download.partial.open_part``).
    """
    root = os.path.abspath(root)
    folder = os.path.abspath(folder)
    while folder != root and folder.startswith(root + os.sep):
        try:
            os.rmdir(folder)
        except OSError:  # not empty (the usual case), or already gone
            return
        _made.discard(folder)
        _new.discard(folder)
        _verified.get(root, set()).discard(folder)
        folder = os.path.dirname(folder)
