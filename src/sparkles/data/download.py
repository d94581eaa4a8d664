"""``sparkles openimages download``: a class-filtered Open Images subset, for users on one machine.

Fetches the label and class CSVs and the selected validation images over HTTPS from the public
Open Images locations. Every file goes to ``<name>.part`` first and is renamed only once its
size (and, where the server gives an MD5 ETag, its checksum) is verified; an interrupted file is
resumed with an HTTP Range request, so re-running the command picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import requests
from tqdm import tqdm

from sparkles.errors import UserError

log = logging.getLogger(__name__)

LABELS_URL = (
    "https://storage.googleapis.com/openimages/v5/"
    "validation-annotations-human-imagelabels-boxable.csv"
)
CLASSES_URL = "https://storage.googleapis.com/openimages/v5/class-descriptions-boxable.csv"
IMAGES_URL = "https://open-images-dataset.s3.amazonaws.com/validation/{image_id}.jpg"
LABELS_FILE = "validation-annotations-human-imagelabels-boxable.csv"
CLASSES_FILE = "class-descriptions-boxable.csv"
CHUNK = 1 << 16
RETRY_STATUS = {429, 500, 502, 503, 504}


class _ServerBusy(Exception):
    """A 5xx or 429: the server may answer the same request a moment later."""


# A refused or dropped connection, a stall, a body cut short, a busy server: retried, resumed.
TRANSIENT = (
    _ServerBusy,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')  # S3 single-part uploads: the ETag is the MD5


class DownloadError(UserError, RuntimeError):
    """A file that could not be fetched or verified; the message says which and why."""


@dataclass
class DownloadReport:
    """``requested = downloaded + already_present + failed``; failed ids are listed."""

    classes: dict[str, str]  # display name → LabelName (MID)
    requested: int = 0
    downloaded: int = 0
    already_present: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # image id → reason
    invalid_ids: int = 0  # label rows whose ImageID is not 16 hex digits: never a file name
    invalid_examples: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _offline_hint(url: str, err: Exception) -> DownloadError:
    return DownloadError(
        f"cannot reach {url}: {err}. Are you offline? The download needs HTTPS access to "
        "storage.googleapis.com and open-images-dataset.s3.amazonaws.com (or pass --labels-url/"
        "--classes-url/--images-url pointing at a mirror)."
    )


def fetch(
    session: requests.Session, url: str, target: Path, *, retries: int = 4, timeout: float = 30.0
) -> int:
    """Download ``url`` to ``target`` (resuming ``target.part``); returns the bytes fetched now.

    A broken connection is retried from where it stopped; the finished file must have the size
    the server announced and, for an MD5 ETag, that checksum. 404 and other HTTP errors raise.
    """
    if target.exists():
        return 0
    partial = target.with_name(target.name + ".part")
    fetched = 0
    for attempt in range(retries + 1):
        offset = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
                if response.status_code == 416:  # the part file is already whole (or too long)
                    partial.unlink()
                    continue
                if response.status_code in RETRY_STATUS:
                    raise _ServerBusy(f"HTTP {response.status_code} {response.reason}")
                if response.status_code not in (200, 206):
                    raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason}")
                if response.status_code == 200:
                    offset = 0  # the server ignored the Range header: start over
                total = _announced_size(response, offset)
                with partial.open("ab" if offset else "wb") as out:
                    for chunk in response.iter_content(CHUNK):
                        out.write(chunk)
                        fetched += len(chunk)
                etag = response.headers.get("ETag", "")
        except TRANSIENT as err:
            if attempt == retries:
                if isinstance(err, requests.exceptions.ConnectionError) and not partial.exists():
                    raise _offline_hint(url, err) from err
                raise DownloadError(f"{url}: gave up after {retries + 1} attempts: {err}") from err
            log.info("%s: %s; resuming (attempt %d)", url, type(err).__name__, attempt + 2)
            time.sleep(min(2**attempt * 0.2, 5))
            continue
        _verify(url, partial, size=total, etag=etag)
        partial.rename(target)
        return fetched
    raise DownloadError(f"{url}: could not complete the download")


def _announced_size(response: requests.Response, offset: int) -> int | None:
    """The whole file's size: from Content-Range on a 206, else Content-Length."""
    content_range = response.headers.get("Content-Range", "")
    if response.status_code == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) + offset if length and length.isdigit() else None


def _verify(url: str, partial: Path, *, size: int | None, etag: str) -> None:
    actual = partial.stat().st_size
    if size is not None and actual != size:
        partial.unlink()
        raise DownloadError(f"{url}: got {actual} bytes, the server announced {size}")
    match = MD5_ETAG.match(etag.strip())
    if match:
        digest = hashlib.md5(partial.read_bytes(), usedforsecurity=False).hexdigest()
        if digest != match.group(1):
            partial.unlink()
            raise DownloadError(f"{url}: MD5 {digest} does not match the server's ETag {etag}")


