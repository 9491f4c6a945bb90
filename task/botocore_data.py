"""A slim copy of botocore's data for the job's own S3 client, built once with the image.

Making an S3 client costs about 0.08 CPU-s with botocore's full data, most of it reading
data the job never uses: endpoints.json (1.2 MB, every service), S3's whole model (100+
operations, 700+ shapes), and listing 400+ service folders twice to learn that S3 exists.
Every task pays it before its first byte, and a quarter-vCPU task pays it four times over in
wall time. With this copy, client creation costs about 0.02 CPU-s.

The copy is botocore's own data, cut down, never edited:

- S3's model with only the operations the job calls (HeadObject, GetObject, PutObject) and
  those botocore itself calls on an S3 client (HeadBucket to follow a bucket to its region,
  CreateSession for S3 Express), each with every shape it uses; S3's endpoint rules whole;
- the models of the services botocore's credential providers call (STS for assumed roles and
  web identity, SSO and SSO OIDC), whole;
- endpoints.json with only those services, and the small shared files whole;
- the CA bundle botocore verifies S3 with (its own cacert.pem in the image: 126
  certificates, ~22 ms of CPU to load), one certificate per file in OpenSSL's hashed form,
  so the direct reads' TLS loads only the root a handshake needs (`ca_folder_for`). The
  same certificates: it is used only when the bundle botocore resolves at run time has the
  same SHA-256 as the one it was cut from.

It lives in a folder named after the botocore version it was cut from, so a botocore upgrade
can never meet a stale copy: the job then finds no folder and uses botocore's full data (the
same behaviour, at the old cost). Only the job's own client uses it; a processor's clients
load botocore's data as usual.

`python -m task.botocore_data` builds it (task/Dockerfile does, as root, at build time).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import botocore
from botocore.exceptions import DataNotFoundError
from botocore.httpsession import get_cert_path
from botocore.loaders import Loader

S3_API_VERSION = "2006-03-01"
# What the job calls, and what botocore calls on an S3 client by itself.
S3_OPERATIONS = ("HeadObject", "GetObject", "PutObject", "HeadBucket", "CreateSession")
# The services botocore's credential providers make clients for, copied whole.
CREDENTIAL_SERVICES = ("sts", "sso", "sso-oidc")
SHARED_FILES = ("partitions", "sdk-default-configuration", "_retry")
# Files of a service's folder that a client loads when it is created.
SERVICE_FILES = ("service-2", "service-2.sdk-extras", "endpoint-rule-set-1")
CA_FOLDER = "ca"  # inside the copy: the CA bundle, hashed
CA_SOURCE = "source.json"  # which bundle, by SHA-256
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def default_folder(botocore_version: str | None = None) -> Path:
    """Where the copy for this botocore lives: beside the interpreter's installed packages."""
    version = botocore_version or botocore.__version__
    return Path(sys.prefix) / "share" / "s3-fargate-jobs" / f"botocore-{version}"


def slim_loader(folder: Path | None = None) -> Loader | None:
    """A loader reading only the slim copy, or None when there is none for this botocore."""
    folder = folder or default_folder()
    if not (folder / "endpoints.json").is_file():
        return None
    return Loader(extra_search_paths=[str(folder)], include_default_search_paths=False)


def ca_folder_for(bundle: str, folder: Path | None = None) -> Path | None:
    """The hashed copy of `bundle` (a CA file), if the slim copy holds one cut from it."""
    ca = (folder or default_folder()) / CA_FOLDER
    try:
        source = json.loads((ca / CA_SOURCE).read_text())
        digest = hashlib.sha256(Path(bundle).read_bytes()).hexdigest()
    except (OSError, ValueError):
        return None
    return ca if source.get("sha256") == digest else None


def build(folder: Path | None = None) -> Path:
    """Write the slim copy for the installed botocore into `folder`; return the folder.

    Written beside it first and moved into place, so a job never reads a half-built copy.
    """
    folder = folder or default_folder()
    folder.parent.mkdir(parents=True, exist_ok=True)
    full = Loader()  # botocore's own data, as a default client reads it
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".building-") as name:
        staging = Path(name) / folder.name
        staging.mkdir()
        prefixes = []
        for service in ("s3", *CREDENTIAL_SERVICES):
            version = full.determine_latest_version(service, "service-2")
            model = _raw(full, f"{service}/{version}/service-2")
            if service == "s3":
                version = S3_API_VERSION
                model = slim_model(model, S3_OPERATIONS)
            prefixes.append(model["metadata"]["endpointPrefix"])
            for kind in SERVICE_FILES:
                data = model if kind == "service-2" else _raw_or_none(full, service, version, kind)
                if data is not None:
                    _write(staging / service / version / f"{kind}.json", data)
        endpoints = _raw(full, "endpoints")
        for partition in endpoints["partitions"]:
            partition["services"] = {
                name: value for name, value in partition["services"].items() if name in prefixes
            }
        _write(staging / "endpoints.json", endpoints)
        for shared in SHARED_FILES:
            _write(staging / f"{shared}.json", _raw(full, shared))
        _hash_ca_bundle(_trusted_bundle(), staging / CA_FOLDER)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    return folder


def slim_model(model: dict[str, Any], operations: tuple[str, ...]) -> dict[str, Any]:
    """`model` with only `operations`, and every shape they reach (input, output, errors)."""
    shapes: dict[str, Any] = {}

    def reach(name: str) -> None:
        if name in shapes:
            return
        shape = model["shapes"][name]
        shapes[name] = shape
        for member in shape.get("members", {}).values():
            reach(member["shape"])
        for part in ("member", "key", "value"):
            if part in shape:
                reach(shape[part]["shape"])

    for operation in operations:
        definition = model["operations"][operation]
        for part in ("input", "output"):
            if part in definition:
                reach(definition[part]["shape"])
        for error in definition.get("errors", []):
            reach(error["shape"])
    return {
        **model,
        "operations": {name: model["operations"][name] for name in operations},
        "shapes": {name: model["shapes"][name] for name in model["shapes"] if name in shapes},
    }


def _trusted_bundle() -> str | None:
    """The CA file botocore verifies with here: AWS_CA_BUNDLE or ca_bundle, else its default."""
    import botocore.session  # noqa: PLC0415 - only the build needs a session

    configured = botocore.session.get_session().get_config_variable("ca_bundle")
    bundle = get_cert_path(configured or True)
    return bundle if bundle and Path(bundle).is_file() else None


def _hash_ca_bundle(bundle: str | None, ca: Path) -> None:
    """Each certificate of `bundle` in its own file, named as `openssl rehash` names them.

    Without the openssl command (or a bundle) there is no folder, and the direct reads load
    the bundle whole, as before.
    """
    openssl = shutil.which("openssl")
    if bundle is None or openssl is None:
        return
    data = Path(bundle).read_bytes()
    ca.mkdir()
    for number, certificate in enumerate(_PEM.findall(data.decode("ascii", "replace"))):
        (ca / f"{number:04d}.pem").write_text(certificate + "\n")
    subprocess.run([openssl, "rehash", str(ca)], check=True, capture_output=True)
    _write(ca / CA_SOURCE, {"bundle": bundle, "sha256": hashlib.sha256(data).hexdigest()})


def _raw(loader: Loader, name: str) -> Any:
    # load_data, not load_service_model: the extras stay separate files, merged at load time
    # exactly as botocore merges them for its full data.
    return loader.load_data(name)


def _raw_or_none(loader: Loader, service: str, version: str, kind: str) -> Any:
    try:
        return loader.load_data(f"{service}/{version}/{kind}")
    except DataNotFoundError:
        return None


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")))


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
