"""Object stores: the same guarantees on the folder and on a real MinIO server."""

from __future__ import annotations

import base64
import io
import os
from datetime import timedelta

import pytest
from minio.error import S3Error

from digitize.errors import BadArgsError, ConfigError, StorageError
from digitize.fsutil import sha256_bytes
from storage.objects import FolderStore, S3Store, parse_store_url

try:
    from tests.servers import MINIO_PASSWORD, MINIO_USER
except ModuleNotFoundError:
    from servers import MINIO_PASSWORD, MINIO_USER

pytestmark = pytest.mark.integration


def minio_store(server, bucket: str, **kwargs) -> S3Store:
    return S3Store(parse_store_url(server.url(bucket)), MINIO_USER, MINIO_PASSWORD, **kwargs)


@pytest.fixture(params=["folder", "minio"])
def store(request, tmp_path, unique_bucket):
    if request.param == "folder":
        yield FolderStore(tmp_path / "objects")
    else:
        yield minio_store(request.getfixturevalue("minio_server"), unique_bucket)


def test_parse_store_url_forms():
    assert parse_store_url("file:///srv/objects").path == "/srv/objects"
    s3 = parse_store_url("s3://minio.local:9000/dossiers")
    assert (s3.endpoint, s3.bucket, s3.secure) == ("minio.local:9000", "dossiers", False)
    assert parse_store_url("s3s://s3.example.vn/dossiers").secure is True
    for bad in ("ftp://x/y", "s3://host", "s3://host/a/b", "file://"):
        with pytest.raises(ConfigError):
            parse_store_url(bad)


def test_put_stores_bytes_and_reads_them_back(store, tmp_path):
    data = "Đơn đề nghị cấp giấy chứng nhận".encode() * 100
    source = tmp_path / "doc.pdf"
    source.write_bytes(data)
    assert store.put("case/0001/original-x.pdf", source, sha256_bytes(data)) is True
    assert b"".join(store.read_chunks("case/0001/original-x.pdf")) == data
    assert store.download("case/0001/original-x.pdf", tmp_path / "out.pdf") == sha256_bytes(data)
    assert list(store.list_keys("case/")) == ["case/0001/original-x.pdf"]


def test_put_of_identical_bytes_is_a_no_op_and_different_bytes_are_refused(store):
    assert store.put("k/a.bin", b"one", sha256_bytes(b"one")) is True
    assert store.put("k/a.bin", b"one", sha256_bytes(b"one")) is False
    with pytest.raises(StorageError, match="refusing to overwrite"):
        store.put("k/a.bin", b"two", sha256_bytes(b"two"))
    assert b"".join(store.read_chunks("k/a.bin")) == b"one"


def test_upload_whose_bytes_do_not_match_the_ingest_hash_is_never_reported_stored(store):
    with pytest.raises(StorageError):
        store.put("k/wrong.bin", b"actual bytes", sha256_bytes(b"other bytes"))


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs", "a//b", "a/.hidden", "tên/có dấu", ""])
def test_unsafe_keys_are_refused(store, key):
    with pytest.raises(BadArgsError, match="unsafe object key"):
        store.put(key, b"x", sha256_bytes(b"x"))


def test_folder_objects_are_read_only_files(tmp_path):
    store = FolderStore(tmp_path)
    store.put("a/b.bin", b"x", sha256_bytes(b"x"))
    assert not os.access(tmp_path / "a" / "b.bin", os.W_OK) or os.geteuid() == 0
    assert (os.stat(tmp_path / "a" / "b.bin").st_mode & 0o777) == 0o444


def test_minio_server_checks_the_sha256_sent_with_the_upload(minio_server, unique_bucket):
    """The x-amz-checksum-sha256 header is verified by the server itself, not just by our read-back."""
    store = minio_store(minio_server, unique_bucket)
    wrong = base64.b64encode(bytes.fromhex(sha256_bytes(b"not these bytes"))).decode()
    with pytest.raises(S3Error) as err:
        store.client.put_object(unique_bucket, "raw.bin", io.BytesIO(b"payload"), 7,
                                metadata={"x-amz-checksum-sha256": wrong})
    assert "checksum" in (err.value.code + err.value.message).lower() or err.value.code == "BadDigest"
    assert not store.exists("raw.bin")