# Open Images ids are 16 lower-case hex digits. File names are built from ids read from a
# remote CSV: anything else (``../x``, ``a/b``, an empty cell) must never reach the file system.
OPEN_IMAGES_ID = r"[0-9a-f]{16}"


def split_invalid_ids(labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """(rows with a valid ImageID, the ImageIDs of the others)."""
    valid = labels.ImageID.fillna("").str.fullmatch(OPEN_IMAGES_ID)
    return labels[valid], labels.ImageID[~valid].fillna("")


def select_images(
    labels: pd.DataFrame, classes_csv: Path, *, classes: list[str], limit: int | None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Image ids with a positive label of each class: at most ``limit`` per class, stable order.

    Ids are taken in a hashed order (not alphabetically), so a small subset is spread over the
    whole set, and a larger ``--limit`` keeps every image a smaller one picked.
    """
    names = pd.read_csv(classes_csv, header=None, names=["LabelName", "DisplayName"], dtype=str)
    names = names[names.LabelName != "LabelName"]  # the v7 file has a header
    by_name = {
        name.lower(): mid for mid, name in zip(names.LabelName, names.DisplayName, strict=True)
    }
    unknown = [c for c in classes if c.lower() not in by_name]
    if unknown:
        raise DownloadError(f"{classes_csv}: no class named {unknown} (matched ignoring case)")
    mids = {c: by_name[c.lower()] for c in classes}
    confident = pd.to_numeric(labels.Confidence, errors="coerce") == 1
    positive = labels[confident & labels.LabelName.isin(mids.values())]
    chosen = []
    for name, mid in mids.items():
        ids = positive.loc[positive.LabelName == mid, "ImageID"].drop_duplicates()
        order = ids.map(lambda i: hashlib.sha1(i.encode()).hexdigest())
        picked = ids.iloc[order.argsort()].head(limit) if limit else ids
        chosen.append(pd.DataFrame({"image_id": picked, "class": name}))
    return pd.concat(chosen, ignore_index=True), mids


def download_subset(
    classes: list[str],
    dest: Path,
    *,
    limit: int | None = None,
    workers: int = 8,
    labels_url: str = LABELS_URL,
    classes_url: str = CLASSES_URL,
    images_url: str = IMAGES_URL,
) -> DownloadReport:
    """Labels, classes and images of ``classes`` into ``dest`` (layout as conf/openimages.yaml).

    ``dest/validation/<ImageID>.jpg`` plus the label CSV cut to the images downloaded (all their
    labels, so EDA still sees co-occurrence) and the class CSV. The full label CSV is kept in
    ``dest/.source`` so a re-run with a larger limit downloads only the new images.
    """
    started = time.monotonic()
    source, images = dest / ".source", dest / "validation"
    source.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    session = requests.Session()
    pool = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(workers, 10))
    session.mount("https://", pool)
    session.mount("http://", pool)
    fetch(session, labels_url, source / LABELS_FILE)
    fetch(session, classes_url, source / CLASSES_FILE)
    # read once, as text: selection uses it, and the subset CSV is written from it unchanged
    labels, invalid = split_invalid_ids(pd.read_csv(source / LABELS_FILE, dtype=str))
    chosen, mids = select_images(labels, source / CLASSES_FILE, classes=classes, limit=limit)
    ids = chosen.image_id.drop_duplicates().tolist()
    report = DownloadReport(classes=mids, requested=len(ids))
    if len(invalid):
        report.invalid_ids = len(invalid)
        report.invalid_examples = sorted(set(invalid))[:10]
        log.warning(
            "%d label rows have an ImageID that is not 16 hex digits (e.g. %s): skipped",
            len(invalid),
            ", ".join(repr(i) for i in report.invalid_examples[:3]),
        )
    report.per_class = chosen["class"].value_counts().to_dict()
    bar = tqdm(total=len(ids), desc="images", unit="img", file=sys.stderr, disable=None)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = {
            pool.submit(fetch, session, images_url.format(image_id=i), images / f"{i}.jpg"): i
            for i in ids
        }
        for job in as_completed(jobs):
            image_id = jobs[job]
            try:
                fetched = job.result()
            except DownloadError as err:
                report.failed[image_id] = str(err)
            else:
                report.bytes_downloaded += fetched
                if fetched:
                    report.downloaded += 1
                else:
                    report.already_present += 1
            bar.update()
            bar.set_postfix(MB=f"{report.bytes_downloaded / 1e6:.1f}", failed=len(report.failed))
    bar.close()
    present = {i for i in ids if (images / f"{i}.jpg").exists()}
    labels[labels.ImageID.isin(present)].to_csv(dest / LABELS_FILE, index=False)
    (dest / CLASSES_FILE).write_bytes((source / CLASSES_FILE).read_bytes())
    report.seconds = round(time.monotonic() - started, 2)
    (dest / "download_report.json").write_text(json.dumps(asdict(report), indent=2))
    return report
