"""`sparkles openimages download` against a real HTTP server on loopback serving fixture files."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from sparkles.cli import main
from sparkles.data.download import CLASSES_FILE, LABELS_FILE, DownloadError, download_subset
from tests.conftest import free_port
from tests.images import encode, photo

CAR, TREE, BOAT = "/m/0k4j", "/m/07j7r", "/m/019jd"
CLASSES_CSV = f"{CAR},Car\n{TREE},Tree\n{BOAT},Boat\n".encode()  # v5: no header
# Open Images ids are 16 hex digits; the tests name them c1 (a car), t1 (a tree), ct (both)...
ID = {
    name: hashlib.sha1(name.encode()).hexdigest()[:16]
    for name in ["c1", "c2", "c3", "t1", "t2", "ct", "b1"]
}
IMAGES = {
    ID["c1"]: [CAR],
    ID["c2"]: [CAR, BOAT],
    ID["c3"]: [CAR],
    ID["t1"]: [TREE],
    ID["t2"]: [TREE],
    ID["ct"]: [CAR, TREE],
    ID["b1"]: [BOAT],
}


def _labels_csv() -> bytes:
    rows = ["ImageID,Source,LabelName,Confidence"]
    for image_id, labels in IMAGES.items():
        rows += [f"{image_id},verification,{label},1" for label in labels]
    rows.append(f"{ID['b1']},verification,/m/0k4j,0")  # a negative label selects nothing
    return ("\n".join(rows) + "\n").encode()


@dataclass
class Server:
    """What the loopback server serves, how it misbehaves, and what it was asked."""

    files: dict[str, bytes]
    base: str = ""
    break_once: set[str] = field(default_factory=set)  # send half the body, then hang up
    wrong_etag: set[str] = field(default_factory=set)
    busy_once: set[str] = field(default_factory=set)  # answer 503 the first time
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def urls(self) -> dict[str, str]:
        return {
            "labels_url": f"{self.base}/labels.csv",
            "classes_url": f"{self.base}/classes.csv",
            "images_url": f"{self.base}/validation/{{image_id}}.jpg",
        }


@pytest.fixture
def server() -> Iterator[Server]:
    files = {"/labels.csv": _labels_csv(), "/classes.csv": CLASSES_CSV}
    for n, image_id in enumerate(IMAGES):
        files[f"/validation/{image_id}.jpg"] = encode(photo(200, 150, seed=n), quality=90)
    state = Server(files)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.requests.append((self.path, self.headers.get("Range")))
            body = state.files.get(self.path)
            if self.path in state.busy_once:
                state.busy_once.discard(self.path)
                self.send_error(503, "Slow Down")
                return
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            digest = hashlib.md5(b"other" if self.path in state.wrong_etag else body).hexdigest()
            self.send_header("ETag", f'"{digest}"')
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if self.path in state.break_once:
                state.break_once.discard(self.path)
                self.wfile.write(body[start : start + len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body[start:])

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _image_requests(server: Server) -> list[tuple[str, str | None]]:
    return [r for r in server.requests if r[0].startswith("/validation/")]


def test_downloads_the_classes_images_and_a_matching_label_file(server, tmp_path) -> None:
    report = download_subset(["car", "Tree"], tmp_path, **server.urls())
    wanted = {ID[n] for n in ("c1", "c2", "c3", "t1", "t2", "ct")}
    assert report.requested == report.downloaded == len(wanted) and not report.failed
    assert report.classes == {"car": CAR, "Tree": TREE}
    on_disk = {p.stem for p in (tmp_path / "validation").glob("*.jpg")}
    assert on_disk == wanted and not list(tmp_path.rglob("*.part"))
    for image_id in wanted:
        served = server.files[f"/validation/{image_id}.jpg"]
        assert (tmp_path / "validation" / f"{image_id}.jpg").read_bytes() == served
    labels = pd.read_csv(tmp_path / LABELS_FILE)
    assert set(labels.ImageID) == wanted  # every label of those images (Boat on c2 too)
    assert len(labels) == sum(len(IMAGES[i]) for i in wanted)
    assert (tmp_path / CLASSES_FILE).read_bytes() == CLASSES_CSV
    assert (tmp_path / "download_report.json").exists()

    server.requests.clear()
    again = download_subset(["Car", "Tree"], tmp_path, **server.urls())
    assert again.already_present == again.requested == len(wanted) and again.downloaded == 0
    assert not _image_requests(server) and not server.requests  # nothing fetched twice


def test_limit_takes_at_most_n_per_class_and_a_larger_limit_extends_it(server, tmp_path) -> None:
    small = download_subset(["Car", "Tree"], tmp_path, limit=1, **server.urls())
    assert small.per_class == {"Car": 1, "Tree": 1} and small.requested in (1, 2)  # "ct": both
    first = {p.stem for p in (tmp_path / "validation").glob("*.jpg")}
    larger = download_subset(["Car", "Tree"], tmp_path, limit=2, **server.urls())
    assert larger.per_class == {"Car": 2, "Tree": 2}
    assert larger.already_present == len(first)
    assert first <= {p.stem for p in (tmp_path / "validation").glob("*.jpg")}


def test_a_connection_broken_mid_file_is_resumed_with_a_range_request(server, tmp_path) -> None:
    big = encode(photo(1600, 1200, seed=9), quality=95)  # many chunks: some land before the break
    server.files[f"/validation/{ID['c1']}.jpg"] = big
    server.break_once.add(f"/validation/{ID['c1']}.jpg")
    report = download_subset(["Car"], tmp_path, **server.urls())
    assert not report.failed and report.downloaded == report.requested
    assert (tmp_path / "validation" / f"{ID['c1']}.jpg").read_bytes() == big
    ranges = [r for path, r in _image_requests(server) if path.endswith(f"{ID['c1']}.jpg")]
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(big) // 2  # what arrived was kept, not fetched again


def test_a_busy_server_is_asked_again(server, tmp_path) -> None:
    server.busy_once.update({"/labels.csv", f"/validation/{ID['t2']}.jpg"})
    report = download_subset(["Tree"], tmp_path, **server.urls())
    assert not report.failed and report.downloaded == 3
    assert server.requests.count((f"/validation/{ID['t2']}.jpg", None)) == 2


def test_a_part_file_left_by_an_interrupted_run_is_resumed(server, tmp_path) -> None:
    body = server.files[f"/validation/{ID['t1']}.jpg"]
    (tmp_path / "validation").mkdir()
    (tmp_path / "validation" / f"{ID['t1']}.jpg.part").write_bytes(body[:100])
    download_subset(["Tree"], tmp_path, **server.urls())
    assert (tmp_path / "validation" / f"{ID['t1']}.jpg").read_bytes() == body
    assert (f"/validation/{ID['t1']}.jpg", "bytes=100-") in server.requests


def test_a_missing_image_is_reported_and_the_command_fails_after_the_rest(
    server, tmp_path, capsys
) -> None:
    del server.files[f"/validation/{ID['t2']}.jpg"]
    server.wrong_etag.add(f"/validation/{ID['t1']}.jpg")
    urls = server.urls()
    code = main(
        [
            "openimages",
            "download",
            "--classes",
            "Tree,",
            "--dest",
            str(tmp_path),
            "--labels-url",
            urls["labels_url"],
            "--classes-url",
            urls["classes_url"],
            "--images-url",
            urls["images_url"],
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"failed {ID['t2']}: " in err and "HTTP 404" in err
    assert f"failed {ID['t1']}: " in err and "does not match the server's ETag" in err
    assert "2 of 3 images failed" in err and "run the same command again" in err
    assert {p.name for p in (tmp_path / "validation").iterdir()} == {
        f"{ID['ct']}.jpg"
    }  # no bad file kept
    assert set(pd.read_csv(tmp_path / LABELS_FILE).ImageID) == {ID["ct"]}


def test_unreachable_server_says_offline(tmp_path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DownloadError, match="cannot reach .* Are you offline"):
        download_subset(
            ["Car"], tmp_path, labels_url=f"{closed}/labels.csv", classes_url=f"{closed}/c.csv"
        )


def test_unknown_class_is_named(server, tmp_path) -> None:
    with pytest.raises(DownloadError, match=r"no class named \['Bicycle'\]"):
        download_subset(["Car", "Bicycle"], tmp_path, **server.urls())


def test_ids_that_are_not_open_images_ids_never_become_file_names(server, tmp_path) -> None:
    hostile = ["../../escaped", "a/b", "", "ABCDEF0123456789", "0123456789abcde"]
    rows = server.files["/labels.csv"].decode().splitlines()
    rows += [f"{bad},verification,{CAR},1" for bad in hostile]
    server.files["/labels.csv"] = ("\n".join(rows) + "\n").encode()
    for bad in hostile:
        server.files[f"/validation/{bad}.jpg"] = b"not for us"
    report = download_subset(["Car"], tmp_path / "dest", **server.urls())
    assert report.invalid_ids == len(hostile)
    assert set(report.invalid_examples) == set(hostile)
    assert report.requested == report.downloaded == 4 and not report.failed  # c1 c2 c3 ct
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "escaped" in p.name) == []
    on_disk = {p.stem for p in (tmp_path / "dest" / "validation").iterdir()}
    assert on_disk == {ID[n] for n in ("c1", "c2", "c3", "ct")}
    assert not [path for path, _ in _image_requests(server) if "escaped" in path or "/a/" in path]
