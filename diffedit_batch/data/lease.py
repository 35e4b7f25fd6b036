"""A run's lease on its output prefix: one run writes under a prefix at a time.

A schedule that starts a run every hour will, some day, start one while the last is still running. Two runs on
one prefix would each edit the pending rows and each record them. The lease, `PREFIX/lease.json`, names the run
that holds the prefix (run id, host, pid, since, last renewal); it is

- **taken atomically**: on local disk under an exclusive `flock` of the prefix's parent folder, on S3 with a
  conditional PUT (`If-None-Match: *` to create, `If-Match: <etag>` to renew or take over), so of two runs that
  start together exactly one holds it;
- **renewed** by a thread of the holder every `timeout_s / 4` seconds, and **released** (deleted) at its end;
- **given up** by its holder itself when it has not been renewed for `3/4 timeout_s` (a stalled store, a
  paused driver): the run stops a quarter of the timeout before another run may take it over;
- **taken over** when its holder has not renewed it for `timeout_s` seconds (the holder died: a killed driver,
  a lost node), at once when the holder was a process of this machine that is gone (same boot and pid
  namespace, so containers that share a host name are told apart), or at once with `break_lease` (an operator
  who knows the holder is gone).

Hosts' clocks must agree to well within `timeout_s`. On other stores (gs://) pyarrow offers no conditional write:
the lease is then checked and written in two steps, which keeps apart runs started minutes apart (what a
schedule makes) but not two started in the same second; a warning says so.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from .layout import OutputLayout
from .storage import (
    StorageError,
    StorageOptions,
    delete,
    file_type,
    read_bytes,
    redact_uri,
    resolve,
    s3_endpoint,
    write_bytes_atomic,
)

__all__ = ["Lease", "LeaseError", "LeaseHeld", "LeaseHolder", "LeaseStorageError", "acquire_lease"]

log = logging.getLogger(__name__)


class LeaseError(Exception):
    """The lease cannot be taken as things are set up (a file there that is not a lease, a client that cannot
    send conditional writes)."""


class LeaseStorageError(LeaseError):
    """The lease could not be read or written: the storage failed (a re-run may well succeed)."""


# The share of its timeout after which a holder that could not renew gives the lease up: the rest is the margin
# in which it stops before another run may take the lease over.
GIVE_UP_FRACTION = 0.75


_BOOT_ID = "/proc/sys/kernel/random/boot_id"  # one per boot of the machine: a pid means nothing across boots
_START_TIME = 19  # /proc/<pid>/stat's field 22, counted from the state (field 3): clock ticks after boot


def _read_first_line(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.readline().strip()
    except OSError:
        return ""


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _process_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (the state first), None where there is no such file."""
    text = _read_first_line(f"/proc/{pid}/stat")
    fields = text.rpartition(")")[2].split()
    return fields or None


def _start_time(pid: int) -> str:
    fields = _process_stat(pid)
    return fields[_START_TIME] if fields and len(fields) > _START_TIME else ""


@dataclass(frozen=True)
class LeaseHolder:
    """What the lease file says about the run that holds it."""

    run_id: str
    host: str
    pid: int
    since: str  # ISO time the run took the lease
    renewed_at: float  # Unix time of its last renewal
    timeout_s: float  # the holder's promise: it renews well within this
    # Where the pid means something: a host name is shared by containers with host networking, a pid is only
    # unique within one boot and one pid namespace, and it is reused once its process is gone.
    boot_id: str = ""
    pid_namespace: int = 0
    process_start: str = ""

    @classmethod
    def of_this_process(cls, run_id: str, now: float, timeout_s: float) -> "LeaseHolder":
        return cls(run_id=run_id, host=socket.gethostname(), pid=os.getpid(),
                   since=dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds"),
                   renewed_at=now, timeout_s=float(timeout_s),
                   boot_id=_read_first_line(_BOOT_ID), pid_namespace=_pid_namespace(),
                   process_start=_start_time(os.getpid()))

    def expired(self, now: float) -> bool:
        return now > self.renewed_at + self.timeout_s

    def process_is_gone(self) -> bool:
        """Whether the holder is a process of this machine, boot and pid namespace that no longer runs (a killed
        driver): its lease need not wait out the timeout. False wherever its process cannot be seen from here."""
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        if self.boot_id != _read_first_line(_BOOT_ID):
            return False
        if self.pid_namespace != _pid_namespace():
            return False  # another container with this host name: its pids are not ours to see
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OSError):
            return False
        fields = _process_stat(self.pid)
        if fields is None:
            return False
        if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent: it still answers signal 0
            return True
        # The pid was given to another process since.
        return bool(self.process_start) and len(fields) > _START_TIME and fields[_START_TIME] != self.process_start

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        return (f"run {self.run_id} on host {self.host} (pid {self.pid}) since {self.since}, "
                f"last renewed {max(0.0, now - self.renewed_at):.0f} s ago")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "LeaseHolder":
        fields = json.loads(data)
        return cls(run_id=str(fields["run_id"]), host=str(fields["host"]), pid=int(fields["pid"]),
                   since=str(fields["since"]), renewed_at=float(fields["renewed_at"]),
                   timeout_s=float(fields["timeout_s"]), boot_id=str(fields.get("boot_id", "")),
                   pid_namespace=int(fields.get("pid_namespace", 0)),
                   process_start=str(fields.get("process_start", "")))


