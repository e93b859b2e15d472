"""The file store: a job's images kept in the data directory or in an S3 bucket, the same for callers.

Every behaviour test runs on both backends: the folder, and a real S3-compatible server (moto's)
on loopback reached through boto3. The tests after them are each backend's own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fluxserve.errors import MissingExtra, NotFound, StorageUnavailable
from fluxserve.imaging.encode import ImageFormat
from fluxserve.jobs.models import new_job_id
from fluxserve.storage.files import BucketOptions, FileStore, open_file_store
from tests.helpers import photo, png_bytes
from tests.object_store import CREDENTIALS, REGION, MotoS3

PNG, WEBP = ImageFormat.PNG, ImageFormat.WEBP


def bucket_options(s3: MotoS3, bucket: str, prefix: str = "images/", **overrides: float) -> BucketOptions:
    return BucketOptions(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=s3.endpoint_url,
        region=REGION,
        access_key_id=CREDENTIALS["object_store_access_key_id"],
        secret_access_key=CREDENTIALS["object_store_secret_access_key"],
        **overrides,
    )


@pytest.fixture(params=["folder", "s3"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FileStore]:
    if request.param == "folder":
        store = open_file_store(tmp_path / "data")
    else:
        s3: MotoS3 = request.getfixturevalue("s3")
        store = open_file_store(tmp_path / "data", bucket_options(s3, s3.new_bucket()))
    store.check()
    yield store
    store.close()


def test_an_output_is_read_back_whole_and_streamed_in_chunks(files: FileStore) -> None:
    job = new_job_id()
    data = png_bytes(photo(300, 200))
    files.write_output(job, 0, PNG, data)
    assert files.read_output(job, 0, PNG) == data
    with files.open_output(job, 0, PNG) as blob:
        assert blob.size == len(data)
        chunks = list(blob.chunks(size=1000))
    assert b"".join(chunks) == data
    assert len(chunks) == -(-len(data) // 1000)


def test_has_output_tells_which_images_are_stored(files: FileStore) -> None:
    job = new_job_id()
    files.write_output(job, 1, WEBP, b"RIFF....WEBP")
    assert files.has_output(job, 1, WEBP)
    assert not files.has_output(job, 0, WEBP)
    assert not files.has_output(job, 1, PNG)
    assert not files.has_output(new_job_id(), 1, WEBP)


def test_an_output_that_is_not_stored_is_not_found(files: FileStore) -> None:
    with pytest.raises(NotFound):
        files.open_output(new_job_id(), 0, PNG)
    with pytest.raises(NotFound):
        files.read_output(new_job_id(), 3, ImageFormat.JPEG)


def test_an_image_written_again_is_replaced_whole(files: FileStore) -> None:
    job = new_job_id()
    files.write_output(job, 0, PNG, b"first version, longer than the second")
    files.write_output(job, 0, PNG, b"second")
    assert files.read_output(job, 0, PNG) == b"second"


def test_references_and_mask_come_back_pixel_for_pixel(files: FileStore) -> None:
    job = new_job_id()
    references = [photo(64, 48, seed=1), photo(32, 32, seed=2)]
    mask = Image.fromarray((np.arange(64 * 48).reshape(48, 64) % 256).astype(np.uint8), "L")
    files.write_references(job, references)
    files.write_mask(job, mask)
    back = files.read_references(job, 2)
    assert [image.mode for image in back] == ["RGB", "RGB"]
    for original, stored in zip(references, back, strict=True):
        assert np.array_equal(np.asarray(original), np.asarray(stored))
    stored_mask = files.read_mask(job)
    assert stored_mask.mode == "L"
    assert np.array_equal(np.asarray(mask), np.asarray(stored_mask))


def test_an_input_that_is_gone_is_the_servers_failure_not_a_404(files: FileStore) -> None:
    """A job whose references vanished fails as a server error, not as a client's 'not found'."""
    job = new_job_id()
    files.write_references(job, [photo(16, 16)])
    with pytest.raises(FileNotFoundError):
        files.read_references(job, 2)
    with pytest.raises(FileNotFoundError):
        files.read_mask(job)


def test_delete_job_removes_every_file_of_that_job_only(files: FileStore) -> None:
    job, other = new_job_id(), new_job_id()
    for each in (job, other):
        files.write_references(each, [photo(16, 16)])
        files.write_mask(each, Image.new("L", (16, 16), 255))
        files.write_output(each, 0, PNG, b"zero")
        files.write_output(each, 1, PNG, b"one")
    files.delete_job(job)
    assert not files.has_output(job, 0, PNG)
    assert not files.has_output(job, 1, PNG)
    with pytest.raises(FileNotFoundError):
        files.read_references(job, 1)
    with pytest.raises(FileNotFoundError):
        files.read_mask(job)
    assert files.read_output(other, 1, PNG) == b"one"
    assert len(files.read_references(other, 1)) == 1
    files.delete_job(job)  # again: nothing left, nothing to complain about
    files.delete_job(new_job_id())  # a job that never had files


@pytest.mark.parametrize("job_id", ["../../etc", "job_short", "job_" + "A" * 23 + "/", "", "job_" + "A" * 23 + "."])
def test_only_server_made_job_ids_name_files(files: FileStore, job_id: str) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        files.write_output(job_id, 0, PNG, b"x")
    with pytest.raises(ValueError, match="not a job id"):
        files.open_output(job_id, 0, PNG)
    with pytest.raises(ValueError, match="not a job id"):
        files.delete_job(job_id)


