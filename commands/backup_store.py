"""Where backups live (a local directory or an S3 bucket/prefix), their ids and their manifest.

Layout of one backup, in either store:

    <id>/manifest.json          written last: a backup without it is incomplete and never listed
    <id>/database.dump          pg_dump custom format (db and full backups)
    <id>/objects/<sha256>       each distinct object body, named by its SHA-256
    <id>/verified.json          written by a successful `/restore verify`

Objects are stored by content hash, never by key: a key is any string (`../../etc/passwd` too),
and here it never becomes a path. The manifest maps each (bucket, key) to its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field, field_validator

from adapters.base import DependencyError
from adapters.object_transfer import ObjectInfo, ObjectTransfer
from commands.base import Model, UsageError

FORMAT = "chatops-backup/1"
MANIFEST = "manifest.json"
VERIFIED = "verified.json"
DATABASE_FILE = "database.dump"
ID_FORMAT = "%Y-%m-%d_%H-%M-%S"
_ID = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}$")
_OBJECT_FILE = re.compile(r"^objects/[0-9a-f]{64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A manifest is small (about 300 bytes per object); this bounds what a damaged one can cost.
MANIFEST_MAX_BYTES = 256 * 1024 * 1024
_HASH_CHUNK = 4 * 1024 * 1024
# Staging areas of backups that never finished; prune removes those older than this.
ABANDONED_AFTER = timedelta(hours=24)

BackupType = Literal["full", "db", "storage"]
TYPE_LABELS: dict[str, str] = {"full": "database+storage", "db": "database", "storage": "storage"}


# --- ids --------------------------------------------------------------------------------------------


def new_backup_id(now: datetime) -> str:
    """Make a backup id from a UTC time, e.g. 2025-11-20_02-00-00."""
    return now.astimezone(UTC).strftime(ID_FORMAT)


def backup_time(backup_id: str) -> datetime:
    """Return the UTC time a (valid) backup id names."""
    return datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=UTC)


def parse_backup_id(text: str, usage: str = "") -> str:
    """Accept exactly a backup id (UTC timestamp); anything else, `../` included, is refused."""
    candidate = text.strip()
    if not _ID.match(candidate):
        shown = candidate[:40].encode("unicode_escape").decode()
        raise UsageError(f"`{shown}` is not a backup id (they look like 2025-11-20_02-00-00)", usage)
    try:
        backup_time(candidate)
    except ValueError:
        raise UsageError(f"`{candidate}` is not a real date and time", usage) from None
    return candidate


# --- the manifest -----------------------------------------------------------------------------------


class FileEntry(Model):
    """One file of a backup, as it must be found again."""

    name: str
    size: int = Field(ge=0)
    sha256: str

    @field_validator("name")
    @classmethod
    def _known_name(cls, value: str) -> str:
        # The only names a backup has: a manifest cannot point anywhere else.
        if value != DATABASE_FILE and not _OBJECT_FILE.match(value):
            raise ValueError(f"unexpected file name {value[:80]!r}")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("not a SHA-256 in hex")
        return value


class ObjectEntry(Model):
    """One object of a platform bucket and the body that holds it."""

    bucket: str
    key: str
    size: int = Field(ge=0)
    sha256: str
    etag: str = ""
    content_type: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("not a SHA-256 in hex")
        return value

    @property
    def file(self) -> str:
        """Return the backup file that holds this object's body."""
        return f"objects/{self.sha256}"


class DatabasePart(Model):
    """The database part: where it came from, what it held, how long the dump took."""

    name: str
    server_version: str
    pg_dump_version: str
    size: int
    sha256: str
    # Exact row counts taken inside the dump's own snapshot, compared after every restore.
    tables: dict[str, int]
    seconds: float


