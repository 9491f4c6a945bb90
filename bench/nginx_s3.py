"""The bench of record's S3: nginx serves the objects' bytes, moto answers everything else.

S3 keeps connections alive across requests, speaks TLS with AES-GCM, paces each connection
to about 90 MB/s, and is never the slow side. moto alone is none of these (each response
closes its connection; its Python threads encrypt on the reader's cores), so in front of it:

- nginx (Debian's `nginx-light`), TLS 1.2/1.3 with AES-GCM only, keep-alive, answers GETs of
  the published objects from files on disk, `limit_rate` on each connection;
- moto, in this process, behind it for HEAD, PUT and every other request, and for GETs of
  anything nginx does not hold (another version, a result object).

What a reader sees agrees with S3's rules wherever the job relies on them: HEAD (from moto)
and GET (from nginx) give the same ETag and Last-Modified (the file's mtime is moto's, and
moto is told nginx's ETag for it), nginx answers If-Match with 412 when the ETag differs, and
a GET naming another versionId than the one on disk goes to moto, which has every version.

Pacing: nginx waits after each write for (bytes written / rate), counted in whole
milliseconds, so small writes would not be paced at all. Each write is therefore one large
chunk (`sendfile_max_chunk`, and `output_buffers` where TLS reads the file into memory):
900,000 bytes at 90 MB/s is 10 ms, to the millisecond. The write and the timer's wake-up add
a little to each period, so a connection gets 84-90 MB/s here (as S3 gives one, ~85-90);
`check_pacing` measures it with curl, and the bench prints that figure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

MB = 1_000_000
PACING_CHUNK = 900_000  # bytes per paced write: a whole number of milliseconds at 90 MB/s
START_TIMEOUT_SECONDS = 10


class NginxUnavailableError(Exception):
    """nginx is not installed here, or would not start."""


@dataclass(frozen=True)
class Published:
    """An object nginx serves: its S3 name, and what moto says of it."""

    bucket: str
    key: str
    version_id: str | None

    @property
    def uri(self) -> str:
        return f"/{self.bucket}/{quote(self.key)}"


@dataclass
class NginxS3:
    """A running nginx in front of moto; `publish` adds objects it serves from disk."""

    url: str
    certificate: Path | None
    folder: Path
    master_pid: int
    _config: Path
    _upstream: str
    _tls: tuple[Path, Path] | None
    _per_connection_mbps: float
    _published: list[Published] = field(default_factory=list)

    @property
    def objects(self) -> Path:
        return self.folder / "objects"

    def publish(self, item: Published, source: Path, mtime: int) -> str:
        """Serve `source` as item's bytes, with Last-Modified `mtime`; nginx's ETag for it.

        The file is linked (not copied) under nginx's root; the caller gives moto the ETag.
        """
        target = self.objects / item.bucket / item.key
        for parent in reversed(target.relative_to(self.objects).parents):
            (self.objects / parent).mkdir(mode=0o755, exist_ok=True)
        os.link(source, target)
        target.chmod(0o644)
        os.utime(target, (mtime, mtime))
        self._published.append(item)
        self._write_config()
        os.kill(self.master_pid, signal.SIGHUP)  # reload: the new map of what is on disk
        time.sleep(0.5)  # the old worker finishes, the new one has the map
        return f'"{mtime:x}-{target.stat().st_size:x}"'  # nginx's ETag: mtime-size, in hex

    def worker_cpu_seconds(self) -> float:
        """User + system CPU of nginx's processes so far (master and workers alive now)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.master_pid, *_children(self.master_pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    def _write_config(self) -> None:
        self._config.write_text(
            render_config(
                folder=self.folder,
                listen_port=int(self.url.rpartition(":")[2]),
                upstream=self._upstream,
                tls=self._tls,
                per_connection_mbps=self._per_connection_mbps,
                published=self._published,
            )
        )


def render_config(
    *,
    folder: Path,
    listen_port: int,
    upstream: str,
    tls: tuple[Path, Path] | None,
    per_connection_mbps: float,
    published: list[Published],
) -> str:
    """nginx.conf for the server described in the module docstring."""
    # One line per way a GET may name a published object: with its versionId, or none
    # (the current version, which is the one on disk). Anything else goes to moto.
    served = "\n".join(
        f'        "GET {item.uri}?{version}" 1;'
        for item in published
        for version in ("", *([item.version_id] if item.version_id else []))
    )
    ssl = ""
    if tls is not None:
        certificate, key = tls
        ssl = f"""
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384;
        ssl_prefer_server_ciphers on;
        ssl_session_cache shared:s3:1m;"""
    temp = folder / "temp"
    return f"""
worker_processes 1;
daemon off;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    types {{ }}
    default_type binary/octet-stream;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 0;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    tcp_nodelay on;
    sendfile on;
    # Paced writes: see the module docstring.
    sendfile_max_chunk {PACING_CHUNK};
    output_buffers 2 {PACING_CHUNK};
    limit_rate {round(per_connection_mbps * MB)};
    max_ranges 1;
    etag on;
    map "$request_method $uri?$arg_versionId" $on_disk {{
        default 0;
{served}
    }}
    upstream moto {{ server {upstream}; }}
    server {{
        listen 127.0.0.1:{listen_port}{" ssl" if tls else ""} reuseport;{ssl}
        root {folder / "objects"};
        location / {{
            error_page 418 = @moto;
            if ($on_disk = 0) {{ return 418; }}
        }}
        location @moto {{
            proxy_pass http://moto;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


@contextmanager
def nginx_s3(
    upstream_url: str, per_connection_mbps: float, *, tls: tuple[Path, Path] | None
) -> Iterator[NginxS3]:
    """nginx on a free 127.0.0.1 port in front of `upstream_url` (moto); always stopped.

    `tls` is (certificate, key) for HTTPS; None serves plain HTTP.
    """
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise NginxUnavailableError(
            "nginx is not installed: `apt-get install -y nginx-light` (Debian's package), "
            "then run the bench again"
        )
    upstream = upstream_url.partition("://")[2]
    with tempfile.TemporaryDirectory(prefix="nginx-s3-") as name:
        folder = Path(name)
        folder.chmod(0o755)  # nginx's workers run as nobody: they must reach the objects
        for sub in ("objects", "temp"):
            (folder / sub).mkdir()
        port = _free_port()
        server = NginxS3(
            url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
            certificate=tls[0] if tls else None,
            folder=folder,
            master_pid=0,
            _config=folder / "nginx.conf",
            _upstream=upstream,
            _tls=tls,
            _per_connection_mbps=per_connection_mbps,
        )
        server._write_config()
        process = subprocess.Popen(
            [nginx, "-c", str(server._config), "-p", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        server.master_pid = process.pid
        try:
            _wait_listening(port, process, folder)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def check_pacing(url: str, uri: str, certificate: Path | None, length: int) -> float:
    """MB/s of one connection fetching `length` bytes of `uri`, measured by curl."""
    command = ["curl", "--silent", "--show-error", "--fail", "--output", "/dev/null"]
    if certificate is not None:
        command += ["--cacert", str(certificate)]
    command += ["--range", f"0-{length - 1}", "--write-out", "%{speed_download}", url + uri]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return float(out.stdout) / MB


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(port: int, process: subprocess.Popen[bytes], folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = (folder / "error.log").read_text() if (folder / "error.log").exists() else ""
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise NginxUnavailableError(f"nginx exited {process.returncode}: {stderr}{errors}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise NginxUnavailableError(f"nginx did not listen on port {port} in {START_TIMEOUT_SECONDS} s")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]
