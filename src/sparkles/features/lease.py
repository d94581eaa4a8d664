"""One featurize at a time puts images through the CNN for a feature store: a lease.

Two people who featurize the same images into one store at once would both run the CNN on all
of them (hours at the study's scale), and the run that commits second would count the other's
work as its own reuse. So the step that decides what the store lacks, computes it and commits it
holds ``<store>/_featurize.lease``; a second run waits for it, then finds the store holds what
the first computed and computes only what is still missing. Hashing files and everything after
the commit run beside it.

The lease is taken by an **atomic create**: ``O_CREAT | O_EXCL`` on a local disk, and Hadoop's
``create(overwrite=false)`` elsewhere, which HDFS's NameNode makes atomic. S3 (S3A) under the
Hadoop of the supported pyspark releases checks for the object, then writes it: two runs that
start within that round trip can both take it (docs/feature-store.md says what then happens,
and the run says it). The holder renews it every quarter of ``store.lease_seconds``; a lease not
renewed for that long belongs to a run that died (SIGKILL, a lost EMR step) and is broken by
renaming it aside, which only one waiter can do; on the holder's own machine a holder whose
process is gone is known dead at once. A dead holder never committed its segment
(``Segments.append`` is all or nothing), so nothing of it is read or counted.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyspark.sql import SparkSession

from sparkles import storage

log = logging.getLogger(__name__)
LEASE_FILE = "_featurize.lease"
POLL_SECONDS = 1.0


def _died(holder: dict[str, Any]) -> bool:
    """A holder on this machine whose process is gone: no need to wait for its lease to expire."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


class StoreLease:
    """The featurize lease of the store at ``root``."""

    def __init__(self, spark: SparkSession, root: str, seconds: float) -> None:
        self.spark, self.seconds = spark, seconds
        self.path = f"{root.rstrip('/')}/{LEASE_FILE}"
        self.token = uuid.uuid4().hex
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token}

    # --- the file --------------------------------------------------------------------------
    def _body(self) -> str:
        return json.dumps({**self.owner, "renewed_at": time.time()})

    def _create(self) -> bool:
        return storage.create_new(self.spark, self.path, self._body())

    def _read(self) -> dict[str, Any] | None:
        """The holder's lease; None when there is none (or it is being written)."""
        try:
            return json.loads(storage.read_text(self.spark, self.path))
        except Exception:  # gone between the listing and the read, or half-written
            return None

    def _renew(self) -> None:
        if (self._read() or {}).get("token") == self.token:
            storage.write_text(self.spark, self.path, self._body())

    def _break(self, stale: dict[str, Any]) -> None:
        """Move a dead holder's lease aside: of several waiters, one rename succeeds."""
        aside = f"{self.path}.broken-{uuid.uuid4().hex}"
        if storage.rename(self.spark, self.path, aside):
            log.warning(
                "broke the featurize lease of %s (pid %s), last renewed %.0f s ago: its run died, "
                "and its uncommitted work is not read",
                stale.get("host"),
                stale.get("pid"),
                time.time() - stale.get("renewed_at", 0),
            )
            storage.delete(self.spark, aside)

    # --- the lease -------------------------------------------------------------------------
    @contextmanager
    def held(self) -> Iterator[float]:
        """Wait for the lease, hold it (renewed) while the block runs; yields seconds waited."""
        started, said = time.monotonic(), None
        while not self._create():
            holder = self._read()
            if holder is None:
                time.sleep(POLL_SECONDS / 4)
                continue
            if _died(holder) or time.time() - holder.get("renewed_at", 0) > self.seconds:
                self._break(holder)
                continue
            if said != holder.get("token"):
                said = holder.get("token")
                log.info(
                    "waiting for the featurize of %s (pid %s) into this store: it computes "
                    "what both need once, then this run takes what it committed",
                    holder.get("host"),
                    holder.get("pid"),
                )
            time.sleep(POLL_SECONDS)
        waited = time.monotonic() - started
        stop = threading.Event()
        renewer = threading.Thread(target=self._renewing, args=(stop,), daemon=True)
        renewer.start()
        try:
            yield waited
        finally:
            stop.set()
            renewer.join()
            if (self._read() or {}).get("token") == self.token:
                storage.delete(self.spark, self.path)

    def _renewing(self, stop: threading.Event) -> None:
        while not stop.wait(self.seconds / 4):
            try:
                self._renew()
            except Exception as err:  # a blip: the next renewal may work, expiry is far off
                log.warning("could not renew the featurize lease %s: %s", self.path, err)