class Manifest(Model):
    """Everything known about a backup; its own checksum covers every other field."""

    format: str = FORMAT
    id: str
    type: BackupType
    created_at: datetime
    completed_at: datetime
    made_by: str
    reason: str = ""
    database: DatabasePart | None = None
    buckets: list[str] = Field(default_factory=list)
    objects: list[ObjectEntry] = Field(default_factory=list)
    objects_seconds: float = 0.0
    files: list[FileEntry] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    checksum: str = ""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("not a backup id")
        return value

    @property
    def total_bytes(self) -> int:
        """Return the size of every file of the backup."""
        return sum(item.size for item in self.files)

    @property
    def objects_bytes(self) -> int:
        """Return the size of every object of the platform's buckets at backup time."""
        return sum(item.size for item in self.objects)

    @property
    def has_database(self) -> bool:
        """Return whether the backup holds the database."""
        return self.type in ("full", "db") and self.database is not None

    @property
    def has_storage(self) -> bool:
        """Return whether the backup holds the buckets."""
        return self.type in ("full", "storage")

    def computed_checksum(self) -> str:
        """Hash every field but the checksum itself, canonically."""
        body = self.model_dump(mode="json", exclude={"checksum"})
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def sealed(self) -> Manifest:
        """Return this manifest with its checksum filled in."""
        return self.model_copy(update={"checksum": self.computed_checksum()})

    def to_bytes(self) -> bytes:
        """Serialise for the store."""
        return self.model_dump_json(indent=1).encode()


class ManifestProblem(Exception):
    """A manifest that cannot be trusted; the message says why."""


def load_manifest(raw: bytes | None, backup_id: str) -> Manifest:
    """Parse and check a manifest: well formed, its checksum right, its id the backup's own."""
    if raw is None:
        raise ManifestProblem("manifest.json is missing")
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValueError as error:
        first = str(error).splitlines()[0:3]
        raise ManifestProblem("manifest.json is unreadable: " + " ".join(first)[:200]) from None
    if manifest.format != FORMAT:
        raise ManifestProblem(f"unknown backup format {manifest.format[:40]!r} (this bot reads {FORMAT})")
    if manifest.checksum != manifest.computed_checksum():
        raise ManifestProblem("manifest.json does not match its own checksum (damaged or edited)")
    if manifest.id != backup_id:
        raise ManifestProblem(f"manifest.json belongs to backup {manifest.id}, not {backup_id}")
    names = {item.name for item in manifest.files}
    if len(names) != len(manifest.files):
        raise ManifestProblem("manifest.json lists a file twice")
    if manifest.has_database and (
        manifest.database is None or DATABASE_FILE not in names or manifest.type == "storage"
    ):
        raise ManifestProblem("manifest.json says the backup holds the database but lists no dump")
    missing = {item.file for item in manifest.objects} - names
    if missing:
        raise ManifestProblem(f"{len(missing)} object(s) have no file in manifest.json")
    return manifest


def check_files(manifest: Manifest, present: dict[str, int]) -> list[str]:
    """Compare the files a store holds (name -> size) with the manifest; return the problems."""
    problems = []
    for item in manifest.files:
        size = present.get(item.name)
        if size is None:
            problems.append(f"{item.name} is missing")
        elif size != item.size:
            problems.append(f"{item.name} is {size} bytes, the manifest says {item.size}")
    return problems


# --- stores -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leftover:
    """A staging area of a backup that never finished."""

    name: str
    age: timedelta


class Staging(Protocol):
    """A backup being written: files go in one by one, the manifest last makes it visible."""

    backup_id: str

    def temp_path(self) -> Path:
        """Return a fresh local path to write a file to."""
        ...

    async def put(self, path: Path, name: str) -> None:
        """Move a finished local file into the backup as `name`."""
        ...

    def holds(self, name: str) -> bool:
        """Return whether `name` was already put."""
        ...

    async def commit(self, manifest: Manifest) -> None:
        """Write the manifest and make the backup visible."""
        ...

    async def abort(self) -> None:
        """Remove everything written so far."""
        ...


