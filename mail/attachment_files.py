"""Attachment content in file storage: content-addressed, one file per distinct body.

Used by the store (``mail.store``) and by the parse helper (``mail.parse_helper``), which
writes the files of the mail it parses when the worker's storage is plain local files, so
that creating them (about 0.5 ms each on an ext4 disk) is not on the worker's thread. Either
way the file exists before the row that names it is inserted, and a body seen before is not
written again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage


def keep(storage: Storage, data: bytes) -> tuple[str, str]:
    """Store ``data`` once per distinct body; returns (name in ``storage``, sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"attachments/{digest[:2]}/{digest}"
    if storage.exists(name) and storage.size(name) == len(data):
        return name, digest
    # new, or a file cut short by a write that failed (a full disk): a file of its own
    return storage.save(name, ContentFile(data)), digest


def local_files() -> dict[str, Any] | None:
    """How a second process can write into the default storage exactly as this one would: its
    directory and permissions, when it is Django's plain ``FileSystemStorage`` (a subclass or
    a remote storage may do anything on save, so only this process writes to those)."""
    from django.core.files.storage import storages

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
