"""Where every artifact of a run lives, for a lakehouse on a local disk or an object store.

The Delta tables are read and written by Spark, which reaches any filesystem Hadoop is set up
for (``s3a://`` with hadoop-aws, ``abfss://``, ``gs://``, ``dbfs:/``). Everything else a run keeps
(models, training checkpoints, TensorBoard logs, reports) is written by Python: this module does
that through fsspec, never ``pathlib`` on a URI, in the spirit of Horovod's ``Store``.

- Writers work in a local folder and *publish* it: on a local disk the folder is renamed into
  place (atomic); on an object store the files are uploaded and a ``_PUBLISHED`` marker is
  written last, and readers only take folders that carry it, so nobody reads half a model.
- Readers *fetch* a published folder into a local cache once (TensorFlow loads a SavedModel from
  a local folder) and reuse it; a published folder never changes, so the copy never goes stale.
- Checkpoints and TensorBoard logs are *mirrored*: the trainer writes them locally, and after
  every epoch the new files are uploaded (a checkpoint's index file last), so a later run
  resumes from the store.

A :class:`Storage` is plain data (the root URI, the local cache and the fsspec options), so it
pickles to Spark executors and Horovod ranks, which use it the same way the driver does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from interest_decay.contract import Artifact
from interest_decay.jobs.common.config import Settings, absolute_path

log = logging.getLogger(__name__)

PUBLISHED_MARKER = "_PUBLISHED"
# Files a TensorFlow CheckpointManager writes last and reads first: uploaded after the data files.
_INDEX_FILES = ("checkpoint",)
CACHE_ENV = "INTEREST_DECAY_CACHE"


def default_cache_dir() -> str:
    """Local folder for staged and fetched artifacts: $INTEREST_DECAY_CACHE/artifacts, else
    ~/.cache/interest-decay/artifacts."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "interest-decay")
    return os.path.join(base, "artifacts")


def python_uri(uri: str) -> str:
    """The spelling of a Spark/Hadoop URI that fsspec opens: Databricks' ``dbfs:/Volumes/..`` and
    ``dbfs:/..`` are their FUSE paths on the cluster's disks, ``s3n://`` is ``s3://``."""
    if uri.startswith("dbfs:/Volumes/"):
        return uri.removeprefix("dbfs:")
    if uri.startswith("dbfs:/"):
        return "/dbfs/" + uri.removeprefix("dbfs:/").lstrip("/")
    if uri.startswith("s3n://"):
        return "s3://" + uri.removeprefix("s3n://")
    return uri


def is_remote(uri: str) -> bool:
    """True for a URI that is not a path on this machine's disks (after :func:`python_uri`)."""
    return bool(re.match(r"^[A-Za-z][\w+.-]*://", python_uri(uri))) and not uri.startswith("file:")


def list_input_files(uri: str, options: dict[str, Any] | None = None) -> list[str]:
    """The data files ``uri`` names, on any filesystem: the file itself, the files under a folder
    (hidden and ``_``-prefixed ones left out, as Spark does), or the files a glob matches."""
    target = python_uri(uri.removeprefix("file://") if uri.startswith("file://") else uri)
    fs, path = fsspec.core.url_to_fs(target, **(options or {}))
    if fs.isfile(path):
        return [path]
    found = fs.find(path) if fs.isdir(path) else [p for p in fs.glob(path) if fs.isfile(p)]
    prefix = path.rstrip("/") + "/"
    visible = [f for f in found if not any(part.startswith(("_", ".")) for part in f.removeprefix(prefix).split("/"))]
    return sorted(visible)


def input_file_uris(uri: str, options: dict[str, Any] | None = None) -> list[str]:
    """:func:`list_input_files` as URIs Spark reads (the scheme ``uri`` was given with kept)."""
    scheme = re.match(r"^([A-Za-z][\w+.-]*)://", uri)
    files = list_input_files(uri, options)
    if scheme is None or scheme.group(1) == "file":
        return files
    return [f"{scheme.group(1)}://{f}" for f in files]


