"""The sandbox's S3: SeaweedFS (`weed mini`) serving S3 with the configured access key, bucket seeded."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from sandbox.component import START_TIMEOUT, STOP_TIMEOUT, ComponentStatus, Paths, http_answers, url_port
from sandbox.processes import SandboxError, find_program, running_pid, spawn, terminate, wait_until

if TYPE_CHECKING:
    from bot.config import Settings


def s3_client(settings: Settings) -> Any:
    """Return a boto3 S3 client for the sandbox's S3 with short timeouts."""
    from adapters.storage import s3_client as make_s3_client

    return make_s3_client(
        settings.s3_endpoint_url,
        settings.aws_access_key_id,
        settings.aws_secret_access_key.get_secret_value(),
        settings.s3_region,
        connect_timeout=2,
        read_timeout=10,
        attempts=2,
    )


def _write_s3_config(settings: Settings, paths: Paths) -> None:
    config = {
        "identities": [
            {
                "name": "chatops-sandbox",
                "credentials": [
                    {
                        "accessKey": settings.aws_access_key_id,
                        "secretKey": settings.aws_secret_access_key.get_secret_value(),
                    }
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    paths.s3_config.parent.mkdir(parents=True, exist_ok=True)
    # The file holds the secret key: readable by the owner only.
    fd = os.open(paths.s3_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle, indent=2)


def start_s3(settings: Settings) -> ComponentStatus:
    """Start SeaweedFS (if not running), wait for S3, and make sure the bucket is seeded."""
    paths = Paths(settings)
    paths.make()
    port = url_port(settings.s3_endpoint_url, 8333)
    endpoint = settings.s3_endpoint_url.rstrip("/")
    pid = running_pid(paths.pid("s3"), "weed")
    started = False
    if pid is None:
        _write_s3_config(settings, paths)
        argv = [
            find_program("weed"),
            "mini",
            f"-dir={paths.s3 / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={port}",
            f"-s3.config={paths.s3_config}",
        ]
        (paths.s3 / "data").mkdir(parents=True, exist_ok=True)
        pid = spawn(argv, paths.pid("s3"), paths.out("s3"), cwd=paths.s3)
        started = True
    wait_until(
        lambda: http_answers(endpoint + "/"),
        START_TIMEOUT,
        "s3",
        pid=pid,
        output=paths.out("s3"),
    )
    count = _seed_bucket(settings)
    verb = "started" if started else "reused"
    return ComponentStatus(
        "s3",
        True,
        f"{endpoint} bucket {settings.s3_bucket} ({count} objects), pid {pid}, {verb}",
        {"pid": pid, "objects": count},
    )


def _seed_bucket(settings: Settings, timeout: float = 20.0) -> int:
    """Create the bucket with a few dozen small objects if it is missing or empty."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(settings)
    bucket = settings.s3_bucket
    deadline = time.monotonic() + timeout
    # S3 answers before the filer behind it is ready; retry the first calls for a while.
    while True:
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)
            listing = client.list_objects_v2(Bucket=bucket, MaxKeys=1000)
            break
        except (BotoCoreError, ClientError) as error:
            if time.monotonic() >= deadline:
                raise SandboxError(f"s3: bucket {bucket} not usable: {error}") from None
            time.sleep(0.3)
    count = int(listing.get("KeyCount", 0))
    if count:
        return count
    for key, body, content_type in _bucket_objects():
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    return len(_bucket_objects())


def _bucket_objects() -> list[tuple[str, bytes, str]]:
    """Return deterministic small objects that look like the platform's uploads and projects."""
    import random

    rng = random.Random(42)
    objects: list[tuple[str, bytes, str]] = []
    for i in range(12):
        project_id = f"{rng.getrandbits(64):016x}"
        meta = {"id": project_id, "name": f"modelo-{100 + i}", "owner": f"user{i % 5}"}
        objects.append((f"projects/{project_id}/project.json", json.dumps(meta).encode(), "application/json"))
        objects.append((f"projects/{project_id}/thumbnail.png", _tiny_png(), "image/png"))
    for i in range(20):
        upload_id = f"{rng.getrandbits(64):016x}"
        name = rng.choice(("peca", "suporte", "engrenagem", "caixa", "tampa"))
        body = f"solid {name}{i}\nendsolid {name}{i}\n".encode()
        objects.append((f"uploads/{upload_id}/{name}.stl", body, "model/stl"))
    objects.append(("backups/README.txt", b"nightly pg_dump files land here\n", "text/plain"))
    return objects


def _tiny_png() -> bytes:
    # A valid 1x1 transparent PNG.
    return bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )


def stop_s3(settings: Settings) -> ComponentStatus:
    """Stop SeaweedFS; data stays."""
    paths = Paths(settings)
    was = terminate(paths.pid("s3"), "weed", STOP_TIMEOUT)
    return ComponentStatus("s3", False, "stopped" if was else "was not running")


def s3_status(settings: Settings) -> ComponentStatus:
    """Report SeaweedFS's process and whether S3 answers with the bucket."""
    paths = Paths(settings)
    pid = running_pid(paths.pid("s3"), "weed")
    endpoint = settings.s3_endpoint_url.rstrip("/")
    if pid is None:
        return ComponentStatus("s3", False, f"{endpoint}: no weed process")
    if not http_answers(endpoint + "/"):
        return ComponentStatus("s3", False, f"{endpoint}: pid {pid} but S3 does not answer")
    return ComponentStatus("s3", True, f"{endpoint} bucket {settings.s3_bucket}, pid {pid}", {"pid": pid})
