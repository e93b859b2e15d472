"""A real S3-compatible server on loopback for the tests: moto's server mode, in a thread.

It speaks the S3 HTTP API as AWS documents it; fluxserve reaches it through boto3 exactly as it
would reach AWS, MinIO or Ceph, with ``object_store_endpoint_url`` pointing at it. moto keeps its
buckets in this process, so a server stopped and started again on the same port (a bucket that
went down and came back) still has them; each test makes its own bucket.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
CREDENTIALS = {"object_store_access_key_id": "test-key-id", "object_store_secret_access_key": "test-secret"}


class MotoS3:
    """moto's S3 server on 127.0.0.1; :meth:`stop` takes it down, :meth:`start` brings it back on the same port."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request in the test output
        self.port = 0
        self._server: ThreadedMotoServer | None = None
        self.start()
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["object_store_access_key_id"],
            aws_secret_access_key=CREDENTIALS["object_store_secret_access_key"],
        )

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def new_bucket(self) -> str:
        name = f"fluxserve-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``, as the bucket lists them."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def settings(self, bucket: str, prefix: str = "") -> dict[str, Any]:
        """The settings of a fluxserve that keeps its images in ``bucket`` here."""
        url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return {
            "object_store_url": url,
            "object_store_endpoint_url": self.endpoint_url,
            "object_store_region": REGION,
            **CREDENTIALS,
        }
