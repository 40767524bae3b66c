"""The container images and compose.yaml under test, driven with podman and podman-compose as a user would:
`containers/build-images` builds the base (debootstrap, no registry), the gateway and Redis; `Compose` runs the
shipped containers/compose.yaml under a project name of its own, with the test's INI file and certificate.

    with Compose(project, env) as stack:      # up -d; down on exit
        stack.container("gateway-1")          # the podman container name of a service
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTAINERS = os.path.join(REPOSITORY, "containers")
COMPOSE_FILE = os.path.join(CONTAINERS, "compose.yaml")
GATEWAY_IMAGE = "localhost/lockllm-wsgi:latest"
# A cold build (debootstrap, apt and pip in two images, mod_wsgi compiled) takes 3-5 minutes on two cores.
BUILD_SECONDS = 20 * 60
COMMAND_SECONDS = 180


def podman_compose() -> str | None:
    """podman-compose from this venv (the test extra), else from PATH."""
    return shutil.which("podman-compose", path=os.path.dirname(sys.executable)) or shutil.which("podman-compose")


def missing_container_tools() -> str | None:
    """Why the container tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root: debootstrap builds the base image and podman runs rootful"
    for tool in ("podman", "runc", "debootstrap"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            return f"{tool} is not installed (apt-get install podman runc debootstrap)"
    if not podman_compose():
        return "podman-compose is not installed (pip install 'podman-compose>=1.6', in the test extra)"
    return None


def podman_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the repository's containers.conf (podman without systemd) unless one is named."""
    environment = dict(os.environ, CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF")
                       or os.path.join(CONTAINERS, "containers.conf"))
    environment.update(extra or {})
    return environment


def run(command: list[str], env: dict[str, str] | None = None, timeout: float = COMMAND_SECONDS,
        check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env or podman_environment(),
                          check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return done


def build_images() -> None:
    run([os.path.join(CONTAINERS, "build-images")], timeout=BUILD_SECONDS)


def podman(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["podman", *arguments], check=check)


def logs(container: str) -> str:
    """What the container wrote to stdout and stderr (`podman logs` interleaves them)."""
    done = podman("logs", container)
    return done.stdout + done.stderr


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60) -> object:
    """Poll `condition` until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Compose:
    """containers/compose.yaml, unchanged, under its own project name; `env` fills its ${...} variables."""

    def __init__(self, project: str, env: dict[str, str]):
        self.project = project
        self.env = podman_environment(env)

    def compose(self, *arguments: str) -> subprocess.CompletedProcess:
        return run([podman_compose() or "podman-compose", "-p", self.project, "-f", COMPOSE_FILE, *arguments],
                   env=self.env)

    def __enter__(self) -> Compose:
        try:
            self.compose("up", "-d")
        except BaseException:
            self.compose("down")  # what `up` created before it failed
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.compose("down")

    def container(self, service: str) -> str:
        """The name of the one container running `service`."""
        names = podman("ps", "-a", "--format", "{{.Names}}", "--filter", f"label=com.docker.compose.project={self.project}",
                       "--filter", f"label=com.docker.compose.service={service}").stdout.split()
        assert len(names) == 1, f"{service}: {names}"
        return names[0]

    def leftovers(self) -> list[str]:
        """Containers, pods and networks of this project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        containers = podman("ps", "-a", "--format", "{{.Names}}", "--filter", label).stdout.split()
        networks = podman("network", "ls", "--format", "{{.Name}}", "--filter", label).stdout.split()
        pods = podman("pod", "ps", "--format", "{{.Name}}", "--filter", f"name={self.project}").stdout.split()
        return containers + networks + pods
