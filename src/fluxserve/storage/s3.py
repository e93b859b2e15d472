"""Images in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2...), for servers on several machines.

The ``s3`` extra (boto3); nothing else imports boto3. Every server that names the same bucket
and prefix serves every image. A ``PUT`` is atomic in S3: an object is whole or absent, as a file
written by :func:`fluxserve.storage.folder.write_atomically` is. Credentials and the region come
from :class:`~fluxserve.storage.files.BucketOptions`, else from boto3's usual sources
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``~/.aws/config``, an instance role). A bucket that cannot be reached, does not exist or refuses
the credentials is :class:`~fluxserve.errors.StorageUnavailable` (503), never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from fluxserve.errors import NotFound, StorageUnavailable
from fluxserve.storage.blobs import Blob
from fluxserve.storage.files import BucketOptions

log = logging.getLogger("fluxserve.storage")

DELETE_BATCH = 1000
"""The most keys one DeleteObjects call takes."""
ATTEMPTS = 3
"""Tries of each call (boto3's standard retry mode, with backoff) before the bucket counts as down."""
_MISSING = {"404", "NoSuchKey", "NotFound"}
_REFUSED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}


class S3BlobStore:
    """A :class:`~fluxserve.storage.blobs.BlobStore` over ``options.bucket``, keys under ``options.prefix``."""

    def __init__(self, options: BucketOptions) -> None:
        self.options = options
        self.bucket = options.bucket
        session = boto3.session.Session(
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
            region_name=options.region,
        )
        config = Config(
            connect_timeout=options.timeout_seconds,
            read_timeout=options.timeout_seconds,
            retries={"mode": "standard", "max_attempts": ATTEMPTS},
            # S3-compatible servers on their own host name (MinIO, Ceph) want the bucket in the path.
            s3={"addressing_style": "path" if options.endpoint_url else "auto"},
        )
        self._client: Any = session.client("s3", endpoint_url=options.endpoint_url, config=config)

    def _key(self, key: str) -> str:
        return self.options.prefix + key

    def put(self, key: str, data: bytes, media_type: str) -> None:
        with _failures(self.bucket, "store an image"):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=media_type)

    def open(self, key: str) -> Blob:
        with _failures(self.bucket, "read an image", missing=f"no stored file {key}"):
            answer = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        return Blob(int(answer["ContentLength"]), _Body(answer["Body"], self.bucket))

    def exists(self, key: str) -> bool:
        try:
            with _failures(self.bucket, "look for an image", missing="absent"):
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except NotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"a folder prefix ends with '/': {prefix!r}")
        with _failures(self.bucket, "delete a job's images"):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
            for start in range(0, len(keys), DELETE_BATCH):
                batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
                answer = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise StorageUnavailable(
                        f"the bucket {self.bucket!r} kept {len(answer['Errors'])} objects it was told to delete "
                        f"({first.get('Code')} for {first.get('Key')}); check the credentials' permissions"
                    )

    def folders(self, prefix: str) -> list[str]:
        if not prefix.endswith("/"):
            raise ValueError(f"a folder prefix ends with '/': {prefix!r}")
        start = self._key(prefix)
        with _failures(self.bucket, "list stored files"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, Delimiter="/"
            )
            found = [item["Prefix"] for page in pages for item in page.get("CommonPrefixes", [])]
        return sorted(folder[len(start) :].rstrip("/") for folder in found)

    def check(self) -> None:
        where = self.options.endpoint_url or "AWS S3"
        try:
            with _failures(self.bucket, "open the bucket"):
                self._client.head_bucket(Bucket=self.bucket)
        except StorageUnavailable as error:
            raise StorageUnavailable(f"{error.message} (object_store_url s3://{self.bucket}, at {where})") from error

    def close(self) -> None:
        self._client.close()


@contextmanager
def _failures(bucket: str, doing: str, *, missing: str | None = None) -> Iterator[None]:
    """Turn boto3's errors into NotFound (with ``missing``, for a key that is not there) or StorageUnavailable."""
    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if missing is not None and code in _MISSING:
            raise NotFound(missing) from None
        raise StorageUnavailable(_explain(bucket, doing, code, status)) from error
    except (NoCredentialsError, PartialCredentialsError) as error:
        raise StorageUnavailable(
            f"image storage is unavailable: no complete credentials for the bucket {bucket!r} ({error}); "
            "set object_store_access_key_id and object_store_secret_access_key, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or an AWS profile"
        ) from error
    except BotoCoreError as error:
        log.warning("the bucket %r: could not %s: %s", bucket, doing, error)
        raise StorageUnavailable(
            f"image storage is unavailable: the bucket {bucket!r} cannot be reached ({type(error).__name__}); "
            "try again shortly"
        ) from error


def _explain(bucket: str, doing: str, code: str, status: object) -> str:
    if code in ("NoSuchBucket", "404") or (code == "" and status == 404):
        return f"image storage is unavailable: the bucket {bucket!r} does not exist; create it"
    if code in _REFUSED or status == 403:
        return (
            f"image storage is unavailable: the bucket {bucket!r} refused this server's credentials "
            f"({code or status}); check them and the bucket's policy"
        )
    return f"image storage is unavailable: the bucket {bucket!r} could not {doing} ({code or status})"


class _Body:
    """An object's body being read: boto3's stream errors become StorageUnavailable too."""

    def __init__(self, body: Any, bucket: str) -> None:
        self._body = body
        self._bucket = bucket

    def read(self, size: int = -1, /) -> bytes:
        with _failures(self._bucket, "read an image"):
            data: bytes = self._body.read(None if size < 0 else size)
            return data

    def close(self) -> None:
        self._body.close()
