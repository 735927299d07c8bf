"""One storage API over local paths / ``file://`` URIs and ``s3://`` URIs.

S3 goes through the ``minio`` client. Endpoint and credentials come only from the environment:

* ``S3_ENDPOINT_URL`` (or ``MLFLOW_S3_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL``), e.g. ``http://minio:9000``
* ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or ``MINIO_ACCESS_KEY`` / ``MINIO_SECRET_KEY``)
* ``AWS_REGION`` (optional)

Writes are atomic: a local file is written to a temporary name in the same directory and renamed;
an S3 object only becomes visible once ``put_object`` completes, so no reader ever sees a partial
object under its final name.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse


class StorageError(RuntimeError):
    pass


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def parse_s3(uri: str) -> S3Location:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"not an s3:// URI with a bucket: {uri!r}")
    return S3Location(parsed.netloc, parsed.path.lstrip("/"))


def local_path(uri: str | os.PathLike) -> Path:
    """A plain path or ``file://`` URI as a Path (``s3://`` is refused)."""
    uri = str(uri)
    if is_s3(uri):
        raise StorageError(f"{uri} is not a local path")
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    return Path(uri)


def join(base: str, *parts: str) -> str:
    base = str(base)
    if is_s3(base) or base.startswith("file://"):
        out = base.rstrip("/")
        for p in parts:
            out += "/" + str(p).strip("/")
        return out
    return str(Path(base, *parts))


def _s3_endpoint() -> str:
    for var in ("S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    raise StorageError(
        "s3:// URI used but no endpoint set: export S3_ENDPOINT_URL (or MLFLOW_S3_ENDPOINT_URL / "
        "AWS_ENDPOINT_URL), e.g. http://minio.coderforge:9000"
    )


@lru_cache(maxsize=8)
def _client(endpoint: str, access: str | None, secret: str | None, region: str | None):
    from minio import Minio

    parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    return Minio(
        parsed.netloc,
        access_key=access,
        secret_key=secret,
        secure=parsed.scheme == "https",
        region=region,
    )


def s3_settings() -> tuple[str, str, str, str | None]:
    """(endpoint URL, access key, secret key, region) from the environment, for any S3 client we build."""
    access = os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("MINIO_ACCESS_KEY")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or os.environ.get("MINIO_SECRET_KEY")
    if not access or not secret:
        raise StorageError("s3:// URI used but AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set")
    return _s3_endpoint(), access, secret, os.environ.get("AWS_REGION")


def s3_client():
    """A MinIO client built from the environment (cached per endpoint and credentials)."""
    return _client(*s3_settings())


def ensure_bucket(uri: str) -> None:
    loc = parse_s3(uri)
    client = s3_client()
    if not client.bucket_exists(loc.bucket):
        client.make_bucket(loc.bucket)


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically."""
    if is_s3(uri):
        loc = parse_s3(uri)
        s3_client().put_object(loc.bucket, loc.key, io.BytesIO(data), len(data))
        return
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        loc = parse_s3(uri)
        resp = s3_client().get_object(loc.bucket, loc.key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()
    return local_path(uri).read_bytes()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def exists(uri: str) -> bool:
    if is_s3(uri):
        from minio.error import S3Error

        loc = parse_s3(uri)
        try:
            s3_client().stat_object(loc.bucket, loc.key)
            return True
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                return False
            raise
    return local_path(uri).exists()


def list_uris(prefix: str, suffix: str = "") -> list[str]:
    """All objects/files under ``prefix`` (recursively) whose name ends with ``suffix``, sorted.

    Temporary files of in-flight atomic writes (``.name.*.tmp``) are never listed.
    """
    if is_s3(prefix):
        loc = parse_s3(prefix)
        key_prefix = loc.key.rstrip("/") + "/" if loc.key else ""
        out = [
            f"s3://{loc.bucket}/{obj.object_name}"
            for obj in s3_client().list_objects(loc.bucket, prefix=key_prefix, recursive=True)
            if obj.object_name.endswith(suffix)
        ]
        return sorted(out)
    root = local_path(prefix)
    if not root.exists():
        return []
    if root.is_file():
        return [str(root)] if str(root).endswith(suffix) else []
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                continue
            if name.endswith(suffix):
                out.append(os.path.join(dirpath, name))
    return sorted(out)


def delete_prefix(prefix: str) -> int:
    """Remove everything under ``prefix``; returns the number of objects/files removed."""
    if is_s3(prefix):
        uris = list_uris(prefix)
        client = s3_client()
        for uri in uris:
            loc = parse_s3(uri)
            client.remove_object(loc.bucket, loc.key)
        return len(uris)
    root = local_path(prefix)
    if not root.exists():
        return 0
    n = len(list_uris(prefix))
    shutil.rmtree(root) if root.is_dir() else root.unlink()
    return n


def upload_dir(local_dir: str | os.PathLike, uri: str) -> list[str]:
    """Copy a local directory tree to ``uri`` (local or S3), file by file, each write atomic."""
    local_dir = Path(local_dir)
    written = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(local_dir).as_posix()
        dest = join(uri, rel)
        if is_s3(uri):
            loc = parse_s3(dest)
            s3_client().fput_object(loc.bucket, loc.key, str(path))
        else:
            write_bytes(dest, path.read_bytes())
        written.append(dest)
    return written


def download_dir(uri: str, local_dir: str | os.PathLike) -> Path:
    """Copy everything under ``uri`` into ``local_dir`` (keeps relative paths)."""
    local_dir = Path(local_dir)
    base = uri.rstrip("/")
    for src in list_uris(uri):
        rel = src[len(base):].lstrip("/") if is_s3(uri) else os.path.relpath(src, local_path(uri))
        dest = local_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(read_bytes(src))
    return local_dir
