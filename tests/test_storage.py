import os

import pytest

from coderforge import storage


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_env") + "/prefix"


def test_write_read_list_delete(base):
    storage.write_bytes(storage.join(base, "a/one.bin"), b"\x00\x01")
    storage.write_text(storage.join(base, "a/two.txt"), "héllo")
    storage.write_text(storage.join(base, "b/three.txt"), "x")
    assert storage.read_bytes(storage.join(base, "a/one.bin")) == b"\x00\x01"
    assert storage.read_text(storage.join(base, "a/two.txt")) == "héllo"
    assert storage.exists(storage.join(base, "a/two.txt"))
    assert not storage.exists(storage.join(base, "a/missing.txt"))
    listed = storage.list_uris(storage.join(base, "a"))
    assert [u.rsplit("/", 1)[-1] for u in listed] == ["one.bin", "two.txt"]
    assert len(storage.list_uris(base, ".txt")) == 2
    assert storage.delete_prefix(storage.join(base, "a")) == 2
    assert storage.list_uris(storage.join(base, "a")) == []
    assert len(storage.list_uris(base)) == 1


def test_upload_download_dir(base, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "x.txt").write_text("1")
    (src / "sub" / "y.txt").write_text("2")
    storage.upload_dir(src, storage.join(base, "tree"))
    out = storage.download_dir(storage.join(base, "tree"), tmp_path / "dst")
    assert (out / "x.txt").read_text() == "1" and (out / "sub" / "y.txt").read_text() == "2"


def test_local_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    storage.write_text(str(target), "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        storage.write_text(str(target), "new content")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind


def test_file_uri_and_errors(tmp_path, monkeypatch):
    storage.write_text(f"file://{tmp_path}/z.txt", "z")
    assert (tmp_path / "z.txt").read_text() == "z"
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(storage.StorageError, match="S3_ENDPOINT_URL"):
        storage.read_bytes("s3://bucket/key")
    with pytest.raises(storage.StorageError):
        storage.parse_s3("s3:///nobucket")