def test_multipart_upload_of_a_large_file_is_verified(minio_server, unique_bucket, tmp_path):
    store = minio_store(minio_server, unique_bucket, part_size=5 * 1024 * 1024)
    data = os.urandom(11 * 1024 * 1024)
    (tmp_path / "big.tif").write_bytes(data)
    assert store.put("big/original.tif", tmp_path / "big.tif", sha256_bytes(data))
    etag = store.client.stat_object(unique_bucket, "big/original.tif").etag
    assert etag.endswith("-3")  # three parts: it really went multipart
    assert store.sha256("big/original.tif") == sha256_bytes(data)


def test_user_metadata_keeps_only_ascii_values(minio_server, unique_bucket):
    store = minio_store(minio_server, unique_bucket)
    store.put("m/x.bin", b"x", sha256_bytes(b"x"),
              metadata={"case-id": "000.00.31.H56-241015-0027", "title": "Giấy chứng nhận"})
    meta = store.client.stat_object(unique_bucket, "m/x.bin").metadata
    assert meta.get("x-amz-meta-case-id") == "000.00.31.H56-241015-0027"
    assert "x-amz-meta-title" not in meta


def test_locked_object_delete_and_overwrite_are_refused_by_the_server(minio_server, unique_bucket):
    """WORM: with object lock + default COMPLIANCE retention, MinIO itself refuses to destroy a version."""
    store = minio_store(minio_server, unique_bucket, worm_retention_days=1)
    store.put("worm/pdfa.pdf", b"%PDF-1.7 e-dossier", sha256_bytes(b"%PDF-1.7 e-dossier"))
    version = store.client.stat_object(unique_bucket, "worm/pdfa.pdf").version_id
    assert version
    with pytest.raises(S3Error) as err:
        store.client.remove_object(unique_bucket, "worm/pdfa.pdf", version_id=version)
    assert "WORM protected" in err.value.message or err.value.code == "AccessDenied"
    # A raw PUT to the same key only adds a version on top; the locked version stays byte-identical.
    store.client.put_object(unique_bucket, "worm/pdfa.pdf", io.BytesIO(b"forged"), 6)
    original = store.client.get_object(unique_bucket, "worm/pdfa.pdf", version_id=version)
    assert original.read() == b"%PDF-1.7 e-dossier"
    original.close()
    original.release_conn()
    # And our own store refuses to even try an overwrite.
    with pytest.raises(StorageError, match="refusing to overwrite"):
        store.put("worm/pdfa.pdf", b"other", sha256_bytes(b"other"))


def test_presigned_url_downloads_the_object(minio_server, unique_bucket):
    import urllib.request

    store = minio_store(minio_server, unique_bucket)
    store.put("p/x.pdf", b"pdf bytes", sha256_bytes(b"pdf bytes"))
    url = store.presigned_url("p/x.pdf", timedelta(minutes=5))
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"pdf bytes"


def test_folder_store_has_no_presigned_urls(tmp_path):
    with pytest.raises(BadArgsError, match="presigned URLs need an S3 store"):
        FolderStore(tmp_path).presigned_url("a", timedelta(minutes=1))


def test_storage_down_gives_bounded_retries_then_storage_error(tmp_path):
    """Nothing listens on the port: the store gives up after its retries with one clear error."""
    try:
        from tests.servers import free_port
    except ModuleNotFoundError:
        from servers import free_port
    location = parse_store_url(f"s3://127.0.0.1:{free_port()}/dossiers")
    with pytest.raises(StorageError, match=r"failed after 2 attempts"):
        S3Store(location, MINIO_USER, MINIO_PASSWORD, retries=2)