# The folder.


def test_the_folder_keeps_todays_layout_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = open_file_store(data_dir)
    job = new_job_id()
    files.write_output(job, 0, ImageFormat.JPEG, b"jpeg bytes")
    files.write_references(job, [photo(8, 8)])
    files.write_mask(job, Image.new("L", (8, 8)))
    assert (data_dir / "outputs" / job / "0.jpg").read_bytes() == b"jpeg bytes"
    assert sorted(path.name for path in (data_dir / "references" / job).iterdir()) == ["0.png", "mask.png"]
    assert (data_dir.stat().st_mode & 0o777) == 0o700
    files.delete_job(job)
    assert not (data_dir / "outputs" / job).exists()
    assert not (data_dir / "references" / job).exists()


# The bucket.


def test_the_bucket_keeps_the_same_layout_under_the_prefix_with_content_types(tmp_path: Path, s3: MotoS3) -> None:
    bucket = s3.new_bucket()
    files = open_file_store(tmp_path / "data", bucket_options(s3, bucket, prefix="team/fluxserve/"))
    job = new_job_id()
    files.write_output(job, 0, WEBP, b"webp bytes")
    files.write_references(job, [photo(8, 8)])
    assert s3.keys(bucket) == [f"team/fluxserve/outputs/{job}/0.webp", f"team/fluxserve/references/{job}/0.png"]
    head = s3.client.head_object(Bucket=bucket, Key=f"team/fluxserve/outputs/{job}/0.webp")
    assert head["ContentType"] == "image/webp"
    assert not (tmp_path / "data" / "outputs").exists()  # nothing on the local disk
    files.delete_job(job)
    assert s3.keys(bucket) == []


def test_two_stores_over_one_bucket_see_each_others_images(tmp_path: Path, s3: MotoS3) -> None:
    bucket = s3.new_bucket()
    one = open_file_store(tmp_path / "one", bucket_options(s3, bucket))
    two = open_file_store(tmp_path / "two", bucket_options(s3, bucket))
    job = new_job_id()
    one.write_output(job, 0, PNG, b"made by one")
    assert two.read_output(job, 0, PNG) == b"made by one"
    two.delete_job(job)
    assert not one.has_output(job, 0, PNG)


def test_a_missing_bucket_is_a_clear_error_at_the_check(tmp_path: Path, s3: MotoS3) -> None:
    files = open_file_store(tmp_path / "data", bucket_options(s3, "no-such-bucket-here"))
    with pytest.raises(StorageUnavailable, match=r"'no-such-bucket-here' does not exist; create it") as raised:
        files.check()
    assert s3.endpoint_url in raised.value.message
    with pytest.raises(StorageUnavailable, match="does not exist"):
        files.write_output(new_job_id(), 0, PNG, b"x")
    with pytest.raises(StorageUnavailable, match="does not exist"):
        files.open_output(new_job_id(), 0, PNG)


@pytest.fixture
def own_s3() -> Iterator[MotoS3]:
    """An S3 server of this test's own, to take down and bring back."""
    server = MotoS3()
    yield server
    server.stop()


def test_a_bucket_that_goes_down_is_unavailable_until_it_comes_back(tmp_path: Path, own_s3: MotoS3) -> None:
    s3 = own_s3
    files = open_file_store(tmp_path / "data", bucket_options(s3, s3.new_bucket(), timeout_seconds=2))
    job = new_job_id()
    files.write_output(job, 0, PNG, b"kept")
    s3.stop()
    with pytest.raises(StorageUnavailable, match=rf"cannot be reached .* at {s3.endpoint_url}"):
        files.check()  # at start: the operator is told where the bucket was looked for
    for action in (
        lambda: files.read_output(job, 0, PNG),
        lambda: files.has_output(job, 0, PNG),
        lambda: files.write_output(job, 1, PNG, b"x"),
        lambda: files.delete_job(job),
    ):
        with pytest.raises(StorageUnavailable, match="cannot be reached") as raised:
            action()
        assert "127.0.0.1" not in raised.value.message  # a client holding a link is not told where the bucket is
    s3.start()
    files.check()
    assert files.read_output(job, 0, PNG) == b"kept"


def test_without_boto3_the_bucket_needs_the_s3_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "fluxserve.storage.s3", raising=False)
    monkeypatch.setitem(sys.modules, "boto3", None)  # an import of boto3 now fails as if it were not installed
    with pytest.raises(MissingExtra, match=r"pip install 'fluxserve\[s3\]'"):
        open_file_store(tmp_path / "data", BucketOptions(bucket="any-bucket"))


@pytest.mark.parametrize(
    ("url", "split"),
    [
        ("s3://images", ("images", "")),
        ("s3://images/", ("images", "")),
        ("s3://images/fluxserve", ("images", "fluxserve/")),
        ("s3://images/team/fluxserve/", ("images", "team/fluxserve/")),
    ],
)
def test_a_bucket_url_names_the_bucket_and_the_prefix(url: str, split: tuple[str, str]) -> None:
    assert BucketOptions.split_url(url) == split