class LeaseHeld(Exception):
    """Another live run holds the output prefix."""

    def __init__(self, prefix: str, holder: LeaseHolder):
        self.holder = holder
        super().__init__(
            f"output {redact_uri(prefix)} is in use by {holder.describe()}; it is taken over once its holder stops "
            f"renewing it for {holder.timeout_s:.0f} s. If that run is certainly gone, re-run with --break-lease"
        )


# --- stores: create / read / compare-and-swap / delete of one small object -----------------------------------


class _LocalStore:
    """The lease file on local (or network) disk. Every change happens under an exclusive flock of the output
    prefix's parent folder (read access is enough), not of a lock file: nothing is left in the output but the
    lease while it is held, and an output folder the lease itself created is removed again with it when the run
    wrote nothing (say, a config that could not be placed)."""

    atomic = True

    def __init__(self, path: str):
        self.path = path
        self.prefix = os.path.dirname(path)
        self.created_prefix = False

    def _locked(self):
        parent = os.path.dirname(self.prefix) or "."
        os.makedirs(parent, exist_ok=True)
        return _FolderLock(parent)

    def _current(self) -> tuple[bytes, str] | None:
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return data, hashlib.sha256(data).hexdigest()

    def _write(self, data: bytes) -> str:
        temp = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(temp, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)
        except BaseException:  # a full disk: the lease keeps its last content, and no temp file stays
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        return hashlib.sha256(data).hexdigest()

    def create(self, data: bytes) -> str | None:
        with self._locked():
            if self._current() is not None:
                return None
            if not os.path.isdir(self.prefix):
                os.makedirs(self.prefix)
                self.created_prefix = True
            return self._write(data)

    def read(self) -> tuple[bytes, str] | None:
        with self._locked():
            return self._current()

    def replace(self, data: bytes, token: str) -> str | None:
        with self._locked():
            current = self._current()
            return self._write(data) if current is not None and current[1] == token else None

    def delete(self, token: str) -> None:
        with self._locked():
            current = self._current()
            if current is not None and current[1] == token:
                os.unlink(self.path)
                if self.created_prefix:
                    try:
                        os.rmdir(self.prefix)  # only when empty: the run wrote nothing there
                    except OSError:
                        pass