@pytest.mark.parametrize("status, transient", [(503, True), (500, True), (403, False), (400, False)])
def test_only_server_side_s3_errors_are_retried(status, transient):
    """A restarting MinIO answers 503 XMinioServerNotInitialized: wait; a WORM refusal (400/403): do not."""
    from urllib3 import HTTPResponse

    from storage.objects import _s3_transient

    error = S3Error(HTTPResponse(status=status), "Code", "message", "/b", "req", "host")
    assert _s3_transient(error) is transient


def test_a_broken_s3_stream_is_resumed_once_from_where_it_broke(minio_server, unique_bucket, monkeypatch):
    """review rev17cli M3: one reset connection ended a whole fixity audit (exit 10, nothing recorded)."""
    from urllib3.exceptions import ProtocolError

    store = minio_store(minio_server, unique_bucket)
    data = os.urandom(2_500_000)
    store.put("p/big.tif", data, sha256_bytes(data))
    real, breaks, offsets = store.client.get_object, [1], []

    class Breaking:
        def __init__(self, response):
            self.response = response

        def stream(self, size):
            for n, block in enumerate(self.response.stream(size)):
                if n == 1 and breaks[0]:
                    breaks[0] -= 1
                    raise ProtocolError("Connection broken: ConnectionResetError(104)")
                yield block

        def __getattr__(self, name):
            return getattr(self.response, name)

    def get_object(bucket, key, offset=0, **kwargs):
        offsets.append(offset)
        return Breaking(real(bucket, key, offset=offset, **kwargs))

    monkeypatch.setattr(store.client, "get_object", get_object)
    assert store.sha256("p/big.tif") == sha256_bytes(data)  # broken once, resumed at the first byte not given
    assert offsets == [0, 1 << 20]
    breaks[0] = 2
    with pytest.raises(StorageError, match="Connection broken"):  # broken again after its one resume
        store.sha256("p/big.tif")


def test_a_store_url_with_a_bad_port_is_a_config_error():
    """review rev17ops L6: urlsplit's ValueError was an internal error (exit 15)."""
    for bad in ("s3://minio.lan:90O0/bucket", "s3s://h:99999/b"):
        with pytest.raises(ConfigError, match="port"):
            parse_store_url(bad)


def test_probe_tells_a_store_that_answers_from_one_that_is_gone(store):
    """review r2cli N2: the fixity audit asks the store itself whether it is down, rather than guessing from
    how many objects it could not read."""
    store.put("p/a", b"a", sha256_bytes(b"a"))
    store.probe()
    if isinstance(store, FolderStore):
        import shutil

        shutil.rmtree(store.root)
    else:
        store.delete("p/a")
        store.client.remove_bucket(store.bucket)
    with pytest.raises(StorageError, match="cannot open object folder|is gone"):
        store.probe()


def test_killed_upload_parts_are_swept_through_a_symlinked_store_root_but_no_link_below_it(tmp_path):
    """review r2cli N3: the root was opened O_NOFOLLOW, so a store configured as ``objects -> /mnt/big/objects``
    never had a part removed, silently; a case folder below the root that is a symlink is still not entered."""
    real, elsewhere = tmp_path / "real", tmp_path / "elsewhere"
    FolderStore(real)
    elsewhere.mkdir()
    (real / "C").mkdir()
    parts = [real / "C" / ".original-x.tif.abcd.part", elsewhere / ".original-y.tif.abcd.part"]
    for part in parts:
        part.write_bytes(b"x")
        os.utime(part, (1, 1))
    (real / "D").symlink_to(elsewhere)
    (tmp_path / "link").symlink_to(real)
    store = FolderStore(tmp_path / "link")
    assert store.sweep_parts("D/", timedelta(minutes=10)) == [] and parts[1].exists()
    assert store.sweep_parts("C/", timedelta(minutes=10)) == ["C/.original-x.tif.abcd.part"]
    assert not parts[0].exists() and parts[1].exists()
    parts[0].write_bytes(b"x")
    os.utime(parts[0], (1, 1))
    assert store.sweep_parts("", timedelta(minutes=10)) == ["C/.original-x.tif.abcd.part"] and parts[1].exists()
