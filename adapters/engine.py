"""The container engine through the Docker SDK (Docker or Podman's Docker API), in a thread."""

from __future__ import annotations

import asyncio
from typing import Any

import docker
from docker.errors import DockerException

from adapters.base import DependencyError

# Pinned so that building the client never calls the engine (version="auto" would).
DOCKER_API_VERSION = "1.41"


class EngineAdapter:
    """The engine that runs the platform's Compose services."""

    name = "engine"

    def __init__(self, base_url: str, compose_project: str, backend_service: str, timeout: float) -> None:
        self.base_url = base_url
        self.compose_project = compose_project
        self.backend_service = backend_service
        self.timeout = timeout
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        """Return the SDK client, made on first use (it opens no connection itself)."""
        if self._client is None:
            self._client = docker.DockerClient(
                base_url=self.base_url, version=DOCKER_API_VERSION, timeout=max(1, int(self.timeout + 0.999))
            )
        return self._client

    def service_containers(self, service: str) -> list[Any]:
        """List the containers of one Compose service of the platform's project."""
        return list(
            self.client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"com.docker.compose.project={self.compose_project}",
                        f"com.docker.compose.service={service}",
                    ]
                },
            )
        )

    def _check(self) -> str:
        try:
            if not self.client.ping():
                raise DependencyError("unexpected answer", "engine ping did not answer OK")
            containers = self.service_containers(self.backend_service)
        except DockerException as error:
            raise DependencyError(*_engine_reason(error)) from None
        if not containers:
            raise DependencyError(
                "not found", f"no container for service {self.compose_project}/{self.backend_service}"
            )
        container = containers[0]
        state = container.attrs.get("State", {})
        status = str(state.get("Status", container.status))
        health = (state.get("Health") or {}).get("Status")
        image = ",".join(container.image.tags) if container.image.tags else container.image.short_id
        summary = f"{self.backend_service} {status}" + (f" ({health})" if health else "") + f", {image}"
        if status != "running":
            raise DependencyError("unexpected answer", summary)
        return summary

    async def ping(self) -> str:
        """Check the engine answers and report the backend container's state."""
        return await asyncio.to_thread(self._check)

    def close(self) -> None:
        """Close the SDK client's connections."""
        if self._client is not None:
            self._client.close()


def _engine_reason(error: DockerException) -> tuple[Any, str]:
    text = str(error)
    lowered = text.lower()
    if "connection refused" in lowered or "no such file" in lowered or "connectionerror" in lowered:
        return "refused", f"engine at {text[:120]}"
    if "timed out" in lowered or "timeout" in lowered:
        return "timeout", "engine did not answer in time"
    return "error", text[:200]