class _FolderLock:
    """An exclusive flock of a folder (an open of the folder itself, which needs no write permission)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class _S3Store:
    """The lease object on S3, changed only by conditional PUTs (S3 and S3-compatible stores that support them:
    AWS since 2024, MinIO, moto). pyarrow has no conditional writes, so this one object goes through boto3."""

    atomic = True

    def __init__(self, uri: str, options: StorageOptions, request_timeout_s: float):
        import boto3
        from botocore.config import Config as BotoConfig

        bucket_and_key = uri.split("://", 1)[1]
        self.bucket, self.key = bucket_and_key.split("/", 1)
        # One attempt, bounded well inside the lease's timeout: a renewal that hangs must not outlive the lease it
        # renews, and a retried conditional PUT whose first try landed answers 412 (handled by the caller).
        self.client = boto3.client(
            "s3", endpoint_url=s3_endpoint(options), region_name=options.s3_region,
            config=BotoConfig(connect_timeout=request_timeout_s, read_timeout=request_timeout_s,
                              retries={"total_max_attempts": 1}),
        )
        put_object = self.client.meta.service_model.operation_model("PutObject").input_shape.members
        if "IfMatch" not in put_object or "IfNoneMatch" not in put_object:
            raise LeaseError(f"boto3 {boto3.__version__} cannot send conditional PUTs, which the run lease on S3 "
                             "needs: install boto3>=1.36 (pip install -U boto3)")

    @staticmethod
    def _code(error) -> str:
        return str(error.response.get("Error", {}).get("Code", ""))

    def create(self, data: bytes) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, IfNoneMatch="*")["ETag"]
        except ClientError as error:
            if self._code(error) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return None
            raise

    def read(self) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            if self._code(error) in ("NoSuchKey", "404"):
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def replace(self, data: bytes, token: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, IfMatch=token)["ETag"]
        except ClientError as error:
            if self._code(error) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409",
                                     "404"):
                return None
            raise

    def delete(self, token: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=token)
        except ClientError as error:
            if self._code(error) in ("PreconditionFailed", "NoSuchKey", "412", "404"):
                return
            if self._code(error) not in ("NotImplemented", "InvalidArgument", "501"):
                raise
            current = self.read()  # a store without conditional deletes: check, then delete
            if current is not None and current[1] == token:
                self.client.delete_object(Bucket=self.bucket, Key=self.key)


class _TwoStepStore:
    """Any other pyarrow store (gs://): check, then write. Not atomic between runs started together."""

    atomic = False

    def __init__(self, uri: str, options: StorageOptions):
        self.uri, self.options = uri, options

    def read(self) -> tuple[bytes, str] | None:
        if file_type(self.uri, self.options) == pafs.FileType.NotFound:
            return None
        data = read_bytes(self.uri, self.options)
        return data, hashlib.sha256(data).hexdigest()

    def create(self, data: bytes) -> str | None:
        if self.read() is not None:
            return None
        write_bytes_atomic(self.uri, data, self.options)
        return hashlib.sha256(data).hexdigest()

    def replace(self, data: bytes, token: str) -> str | None:
        current = self.read()
        if current is None or current[1] != token:
            return None
        write_bytes_atomic(self.uri, data, self.options)
        return hashlib.sha256(data).hexdigest()

    def delete(self, token: str) -> None:
        current = self.read()
        if current is not None and current[1] == token:
            delete(self.uri, self.options)


def _store_for(uri: str, options: StorageOptions, timeout_s: float):
    filesystem, path = resolve(uri, options)
    if isinstance(filesystem, pafs.LocalFileSystem):
        return _LocalStore(path)
    if uri.startswith("s3://"):
        return _S3Store(uri, options, request_timeout_s=max(1.0, min(options.timeout_s, timeout_s / 8)))
    log.warning("the run lease on %s is checked, then written: runs started in the same second are not kept apart",
                redact_uri(uri))
    return _TwoStepStore(uri, options)


# --- the lease ------------------------------------------------------------------------------------------------


class Lease:
    """A held lease: renewed by a daemon thread until `release()`. `lost` is set when another run took it over
    (this run stopped renewing for longer than its timeout, e.g. a stalled driver) or it was not renewed within
    `GIVE_UP_FRACTION` of its timeout (a watchdog thread checks, whatever a hung storage call does); `on_lost(message)`
    is then called once, so the run can stop writing before it overlaps with a new holder."""

    def __init__(self, store, holder: LeaseHolder, token: str, prefix: str, clock: Callable[[], float],
                 on_lost: Callable[[str], None] | None = None):
        self.store, self.holder, self.token, self.prefix, self.clock = store, holder, token, prefix, clock
        self.on_lost = on_lost
        self.lost: str | None = None
        # Why the latest renewal could not be written, until one is (a full disk): the run then fails.
        self.unwritable: str | None = None
        self._stop = threading.Event()
        self._store_lock = threading.Lock()  # one store call at a time: a renewal never races the release
        self._lost_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True),
                         threading.Thread(target=self._watch_loop, name="lease-watchdog", daemon=True)]
        for thread in self._threads:
            thread.start()

    def renew(self) -> bool:
        """Renew once; False when the lease is no longer this run's."""
        with self._store_lock:
            renewed = LeaseHolder(**{**asdict(self.holder), "renewed_at": self.clock()})
            token = self.store.replace(renewed.to_json(), self.token)
            if token is None:
                current = self.store.read()
                other = _parse(current[0]) if current else None
                if other is not None and other.run_id == self.holder.run_id:
                    # Our own write landed though its answer was lost (a retried request then fails its condition).
                    self.holder, self.token = other, current[1]
                    return True
                self._lose(f"the lease on {redact_uri(self.prefix)} was taken over by "
                           f"{other.describe() if other else 'another run (it is gone now)'}")
                return False
            self.holder, self.token = renewed, token
            return True

    def _renew_loop(self) -> None:
        interval = max(0.05, self.holder.timeout_s / 4)
        while not self._stop.wait(interval) and not self.lost:
            try:
                if not self.renew():
                    return
                self.unwritable = None
            except Exception as error:  # a storage hiccup: keep the last token and try again next interval
                self.unwritable = f"{type(error).__name__}: {error}"
                log.warning("could not renew the run lease on %s: %s", redact_uri(self.prefix), error)

    def _watch_loop(self) -> None:
        """Give the lease up once it has gone unrenewed for too long, even while a renewal call hangs."""
        interval = max(0.02, self.holder.timeout_s / 16)
        while not self._stop.wait(interval) and not self.lost:
            deadline = self.holder.renewed_at + GIVE_UP_FRACTION * self.holder.timeout_s
            if self.clock() > deadline:
                self._lose(f"the lease on {redact_uri(self.prefix)} could not be renewed for "
                           f"{GIVE_UP_FRACTION * self.holder.timeout_s:.0f} s (the storage did not answer); "
                           "another run may take it over")
                return

    def _lose(self, message: str) -> None:
        with self._lost_lock:
            if self.lost:
                return
            self.lost = message
        if self._stop.is_set():
            return  # the run has ended: nothing to stop
        log.error("%s", message)
        if self.on_lost is not None:
            self.on_lost(message)

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this run's. Never raises: a lease left behind expires."""
        self._stop.set()
        # A renewal under way finishes first (its storage calls are bounded), so the delete carries the last token.
        if not self._store_lock.acquire(timeout=max(1.0, self.holder.timeout_s / 2)):
            log.warning("could not release the run lease on %s: a renewal is still waiting on the storage (the lease "
                        "expires in %.0f s)", redact_uri(self.prefix), self.holder.timeout_s)
            return
        try:
            if self.lost:
                return
            self.store.delete(self.token)
        except Exception as error:
            log.warning("could not release the run lease on %s (it expires in %.0f s): %s",
                        redact_uri(self.prefix), self.holder.timeout_s, error)
        finally:
            self._store_lock.release()
        for thread in self._threads:
            thread.join(timeout=1)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _parse(data: bytes) -> LeaseHolder | None:
    try:
        return LeaseHolder.from_json(data)
    except (ValueError, KeyError, TypeError):
        return None