class BackupStore(Protocol):
    """A place that holds backups."""

    location: str

    async def ids(self) -> list[str]:
        """Return the ids of complete backups (those with a manifest), oldest first."""
        ...

    async def exists(self, backup_id: str) -> bool:
        """Return whether anything (complete or not) is stored under this id."""
        ...

    async def read(self, backup_id: str, name: str) -> bytes | None:
        """Read a small file of a backup (manifest.json, verified.json); None if absent."""
        ...

    async def write(self, backup_id: str, name: str, data: bytes) -> None:
        """Write a small file beside a complete backup (verified.json)."""
        ...

    async def sizes(self, backup_id: str) -> dict[str, int]:
        """Return every data file of a backup with its size."""
        ...

    async def sha256(self, backup_id: str, name: str) -> str:
        """Hash a stored file."""
        ...

    def local(self, backup_id: str, name: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """Lend a local path holding the file (a temporary copy when the store is remote)."""
        ...

    async def begin(self, backup_id: str) -> Staging:
        """Start writing a backup."""
        ...

    async def delete(self, backup_id: str) -> None:
        """Delete a backup, manifest first (so that it stops being listed at once)."""
        ...

    async def leftovers(self) -> list[Leftover]:
        """Return staging areas of backups that never finished."""
        ...

    async def remove_leftover(self, name: str) -> None:
        """Remove one unfinished staging area."""
        ...


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def hash_file(path: Path) -> str:
    """Hash a local file in a worker thread."""
    return await asyncio.to_thread(_hash_file, path)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStaging:
    """A backup being written into `<root>/.staging-<id>-<pid>`, renamed to `<root>/<id>` when done."""

    def __init__(self, root: Path, backup_id: str) -> None:
        self.root = root
        self.backup_id = backup_id
        self.dir = root / f".staging-{backup_id}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        self._names: set[str] = set()
        self._counter = 0

    def temp_path(self) -> Path:
        """Return a fresh path inside the staging directory."""
        self._counter += 1
        return self.dir / "tmp" / f"part-{self._counter}"

    def _put(self, path: Path, name: str) -> None:
        target = self.dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        _fsync_path(path)
        os.replace(path, target)

    async def put(self, path: Path, name: str) -> None:
        """Move a finished file to its name, synced to disk."""
        await asyncio.to_thread(self._put, path, name)
        self._names.add(name)

    def holds(self, name: str) -> bool:
        """Return whether `name` was already put."""
        return name in self._names

    def _commit(self, manifest: Manifest) -> None:
        shutil.rmtree(self.dir / "tmp", ignore_errors=True)
        target = self.dir / MANIFEST
        with target.open("wb") as handle:
            handle.write(manifest.to_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        for directory in (self.dir / "objects", self.dir):
            if directory.exists():
                _fsync_path(directory)
        final = self.root / self.backup_id
        if final.exists():
            raise FileExistsError(f"a backup {self.backup_id} already exists")
        # The rename is the moment the backup appears, whole.
        os.rename(self.dir, final)
        _fsync_path(self.root)

    async def commit(self, manifest: Manifest) -> None:
        """Write the manifest, then rename the staging directory to the backup's id."""
        await asyncio.to_thread(self._commit, manifest)

    async def abort(self) -> None:
        """Remove the staging directory."""
        await asyncio.to_thread(shutil.rmtree, self.dir, True)

    async def prepare(self) -> None:
        """Create the staging directory."""
        await asyncio.to_thread((self.dir / "tmp").mkdir, parents=True, exist_ok=False)


class LocalStore:
    """Backups in a directory of this machine (or a mounted volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def _dir(self, backup_id: str) -> Path:
        # Ids are checked against the timestamp pattern, so joining cannot leave the root; a
        # symlink planted in the store could, so it is refused.
        if not _ID.match(backup_id):
            raise UsageError(f"`{backup_id[:40]}` is not a backup id")
        path = self.root / backup_id
        if path.is_symlink():
            raise UsageError(f"backup {backup_id} is a symbolic link; refusing to follow it")
        return path

    def _file(self, backup_id: str, name: str) -> Path:
        if name not in (MANIFEST, VERIFIED, DATABASE_FILE) and not _OBJECT_FILE.match(name):
            raise ValueError(f"unexpected file name {name[:80]!r}")
        path = self._dir(backup_id) / name
        if path.is_symlink():
            raise UsageError(f"{backup_id}/{name} is a symbolic link; refusing to follow it")
        return path

    def _ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in os.scandir(self.root):
            complete = os.path.isfile(os.path.join(entry.path, MANIFEST))
            if _ID.match(entry.name) and entry.is_dir(follow_symlinks=False) and complete:
                found.append(entry.name)
        return sorted(found)

    async def ids(self) -> list[str]:
        """Return the ids of complete backups, oldest first."""
        return await asyncio.to_thread(self._ids)

    async def exists(self, backup_id: str) -> bool:
        """Return whether the id is taken."""
        return await asyncio.to_thread(os.path.lexists, self._dir(backup_id))

    def _read(self, backup_id: str, name: str) -> bytes | None:
        path = self._file(backup_id, name)
        try:
            with path.open("rb") as handle:
                data = handle.read(MANIFEST_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(data) > MANIFEST_MAX_BYTES:
            raise UsageError(f"{backup_id}/{name} is larger than any manifest can be")
        return data

    async def read(self, backup_id: str, name: str) -> bytes | None:
        """Read a small file of a backup."""
        return await asyncio.to_thread(self._read, backup_id, name)

    def _write(self, backup_id: str, name: str, data: bytes) -> None:
        path = self._file(backup_id, name)
        temporary = path.with_name(f".{name}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)

    async def write(self, backup_id: str, name: str, data: bytes) -> None:
        """Write a small file beside a backup, replacing it whole."""
        await asyncio.to_thread(self._write, backup_id, name, data)

    def _sizes(self, backup_id: str) -> dict[str, int]:
        base = self._dir(backup_id)
        found: dict[str, int] = {}
        dump = base / DATABASE_FILE
        if dump.is_file() and not dump.is_symlink():
            found[DATABASE_FILE] = dump.stat().st_size
        objects = base / "objects"
        if objects.is_dir() and not objects.is_symlink():
            for entry in os.scandir(objects):
                if entry.is_file(follow_symlinks=False):
                    found[f"objects/{entry.name}"] = entry.stat().st_size
        return found

    async def sizes(self, backup_id: str) -> dict[str, int]:
        """Return every data file of a backup with its size."""
        return await asyncio.to_thread(self._sizes, backup_id)

    async def sha256(self, backup_id: str, name: str) -> str:
        """Hash a stored file."""
        return await hash_file(self._file(backup_id, name))

    @asynccontextmanager
    async def local(self, backup_id: str, name: str) -> AsyncIterator[Path]:
        """Lend the file itself."""
        yield self._file(backup_id, name)

    async def begin(self, backup_id: str) -> LocalStaging:
        """Start a backup in a staging directory."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        staging = LocalStaging(self.root, backup_id)
        await staging.prepare()
        return staging

    def _delete(self, backup_id: str) -> None:
        path = self._dir(backup_id)
        if not path.exists():
            return
        # Rename first: the backup disappears from listings at once, even if removal is slow.
        doomed = self.root / f".deleting-{backup_id}-{os.getpid()}"
        os.rename(path, doomed)
        shutil.rmtree(doomed)

    async def delete(self, backup_id: str) -> None:
        """Delete a backup."""
        await asyncio.to_thread(self._delete, backup_id)

    def _leftovers(self) -> list[Leftover]:
        if not self.root.is_dir():
            return []
        now = time.time()
        found = []
        for entry in os.scandir(self.root):
            if entry.name.startswith((".staging-", ".deleting-")) and entry.is_dir(follow_symlinks=False):
                age = timedelta(seconds=max(0.0, now - entry.stat(follow_symlinks=False).st_mtime))
                found.append(Leftover(entry.name, age))
        return found

    async def leftovers(self) -> list[Leftover]:
        """Return staging directories of backups that never finished."""
        return await asyncio.to_thread(self._leftovers)

    async def remove_leftover(self, name: str) -> None:
        """Remove one unfinished staging directory."""
        if not name.startswith((".staging-", ".deleting-")) or "/" in name:
            raise ValueError(name)
        await asyncio.to_thread(shutil.rmtree, self.root / name, True)


class S3Staging:
    """A backup being uploaded under `<prefix><id>/`: invisible until its manifest is written."""

    def __init__(self, store: S3Store, backup_id: str, work_dir: Path) -> None:
        self.store = store
        self.backup_id = backup_id
        self.work_dir = work_dir
        self._names: set[str] = set()
        self._counter = 0

    def temp_path(self) -> Path:
        """Return a fresh local path in the work directory."""
        self._counter += 1
        return self.work_dir / f"part-{self._counter}"

    async def put(self, path: Path, name: str) -> None:
        """Upload a finished file, then remove the local copy."""
        try:
            await self.store.transfer.upload(self.store.bucket, self.store.key(self.backup_id, name), path)
        finally:
            await asyncio.to_thread(path.unlink, True)
        self._names.add(name)

    def holds(self, name: str) -> bool:
        """Return whether `name` was already put."""
        return name in self._names

    async def commit(self, manifest: Manifest) -> None:
        """Upload the manifest: from now on the backup is listed."""
        await self.store.transfer.put_bytes(
            self.store.bucket,
            self.store.key(self.backup_id, MANIFEST),
            manifest.to_bytes(),
            "application/json",
        )
        await asyncio.to_thread(shutil.rmtree, self.work_dir, True)

    async def abort(self) -> None:
        """Remove what was uploaded and the local work directory."""
        await asyncio.to_thread(shutil.rmtree, self.work_dir, True)
        keys = [
            info.key
            for info in await self.store.transfer.list_objects(
                self.store.bucket, self.store.key(self.backup_id, "")
            )
        ]
        await self.store.transfer.delete(self.store.bucket, keys)


class S3Store:
    """Backups in an S3 bucket under a prefix (another bucket, or another service altogether)."""

    def __init__(self, transfer: ObjectTransfer, bucket: str, prefix: str, work_dir: Path | None) -> None:
        self.transfer = transfer
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.work_dir = work_dir
        self.location = f"s3://{bucket}/{self.prefix}"

    async def _list(self, prefix: str) -> list[ObjectInfo]:
        # A store whose bucket does not exist yet simply holds no backups.
        try:
            return await self.transfer.list_objects(self.bucket, prefix)
        except DependencyError as error:
            if error.reason == "not found":
                return []
            raise

    def key(self, backup_id: str, name: str) -> str:
        """Return the object key of a backup's file."""
        if not _ID.match(backup_id):
            raise UsageError(f"`{backup_id[:40]}` is not a backup id")
        return f"{self.prefix}{backup_id}/{name}"

    async def ids(self) -> list[str]:
        """Return the ids of backups whose manifest exists, oldest first."""
        if not await self.transfer.bucket_exists(self.bucket):
            return []
        prefixes = await self.transfer.list_prefixes(self.bucket, self.prefix)
        candidates = [item[len(self.prefix) :].rstrip("/") for item in prefixes]
        candidates = [item for item in candidates if _ID.match(item)]

        async def complete(backup_id: str) -> bool:
            return bool(await self._list(self.key(backup_id, MANIFEST)))

        flags = await asyncio.gather(*(complete(item) for item in candidates))
        return sorted(item for item, flag in zip(candidates, flags, strict=True) if flag)

    async def exists(self, backup_id: str) -> bool:
        """Return whether anything is stored under this id."""
        return bool(await self._list(self.key(backup_id, "")))

    async def read(self, backup_id: str, name: str) -> bytes | None:
        """Read a small file of a backup."""
        return await self.transfer.get_bytes(self.bucket, self.key(backup_id, name), MANIFEST_MAX_BYTES)

    async def write(self, backup_id: str, name: str, data: bytes) -> None:
        """Write a small file beside a backup."""
        await self.transfer.put_bytes(self.bucket, self.key(backup_id, name), data, "application/json")

    async def sizes(self, backup_id: str) -> dict[str, int]:
        """Return every data file of a backup with its size."""
        base = self.key(backup_id, "")
        found = {}
        for info in await self._list(base):
            name = info.key[len(base) :]
            if name == DATABASE_FILE or _OBJECT_FILE.match(name):
                found[name] = info.size
        return found

    async def sha256(self, backup_id: str, name: str) -> str:
        """Hash a stored file by streaming it."""
        return (await self.transfer.digest(self.bucket, self.key(backup_id, name))).sha256

    @asynccontextmanager
    async def local(self, backup_id: str, name: str) -> AsyncIterator[Path]:
        """Download the file to a temporary path, removed afterwards."""
        directory = Path(await asyncio.to_thread(tempfile.mkdtemp, "", "chatops-restore-", self._work_root()))
        try:
            path = directory / "file"
            await self.transfer.download(self.bucket, self.key(backup_id, name), path)
            yield path
        finally:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    def _work_root(self) -> str | None:
        return str(self.work_dir) if self.work_dir else None

    async def begin(self, backup_id: str) -> S3Staging:
        """Start a backup; files are staged locally one at a time, then uploaded."""
        await self.transfer.ensure_bucket(self.bucket)
        directory = await asyncio.to_thread(tempfile.mkdtemp, "", "chatops-backup-", self._work_root())
        return S3Staging(self, backup_id, Path(directory))

    async def delete(self, backup_id: str) -> None:
        """Delete the manifest first, then the rest."""
        base = self.key(backup_id, "")
        await self.transfer.delete(self.bucket, [self.key(backup_id, MANIFEST)])
        keys = [info.key for info in await self.transfer.list_objects(self.bucket, base)]
        await self.transfer.delete(self.bucket, keys)

    async def leftovers(self) -> list[Leftover]:
        """Return ids that hold files but no manifest (uploads that never finished)."""
        now = datetime.now(UTC)
        by_id: dict[str, tuple[bool, datetime]] = {}
        for info in await self._list(self.prefix):
            rest = info.key[len(self.prefix) :]
            backup_id, _, name = rest.partition("/")
            if not _ID.match(backup_id):
                continue
            has_manifest, newest = by_id.get(backup_id, (False, datetime.min.replace(tzinfo=UTC)))
            modified = info.last_modified or now
            by_id[backup_id] = (has_manifest or name == MANIFEST, max(newest, modified))
        return [
            Leftover(backup_id, now - newest)
            for backup_id, (has_manifest, newest) in by_id.items()
            if not has_manifest
        ]

    async def remove_leftover(self, name: str) -> None:
        """Remove the files of an unfinished backup."""
        keys = [info.key for info in await self.transfer.list_objects(self.bucket, self.key(name, ""))]
        await self.transfer.delete(self.bucket, keys)


def open_store(location: str, transfer: ObjectTransfer | None, work_dir: Path | None = None) -> BackupStore:
    """Open the store a setting names: `s3://bucket/prefix` or a local directory."""
    if location.startswith("s3://"):
        if transfer is None:
            raise UsageError("the backup store is in S3 but no S3 client is configured for it")
        bucket, _, prefix = location[len("s3://") :].partition("/")
        if not bucket:
            raise UsageError(f"backup store {location!r} names no bucket")
        return S3Store(transfer, bucket, prefix, work_dir)
    path = location[len("file://") :] if location.startswith("file://") else location
    return LocalStore(Path(path).expanduser())


def verified_record(manifest: Manifest, verified_at: datetime, detail: str) -> bytes:
    """Write the record of a successful verification, bound to the manifest it checked."""
    body: dict[str, Any] = {
        "id": manifest.id,
        "manifest_checksum": manifest.checksum,
        "verified_at": verified_at.isoformat(),
        "detail": detail,
    }
    return json.dumps(body, indent=1).encode()


def read_verified(raw: bytes | None, manifest: Manifest) -> datetime | None:
    """Return when the backup was verified, if the record matches this manifest."""
    if raw is None:
        return None
    try:
        body = json.loads(raw)
        if body.get("manifest_checksum") != manifest.checksum:
            return None
        return datetime.fromisoformat(str(body["verified_at"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
