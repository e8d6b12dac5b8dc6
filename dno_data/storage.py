"""Locations: a local path or an object-storage URL (`s3://bucket/key`, `gs://`, `az://`), and their filesystems.

    is_url("s3://bucket/runs/r1")          # True: a location on object storage
    join("s3://bucket/runs/r1", "iter-01")  # "s3://bucket/runs/r1/iter-01" (a local path: a Path)
    filesystem("s3://bucket/x")             # the fsspec filesystem (s3fs), made once per scheme

A stage works on local files; dno_data.staging gives it local copies of its URLs (the staging
mirror, `local_of`) and uploads what it wrote. `url_of` and `public` map a staging path back to
the URL it stands for, so a lineage, a column or a message names `s3://...`, never this machine's
cache folder.

Endpoint and credentials come from the environment the storage library reads (for S3, botocore's:
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...); a URL carrying
user:password is refused. Only the standard library is imported here: the packages of a scheme
(s3fs, gcsfs, adlfs) load when a URL of that scheme is first used, and their absence is one error
line naming the pip extra.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import DnoError, first_line

# scheme -> the fsspec package that reads it
SCHEMES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
           "abfss": "adlfs"}
EXTRA = "ray"  # pip install 'dno-data[ray]': Ray Data and the S3 packages
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def scheme_of(x: Any) -> str | None:
    """The scheme of a `scheme://...` string, lower case; None for anything else (a Path is never a URL).

    >>> scheme_of("s3://bucket/key"), scheme_of("runs/r1"), scheme_of("C:/data")
    ('s3', None, None)
    """
    if not isinstance(x, str):
        return None
    m = _SCHEME.match(x)
    return m.group(1).lower() if m else None


def is_url(x: Any) -> bool:
    """A `scheme://...` string (what a path option keeps as it is instead of making it a Path)."""
    return scheme_of(x) is not None


def is_storage_url(x: Any) -> bool:
    """A URL of object storage dno reads and writes (s3://, gs://, az://, ...).

    >>> is_storage_url("s3://b/k"), is_storage_url("http://127.0.0.1:8000/v1")
    (True, False)
    """
    return scheme_of(x) in SCHEMES


def split(url: str) -> tuple[str, str, str]:
    """(scheme, bucket, key) of a storage URL; DnoError for a URL dno does not read.

    >>> split("s3://bucket/runs/r1/")
    ('s3', 'bucket', 'runs/r1')
    """
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise DnoError(f"{url}: not a location dno reads; pass a local path or an object-storage URL "
                       f"({', '.join(s + '://' for s in ('s3', 'gs', 'az'))})")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise DnoError(f"{scheme}://***@{parts.hostname or ''}{parts.path}: credentials in a URL are refused (they "
                       "would reach lineage and logs); set them in the environment (AWS_ACCESS_KEY_ID, ...)")
    bucket, key = parts.netloc, parts.path.strip("/")
    if not bucket:
        raise DnoError(f"{url}: no bucket; write {scheme}://BUCKET/KEY")
    if parts.query or parts.fragment:
        raise DnoError(f"{url}: a query or fragment is not part of a location; write {scheme}://BUCKET/KEY")
    return scheme, bucket, key


def join(base: Any, *parts: str) -> Any:
    """`base/part/...`: a URL string for a URL, else a Path.

    >>> join("s3://b/runs/r1/", "iter-01", "samples.parquet")
    's3://b/runs/r1/iter-01/samples.parquet'
    """
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *(str(p).strip("/") for p in parts)])
    return Path(base).joinpath(*parts)


def parent(url: str) -> str:
    """The URL of the folder holding `url`.

    >>> parent("s3://b/runs/r1/prompts.parquet")
    's3://b/runs/r1'
    """
    return url.rstrip("/").rsplit("/", 1)[0]


def name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------- filesystems

_FS: dict[str, Any] = {}


def filesystem(url: str):
    """The fsspec filesystem of `url`'s scheme (listings never cached: another machine may write meanwhile)."""
    scheme = split(url)[0]
    if scheme not in _FS:
        package = SCHEMES[scheme]
        try:
            import fsspec

            __import__(package)
        except ImportError:
            if package == "s3fs":
                raise DnoError(f"{url}: object storage needs the s3fs package, which is not installed; install it "
                               f"with: pip install 'dno-data[{EXTRA}]'") from None
            raise DnoError(f"{url}: object storage needs the {package} package, which is not installed; install it "
                           f"with: pip install {package}") from None
        _FS[scheme] = fsspec.filesystem(scheme, use_listings_cache=False, skip_instance_cache=True)
    return _FS[scheme]


def path_in(url: str) -> str:
    """`bucket/key`: how fsspec names the object of `url`."""
    _, bucket, key = split(url)
    return f"{bucket}/{key}" if key else bucket


def exists(location: Any) -> bool:
    """Whether something (a file, an object, a folder or prefix) is at `location`."""
    if not is_url(location):
        return Path(location).exists()
    try:
        return filesystem(location).exists(path_in(location))
    except DnoError:
        raise
    except Exception as e:
        raise storage_error(location, e) from None


def storage_error(url: str, e: BaseException, doing: str = "") -> DnoError:
    """One line for a failed storage call: what failed and what to do, never a credential."""
    from .redact import redact_text as redact_url

    text = first_line(e, 300)
    kind = type(e).__name__
    what = f" ({doing})" if doing else ""
    if "bucket does not exist" in text or "NoSuchBucket" in text:
        _, bucket, _ = split(url)
        return DnoError(f"{url}: no such bucket {bucket!r}{what}; create it, or check the URL and AWS_ENDPOINT_URL")
    if kind in ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError") or "credentials" in text.lower():
        return DnoError(f"{url}: no credentials for object storage{what}; set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment")
    if isinstance(e, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return DnoError(f"{url}: access denied{what} ({redact_url(text)}); check the credentials' permissions")
    if isinstance(e, FileNotFoundError):
        return DnoError(f"{url}: no such object{what}")
    return DnoError(f"{url}: object storage failed{what}: {kind}: {redact_url(text)}")


# ---------------------------------------------------------------- the staging mirror's paths

def cache_root() -> Path:
    """dno's cache folder: $DNO_CACHE (a folder; the folder of a judge.sqlite file it names) or ~/.cache/dno."""
    value = os.environ.get("DNO_CACHE")
    if not value:
        return Path.home() / ".cache" / "dno"
    p = Path(value).expanduser()
    return p.parent if p.suffix == ".sqlite" else p


def objects_root() -> Path:
    """Where the staging mirror keeps local copies: objects/<scheme>/<bucket>/<key>."""
    return cache_root().absolute() / "objects"


def records_root() -> Path:
    """What the mirror knows of each copy (the object's ETag and size, the local file's stat)."""
    return cache_root().absolute() / "object-records"


def local_of(url: str) -> Path:
    """The staging path of `url`: objects/<scheme>/<bucket>/<key>."""
    scheme, bucket, key = split(url)
    return objects_root().joinpath(scheme, bucket, *[k for k in key.split("/") if k])


def record_of(url: str) -> Path:
    """Where the mirror records what it knows of the copy of `url`."""
    scheme, bucket, key = split(url)
    path = records_root().joinpath(scheme, bucket, *[k for k in key.split("/") if k])
    return path.with_name(path.name + ".~record")


def _roots() -> list[Path]:
    """The mirror's root as given and as resolved (a message may name either)."""
    root = objects_root()
    resolved = root.resolve()
    return [root] if resolved == root else [root, resolved]


def url_of(path: Any) -> str | None:
    """The URL a staging path stands for, or None for any other path."""
    if path is None or is_url(path):
        return None
    path = Path(path).absolute()
    for root in _roots():
        try:
            rel = path.relative_to(root)
            break
        except ValueError:
            continue
    else:
        return None
    parts = rel.parts
    if len(parts) < 2 or parts[0] not in SCHEMES:
        return None
    return f"{parts[0]}://" + "/".join(parts[1:])


def public(value: Any) -> Any:
    """`value` with every staging path in it (a Path, a string, inside lists and mappings) replaced by its URL."""
    if isinstance(value, Path):
        url = url_of(value)
        return url if url is not None else value
    if isinstance(value, str):
        for root in _roots():
            if str(root) in value:
                value = re.sub(re.escape(str(root)) + r"/(" + "|".join(SCHEMES) + r")/", r"\1://", value)
        return value
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(public(v) for v in value)
    return value
