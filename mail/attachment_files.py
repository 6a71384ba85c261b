"""Attachment content in file storage: content-addressed, one file per distinct body.

Used by the store (``mail.store``) and by the parse helper (``mail.parse_helper``), which
writes the files of the mail it parses when the worker's storage is Django's plain
``FileSystemStorage``, so that creating them (about 0.5 ms each on some ext4 disks) is not on
the worker's thread. Either way the file is complete, and on disk, before the row that names
it is inserted.

With local files (``FileSystemStorage``) a body is written to a temporary file beside its
final name and renamed into place, so its name never holds part of it: a write cut short (a
full disk, a killed process) leaves at most a stray temporary file. Before the rows that name
new files are inserted, ``flush`` puts the files on disk — one flush of their file system for
a whole batch (``syncfs``), which costs far less than a flush per file — so that a power cut
after the rows' commit cannot leave a row naming an empty or missing file (ext4 and others
may write a new name to disk before the bytes). A file already under the
name is reused only when it holds exactly these bytes; anything else there is replaced, which
also repairs a file damaged earlier. Other storages get Django's ``save`` under the same name
(a suffixed copy when a file of another size is there).

Files no row names any more are deleted by ``sweep`` (the dispatcher's, a directory a minute)
once they have been neither written nor reused for ``SWEEP_GRACE``: reusing a file renews its
time, so it is not swept from under the row about to name it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import re
import secrets
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils._os import safe_makedirs  # type: ignore[attr-defined]  # Django 5.2, not in the stubs
from django.utils.functional import LazyObject

logger = logging.getLogger(__name__)

_COMPARE_CHUNK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")
_PARTIAL = re.compile(r"\.[0-9a-f]{64}\.[0-9a-f]{8}\.part")  # _keep_local's temporary files
_ASIDE = re.compile(r"\.([0-9a-f]{64})\.sweep")  # a file the sweep is about to delete


def keep(storage: Storage, data: bytes) -> tuple[str, str]:
    """Store ``data`` once per distinct body; returns (name in ``storage``, sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"attachments/{digest[:2]}/{digest}"
    if isinstance(storage, LazyObject):  # default_storage: the storage it stands for
        storage = storages["default"]
    if type(storage) is FileSystemStorage:
        _keep_local(storage, Path(storage.path(name)), data)
        return name, digest
    if storage.exists(name) and storage.size(name) == len(data):
        return name, digest
    return storage.save(name, ContentFile(data)), digest


#: files this process has found to hold their content, by path: (inode, size, mtime) then. A
#: body attached to many messages (a logo, a signature) is read back once, not once per copy.
_verified: dict[Path, tuple[int, int, int]] = {}
_VERIFIED_MAX = 10_000


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``data`` (read a piece at a time, unless this
    process found so before and the file has not changed since)."""
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            if info.st_size != len(data):
                return False
            seen = (info.st_ino, info.st_size, info.st_mtime_ns)
            if _verified.get(path) == seen:
                return True
            view = memoryview(data)
            for start in range(0, len(data), _COMPARE_CHUNK):
                if file.read(_COMPARE_CHUNK) != view[start : start + _COMPARE_CHUNK]:
                    return False
    except (FileNotFoundError, IsADirectoryError):
        return False
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[path] = seen
    return True


def _keep_local(storage: FileSystemStorage, path: Path, data: bytes) -> None:
    global _unflushed
    if _holds(path, data) and _refreshed(path):
        # another process may have written it and not flushed it yet (or died before): the
        # row about to name it needs it on disk as much as a file written here
        _unflushed = True
        return
    mode = storage.directory_permissions_mode
    if mode is not None:  # as FileSystemStorage creates them: that mode on every level
        safe_makedirs(path.parent, mode, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        if storage.file_permissions_mode is not None:
            partial.chmod(storage.file_permissions_mode)
        partial.replace(path)  # whole or not at all; another writer's copy is identical
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _unflushed = True


# --- on disk before the rows --------------------------------------------------------------------
#: whether this process wrote (or reused) a file since its last ``flush``
_unflushed = False


def flush(storage: Storage, helper_wrote: bool = False) -> None:
    """Put the attachment files written so far on disk — this process's, and with
    ``helper_wrote`` those its parse helper may have written — before rows naming them are
    committed. One ``syncfs`` of the storage's file system (``os.sync`` where there is none),
    not a flush per file: on this project's benchmark mailbox a flush per file made the first
    sync 37 % slower. Nothing to do for other storages, which keep what they save."""
    global _unflushed
    if isinstance(storage, LazyObject):
        storage = storages["default"]
    if type(storage) is not FileSystemStorage or not (_unflushed or helper_wrote):
        return
    _unflushed = False  # before the flush: a file written during it marks it again
    try:  # the files' own directory: it may be a file system of its own (a mount, a link)
        fd = os.open(storage.path("attachments"), os.O_RDONLY)
    except OSError:  # no directory yet (nothing written), or one that cannot be opened
        return
    try:
        if _syncfs is None:
            os.sync()
        elif _syncfs(fd) != 0:
            code = ctypes.get_errno()
            if code != errno.ENOSYS:  # a write that failed (EIO, ENOSPC): no row may name it
                raise OSError(code, f"flushing the attachment files failed: {os.strerror(code)}")
            os.sync()
    finally:
        os.close(fd)


def _load_syncfs() -> Any:
    """Linux's ``syncfs(fd)`` (flush one file system), which the standard library lacks."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def _refreshed(path: Path) -> bool:
    """Mark a file that is being reused as recently used (its modification time), so that
    ``sweep`` leaves it alone until the row that is about to name it exists. False when it
    went meanwhile: the caller writes it again."""
    seen = _verified.get(path)
    if seen is not None and seen[2] > time.time_ns() - _REFRESH_AFTER_NS:
        return True
    try:
        os.utime(path)
        info = path.stat()
    except OSError:  # gone meanwhile, or not ours to touch (another user's file): write anew
        _verified.pop(path, None)
        return False
    _verified[path] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return True


# --- files no row names any more ---------------------------------------------------------------
#: a file younger than this is never swept: its message may not be committed yet (a batch is
#: stored within minutes), or a worker is reusing it right now
SWEEP_GRACE = timedelta(days=1)
SWEEP_EVERY = timedelta(minutes=1)  # one of the 256 directories per turn: all in about 4 h
_REFRESH_AFTER_NS = 3600 * 10**9  # a reused file's time is renewed at most once an hour
_SWEEP_BATCH = 500


def sweep(now: datetime, prefix: str | None = None) -> int:
    """Delete the attachment files of one directory (``attachments/<prefix>``: by default the
    one whose turn it is, ``_next_prefix``) that no attachment row names and that were not
    written or reused within ``SWEEP_GRACE``, and temporary files left by writes cut short.
    Their messages were deleted (a connection removed, mail gone from the server and purged)
    or their batch was given up on. Local files only (Django's plain ``FileSystemStorage``);
    returns how many files went. A file is set aside before it is deleted (``_settle``), so a
    reuse at that moment keeps it."""
    storage = storages["default"]
    if type(storage) is not FileSystemStorage:
        return 0
    prefix = prefix or _next_prefix()
    directory = Path(storage.path(f"attachments/{prefix}"))
    # never later than this machine's clock: the files' times come from it
    cutoff = min(now.timestamp(), time.time()) - SWEEP_GRACE.total_seconds()
    removed = 0
    old: list[tuple[str, Path]] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            recent = entry.stat(follow_symlinks=False).st_mtime >= cutoff
        except FileNotFoundError:
            continue
        path = Path(entry.path)
        aside = _ASIDE.fullmatch(entry.name)
        if aside:  # left by a sweep that stopped midway: deleted, or put back if reused
            removed += _settle(path, path.with_name(aside.group(1)), cutoff)
            continue
        if recent:
            continue
        if _PARTIAL.fullmatch(entry.name):  # a write cut short
            removed += _unlink(path)
        elif _DIGEST.fullmatch(entry.name):
            old.append((f"attachments/{prefix}/{entry.name}", path))
    for start in range(0, len(old), _SWEEP_BATCH):
        removed += _remove_unnamed(old[start : start + _SWEEP_BATCH], cutoff)
    return removed


def _next_prefix() -> str:
    """The directory whose turn it is: a counter in the shared cache, so that every directory
    comes round whatever the dispatcher's rhythm (one lost with the cache starts over at 00)."""
    from django.core.cache import cache

    try:
        turn = cache.incr(_TURN_KEY)
    except ValueError:  # not there yet (or evicted)
        cache.set(_TURN_KEY, 0, None)
        turn = 0
    return f"{turn % 256:02x}"


_TURN_KEY = "mail:attachment-sweep:turn"


def _remove_unnamed(files: list[tuple[str, Path]], cutoff: float) -> int:
    from mail.models import MailAttachment

    named = set(
        MailAttachment.objects.filter(file__in=[name for name, _ in files]).values_list(
            "file", flat=True
        )
    )
    removed = 0
    for name, path in files:
        if name in named:
            continue
        # set aside under a name no writer looks for, then look at its time once more: a
        # reuse that renewed it before this is seen here, and it is put back; one after finds
        # no file and writes it anew (``_refreshed``). So a file is never deleted from under
        # a reuse, however the two interleave. (Without the step aside, a reuse between the
        # last look and the deletion lost the file under a row about to name it.)
        aside = path.with_name(f".{path.name}.sweep")
        _verified.pop(path, None)
        try:
            path.rename(aside)
        except FileNotFoundError:
            continue
        removed += _settle(aside, path, cutoff)
    return removed


def _settle(aside: Path, path: Path, cutoff: float) -> int:
    """A file the sweep set aside: deleted when it was not renewed since ``cutoff``, else put
    back under its name (a copy written there meanwhile holds the same bytes)."""
    try:
        if aside.stat().st_mtime >= cutoff:
            aside.replace(path)  # reused before it was set aside
            return 0
    except FileNotFoundError:
        return 0
    return _unlink(aside)


def _unlink(path: Path) -> int:
    _verified.pop(path, None)
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


def sweep_due(sender: Any = None, now: datetime | None = None, **kwargs: Any) -> int:
    """The dispatcher's part (``syncqueue.signals.dispatcher_pass``): one directory per
    ``SWEEP_EVERY``, whichever dispatcher gets there first."""
    from django.utils import timezone

    from syncqueue.locks import hold_lock

    seconds = int(SWEEP_EVERY.total_seconds())
    with hold_lock("mail-attachment-sweep", seconds=seconds, release=False) as due:
        removed = sweep(now or timezone.now()) if due else 0
    if removed:
        logger.info("Removed %d attachment file(s) that no message names any more.", removed)
    return removed


def present(storage: Storage, stored: tuple[str, str], size: int) -> bool:
    """Whether ``stored`` (name, sha256), written by the parse helper, names a file of
    ``size`` bytes under the name ``keep`` gives that digest (checked before a row names it)."""
    name, digest = stored
    if not _DIGEST.fullmatch(digest) or name != f"attachments/{digest[:2]}/{digest}":
        return False
    try:
        return storage.size(name) == size
    except OSError:
        return False


def local_files() -> dict[str, Any] | None:
    """How a second process can write into the default storage exactly as this one would: its
    directory and permissions, when it is Django's plain ``FileSystemStorage`` (a subclass or
    a remote storage may do anything on save, so only this process writes to those)."""
    storage = storages["default"]
    if type(storage) is not FileSystemStorage:
        return None
    return {
        "location": storage.location,
        "FILE_UPLOAD_PERMISSIONS": storage.file_permissions_mode,
        "FILE_UPLOAD_DIRECTORY_PERMISSIONS": storage.directory_permissions_mode,
    }


def storage_for(described: dict[str, Any]) -> FileSystemStorage:
    """In the other process: the storage ``local_files`` described (settings configured)."""
    from django.conf import settings

    settings.FILE_UPLOAD_PERMISSIONS = described["FILE_UPLOAD_PERMISSIONS"]
    settings.FILE_UPLOAD_DIRECTORY_PERMISSIONS = described["FILE_UPLOAD_DIRECTORY_PERMISSIONS"]
    return FileSystemStorage(location=described["location"])