def first_line(uri: str, options: dict[str, Any] | None = None) -> str:
    """The first line of the text file at ``uri`` (without its line ending; "" for an empty file)."""
    target = python_uri(uri.removeprefix("file://") if uri.startswith("file://") else uri)
    with fsspec.open(target, "rt", encoding="utf-8", errors="replace", **(options or {})) as handle:
        return handle.readline().rstrip("\r\n")


@dataclass(frozen=True)
class Storage:
    """The lakehouse root (local path or URI) and the local cache artifacts pass through."""

    root: str
    cache_dir: str = field(default_factory=default_cache_dir)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.root, str) or not self.root:
            raise TypeError(f"root must be a non-empty path or URI, got {self.root!r}")
        object.__setattr__(self, "root", absolute_path(self.root).rstrip("/"))

    @classmethod
    def for_settings(cls, settings: Settings) -> Storage:
        """The storage of ``settings.lakehouse``, with the cache and options of ``settings.storage``."""
        if not isinstance(settings, Settings):
            raise TypeError(f"settings must be Settings, got {type(settings).__name__}")
        cache = settings.storage.cache_dir or default_cache_dir()
        return cls(settings.lakehouse, absolute_path(cache), dict(settings.storage.options))

    @property
    def is_local(self) -> bool:
        """True when the lakehouse is a folder on this machine (or a FUSE mount such as /dbfs)."""
        return not is_remote(self.root)

    def uri(self, artifact: Artifact, *parts: str) -> str:
        """``<root>/<artifact>/<parts...>``, joined with ``/`` whatever the scheme."""
        if not isinstance(artifact, Artifact):
            raise TypeError(f"artifact must be one of contract.Artifact, got {artifact!r}")
        cleaned = [p.strip("/") for p in parts if p and p.strip("/")]
        return "/".join([self.root, artifact.value, *cleaned])

    def _fs(self, uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
        target = python_uri(uri)
        try:
            fs, path = fsspec.core.url_to_fs(target, **(self.options if is_remote(uri) else {}))
        except ImportError as exc:
            raise ImportError(f"no Python filesystem for {uri}: {exc} (install the fsspec package for that scheme)") from exc
        if is_remote(uri):
            fs.invalidate_cache()  # another process (a rank, a concurrent run) may have written since
        return fs, path

    def exists(self, uri: str) -> bool:
        """Whether a file or folder exists at ``uri``."""
        fs, path = self._fs(uri)
        return fs.exists(path)

    def is_published(self, uri: str) -> bool:
        """Whether ``uri`` is a folder :meth:`publishing` finished."""
        if not is_remote(uri):
            return Path(python_uri(uri)).is_dir()
        return self.exists(f"{uri.rstrip('/')}/{PUBLISHED_MARKER}")

    def remove(self, uri: str) -> None:
        """Delete the file or folder at ``uri`` if it exists."""
        fs, path = self._fs(uri)
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def read_text(self, uri: str) -> str:
        """The text of the file at ``uri``."""
        fs, path = self._fs(uri)
        return fs.cat_file(path).decode()

    @contextmanager
    def staging_folder(self, uri: str) -> Iterator[Path]:
        """A new, empty local folder to build the content of ``uri`` in (next to it on a local
        disk, so that :meth:`publish` is a rename); removed at the end if not published."""
        if is_remote(uri):
            staging = Path(self.cache_dir) / "staging" / uuid.uuid4().hex
        else:
            final = Path(python_uri(uri))
            staging = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            yield staging
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    def publish(self, local: Path, uri: str) -> None:
        """Make the finished local folder ``local`` the folder ``uri`` at once (see the module
        docstring); ``local`` is moved or uploaded. Publishing the same ``uri`` again replaces it."""
        (local / PUBLISHED_MARKER).write_text(uri + "\n")
        if is_remote(uri):
            self.remove(uri)
            self._upload(local, uri, marker_last=True)
            shutil.rmtree(local)
        else:
            final = Path(python_uri(uri))
            if final.exists():
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, final)
        log.info("published %s", uri)

    @contextmanager
    def publishing(self, uri: str) -> Iterator[Path]:
        """A new local folder to write into; when the block ends without an error its content
        becomes the folder ``uri`` (:meth:`publish`). An error publishes nothing."""
        with self.staging_folder(uri) as staging:
            yield staging
            self.publish(staging, uri)

    def fetch(self, uri: str) -> Path:
        """A local folder with the content of the published folder ``uri`` (itself when local)."""
        if not is_remote(uri):
            local = Path(python_uri(uri))
            if not local.is_dir():
                raise FileNotFoundError(f"no folder at {uri}")
            return local
        copy = Path(self.cache_dir) / "fetched" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
        if (copy / PUBLISHED_MARKER).is_file():
            return copy
        if not self.is_published(uri):
            raise FileNotFoundError(f"no published folder at {uri} (no {PUBLISHED_MARKER} marker: missing, or still being written)")
        partial = copy.with_name(f"{copy.name}.partial-{uuid.uuid4().hex[:8]}")
        self._download(uri, partial)
        if copy.exists():  # another process fetched it meanwhile; both copies are the same
            shutil.rmtree(partial)
        else:
            os.replace(partial, copy)
        return copy

    @contextmanager
    def working_folder(self, uri: str) -> Iterator[MirroredFolder]:
        """A local folder that mirrors ``uri`` (checkpoints, TensorBoard logs): what is there is
        downloaded first; :meth:`MirroredFolder.sync` uploads what changed. Local roots are used
        in place."""
        if not is_remote(uri):
            local = Path(python_uri(uri))
            local.mkdir(parents=True, exist_ok=True)
            yield MirroredFolder(self, uri, local, remote=False)
            return
        local = Path(self.cache_dir) / "working" / uuid.uuid4().hex
        local.mkdir(parents=True)
        try:
            if self.exists(uri):
                self._download(uri, local)
            folder = MirroredFolder(self, uri, local, remote=True)
            folder.remember_current()
            yield folder
            folder.sync()
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def _upload(self, local: Path, uri: str, marker_last: bool = False, only: list[Path] | None = None) -> None:
        fs, path = self._fs(uri)
        files = only if only is not None else [f for f in local.rglob("*") if f.is_file()]
        last = {PUBLISHED_MARKER} if marker_last else set(_INDEX_FILES)
        for file in sorted(files, key=lambda f: (f.name in last, str(f))):
            fs.put_file(str(file), f"{path.rstrip('/')}/{file.relative_to(local).as_posix()}")

    def _download(self, uri: str, local: Path) -> None:
        fs, path = self._fs(uri)
        prefix = path.rstrip("/") + "/"
        for remote_file in fs.find(path):
            target = local / remote_file[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote_file, str(target))


@dataclass
class MirroredFolder:
    """A local folder kept in step with a folder in the store (see :meth:`Storage.working_folder`)."""

    storage: Storage
    uri: str
    local: Path
    remote: bool
    _seen: dict[str, tuple[float, int]] = field(default_factory=dict)

    def _state(self) -> dict[str, tuple[float, int]]:
        return {str(f): (f.stat().st_mtime, f.stat().st_size) for f in self.local.rglob("*") if f.is_file()}

    def remember_current(self) -> None:
        """Treat what is in the folder now as already uploaded."""
        self._seen = self._state()

    def sync(self, *_: object) -> None:
        """Upload the files written or changed since the last sync (a no-op for a local root).
        Takes and ignores any arguments, so it can be an epoch listener."""
        if not self.remote:
            return
        state = self._state()
        changed = [Path(name) for name, stamp in state.items() if self._seen.get(name) != stamp]
        if changed:
            self.storage._upload(self.local, self.uri, only=changed)
        self._seen = state