def acquire_lease(
    prefix: str,
    run_id: str,
    options: StorageOptions,
    timeout_s: float,
    break_lease: bool = False,
    clock: Callable[[], float] = time.time,
    on_lost: Callable[[str], None] | None = None,
) -> Lease:
    """Take the lease on `prefix` for `run_id`, or raise LeaseHeld naming the live run that holds it.
    `on_lost(message)` is called if the lease is later lost (see Lease).

    A lease whose holder has not renewed it for its timeout is taken over, as is any lease with `break_lease`.
    Raises LeaseError when the lease cannot be read or written, or holds something other than a lease.
    """
    uri = OutputLayout(prefix).lease
    try:
        store = _store_for(uri, options, timeout_s)
        holder = LeaseHolder.of_this_process(run_id, clock(), timeout_s)
        for _ in range(5):  # each pass ends, or loses a race to another run and looks again
            token = store.create(holder.to_json())
            if token is not None:
                return Lease(store, holder, token, prefix, clock, on_lost)
            current = store.read()
            if current is None:
                continue  # released between our two requests
            data, current_token = current
            other = _parse(data)
            if other is not None and other.run_id == run_id:  # ours: a write that landed though its answer was lost
                return Lease(store, other, current_token, prefix, clock, on_lost)
            if other is None and not break_lease:
                raise LeaseError(f"{redact_uri(uri)} is not a lease this tool wrote; remove it or re-run with "
                                 "--break-lease")
            gone = other is not None and other.process_is_gone()
            if other is not None and not break_lease and not other.expired(clock()) and not gone:
                raise LeaseHeld(prefix, other)
            token = store.replace(holder.to_json(), current_token)
            if token is not None:
                why = ("--break-lease" if break_lease else "its process on this host is gone" if gone
                       else "it stopped renewing it")
                log.warning("took over the run lease on %s from %s (%s)", redact_uri(prefix),
                            other.describe() if other else "an unreadable lease", why)
                return Lease(store, holder, token, prefix, clock, on_lost)
        raise LeaseStorageError(f"could not take the lease {redact_uri(uri)}: other runs keep changing it")
    except (LeaseHeld, LeaseError):
        raise
    except (StorageError, OSError) as error:
        raise LeaseStorageError(f"cannot take the run lease {redact_uri(uri)}: {error}") from error
    except Exception as error:  # botocore's errors and the like
        raise LeaseStorageError(
            f"cannot take the run lease {redact_uri(uri)}: {type(error).__name__}: {error}") from error
