"""The sandbox's container engine: `podman system service` on a unix socket, serving the Docker API."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import httpx

from sandbox.component import START_TIMEOUT, STOP_TIMEOUT, ComponentStatus, Paths
from sandbox.processes import (
    find_program,
    kill_all,
    pids_running,
    running_pid,
    spawn,
    terminate,
    wait_until,
)

if TYPE_CHECKING:
    import docker

    from bot.config import Settings

DOCKER_TIMEOUT = 60

CONTAINERS_CONF = """\
# Written by the chatops sandbox: without these, container start fails on this kind of machine.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def docker_client(settings: Settings, timeout: int = DOCKER_TIMEOUT) -> docker.DockerClient:
    """Return a Docker SDK client for the sandbox's Podman socket."""
    import docker

    # Pinning the API version skips a negotiation round trip; Podman 4.3 speaks 1.41.
    return docker.DockerClient(base_url=settings.docker_host, version="1.41", timeout=timeout)


def podman_env(paths: Paths) -> dict[str, str]:
    """Return this process's environment with the sandbox's containers.conf for podman."""
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(paths.containers_conf)
    return env


def podman_answers(settings: Settings) -> bool:
    """Return True if the Podman API answers its ping on the sandbox's socket."""
    path = Paths(settings).socket
    if not path.exists():
        return False
    transport = httpx.HTTPTransport(uds=str(path))
    try:
        with httpx.Client(transport=transport, timeout=2.0) as client:
            return client.get("http://podman/_ping").status_code == 200
    except httpx.HTTPError:
        return False


def _podman_argv(paths: Paths) -> list[str]:
    """Return the service's command line, which is also how services left running are found."""
    return [find_program("podman"), "system", "service", "--time=0", f"unix://{paths.socket}"]


def start_podman(settings: Settings) -> ComponentStatus:
    """Start the Podman API service on the sandbox's socket, if not already answering."""
    paths = Paths(settings)
    paths.make()
    paths.containers_conf.write_text(CONTAINERS_CONF)
    pid = running_pid(paths.pid("podman"), "podman")
    started = False
    if pid is None or not podman_answers(settings):
        if pid is not None:
            terminate(paths.pid("podman"), "podman", STOP_TIMEOUT)
        # A service left over from an earlier start would delete the new socket when it exits.
        kill_all(pids_running(_podman_argv(paths)), STOP_TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()  # A stale socket file makes the service fail to bind.
        paths.socket.parent.mkdir(parents=True, exist_ok=True)
        argv = _podman_argv(paths)
        pid = spawn(argv, paths.pid("podman"), paths.out("podman"), env=podman_env(paths))
        started = True
    wait_until(lambda: podman_answers(settings), START_TIMEOUT, "podman", pid=pid, output=paths.out("podman"))
    verb = "started" if started else "reused"
    return ComponentStatus("podman", True, f"unix://{paths.socket}, pid {pid}, {verb}", {"pid": pid})


def stop_podman(settings: Settings) -> ComponentStatus:
    """Stop the Podman API service (containers keep running, as with a restarted dockerd)."""
    paths = Paths(settings)
    was = terminate(paths.pid("podman"), "podman", STOP_TIMEOUT)
    # Every service on this socket, not only the one in the pid file: a stray one would keep
    # answering on connections already open.
    strays = pids_running(_podman_argv(paths))
    kill_all(strays, STOP_TIMEOUT)
    was = was or bool(strays)
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()
    return ComponentStatus("podman", False, "stopped" if was else "was not running")


def podman_status(settings: Settings) -> ComponentStatus:
    """Report whether the Podman API answers on the socket."""
    paths = Paths(settings)
    pid = running_pid(paths.pid("podman"), "podman")
    if not podman_answers(settings):
        return ComponentStatus("podman", False, f"unix://{paths.socket} does not answer")
    detail = f"unix://{paths.socket}" + (f", pid {pid}" if pid else " (not started by sandbox)")
    return ComponentStatus("podman", True, detail, {"pid": pid})
