"""nginx in front of the REST API, with ``auth_request`` to forward auth.

The tests start one of these per run: Debian's nginx binary, as an
unprivileged process (``nobody`` when the caller is root), with a generated
configuration whose pid, logs and temporary files all live in one folder,
listening on 127.0.0.1 only. ``make nginx`` installs the package.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.postgres_server import OsUser
from infra.process import InfraError, log_tail, port_accepts_connections

LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0
FORWARD_AUTH_PATH = "/v1/auth/forward"
IDENTITY_HEADERS = (
    "X-Auth-User-Id",
    "X-Auth-Username",
    "X-Auth-Role",
    "X-Auth-Token-Id",
)


def nginx_executable() -> str:
    """Return the path of the nginx binary, or raise with how to install it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        raise InfraError(
            "nginx is not installed; run `make nginx` (as root) or "
            "`apt-get install nginx`"
        )
    return found


def _variable(header: str) -> str:
    return "$pat_" + header.removeprefix("X-Auth-").replace("-", "_").lower()


def _response_header(header: str) -> str:
    return "$upstream_http_" + header.lower().replace("-", "_")


def render_config(
    work_dir: Path,
    port: int,
    tokens_url: str,
    locations: dict[str, str],
    public_locations: dict[str, str] | None = None,
) -> str:
    """Return an nginx configuration that checks every request's PAT first.

    ``locations`` maps an nginx location (such as ``/v1/tokens`` or
    ``~ ^/v1/users/[^/]+/tokens``) to the upstream base URL that serves it.
    ``public_locations`` are passed through without a token check (sign-in).
    The identity headers that forward auth returns replace any that the client
    sent under the same names.
    """
    folder = str(work_dir)
    identity_from_auth = "\n".join(
        f"        auth_request_set {_variable(h)} {_response_header(h)};"
        for h in IDENTITY_HEADERS
    )
    identity_to_upstream = "\n".join(
        f"        proxy_set_header {h} {_variable(h)};" for h in IDENTITY_HEADERS
    )
    routes = "\n".join(
        f"        location {location} {{ proxy_pass {url.rstrip('/')}; }}"
        for location, url in locations.items()
    )
    public = "\n".join(
        f"        location {location} {{ auth_request off; proxy_pass "
        f"{url.rstrip('/')}; }}"
        for location, url in (public_locations or {}).items()
    )
    return f"""\
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log notice;

events {{
    worker_connections 512;
}}

http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    proxy_http_version 1.1;

    upstream pat_forward_auth {{
        server {tokens_url.removeprefix("http://").rstrip("/")};
        keepalive 16;
    }}

    server {{
        listen {LOOPBACK}:{port};

        auth_request /_pat_forward_auth;
{identity_from_auth}

{identity_to_upstream}
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header Connection "";

        # nginx sends the original method and headers, Authorization among
        # them, without the body. Forward auth returns 200, 401 or 403 only.
        location = /_pat_forward_auth {{
            internal;
            proxy_pass http://pat_forward_auth{FORWARD_AUTH_PATH};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
        }}

{public}
{routes}
    }}
}}
"""


@dataclass
class NginxGateway:
    """One nginx process with a generated configuration under ``work_dir``."""

    work_dir: Path
    port: int
    tokens_url: str
    locations: dict[str, str]
    public_locations: dict[str, str] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.work_dir / "error.log"

    def start(self) -> None:
        executable = nginx_executable()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "nginx.conf"
        config.write_text(
            render_config(
                self.work_dir,
                self.port,
                self.tokens_url,
                self.locations,
                self.public_locations,
            )
        )
        run_as: dict[str, Any] = {}
        user = OsUser.for_server()
        if user is not None:
            for folder in reversed(self.work_dir.parents):
                if not user.can_search(folder):
                    raise InfraError(
                        f"user {user.name!r} cannot enter {folder}, which nginx "
                        f"needs to reach {self.work_dir}; run chmod o+x {folder} "
                        "or set PAT_RUN_DIR to a folder under a world-searchable path"
                    )
            # nginx started as root would keep a root master process.
            for path in [self.work_dir, *self.work_dir.iterdir()]:
                os.chown(path, user.uid, user.gid)
            run_as = {"user": user.uid, "group": user.gid, "extra_groups": []}
        with (self.work_dir / "stderr.log").open("ab") as stderr:
            self._process = subprocess.Popen(
                [
                    executable,
                    "-p",
                    str(self.work_dir),
                    "-c",
                    str(config),
                    "-e",
                    str(self.error_log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                start_new_session=True,
                **run_as,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not port_accepts_connections(LOOPBACK, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise InfraError(
                    f"nginx did not start on {LOOPBACK}:{self.port}:\n"
                    + log_tail(self.work_dir / "stderr.log")
                    + log_tail(self.error_log)
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL after a timeout) and its workers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
