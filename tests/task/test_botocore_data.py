"""The slim copy of botocore's data: what the job's client needs, and nothing stale."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING, cast

import botocore
import botocore.session
import pytest

from task import botocore_data
from task.botocore_data import S3_OPERATIONS, build, ca_folder_for, default_folder, slim_loader
from task.exit_codes import ExitCode
from task.frame import run
from task.http_ranges import Endpoint
from task.processor import process
from tests.fakes.certificates import server_context
from tests.task.conftest import read_result

if TYPE_CHECKING:
    from collections.abc import Callable

    from botocore.loaders import Loader
    from mypy_boto3_s3 import S3Client

    from task.settings import Settings


@pytest.fixture(scope="module")
def slim_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("slim") / f"botocore-{botocore.__version__}")


def session_with(loader: Loader) -> botocore.session.Session:
    session = botocore.session.get_session()
    session.register_component("data_loader", loader)
    return session


def test_the_slim_s3_model_has_only_the_operations_the_job_and_botocore_call(
    slim_folder: Path,
) -> None:
    loader = slim_loader(slim_folder)
    assert loader is not None
    model = loader.load_service_model("s3", "service-2")
    assert sorted(model["operations"]) == sorted(S3_OPERATIONS)
    full = botocore.loaders.Loader().load_service_model("s3", "service-2")
    # Each operation and every shape it uses, exactly as botocore ships them.
    assert all(model["operations"][name] == full["operations"][name] for name in S3_OPERATIONS)
    assert all(full["shapes"][name] == shape for name, shape in model["shapes"].items())
    assert len(model["shapes"]) < len(full["shapes"]) / 4


def test_a_client_on_the_slim_data_reads_and_writes_as_the_job_does(
    slim_folder: Path, s3: S3Client, bucket: str, settings_for: Callable[..., Settings]
) -> None:
    loader = slim_loader(slim_folder)
    assert loader is not None
    client = cast("S3Client", session_with(loader).create_client("s3"))
    data = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="in/data.bin", Body=data)
    assert run(settings_for(bucket, "in/data.bin"), process, client=client) == ExitCode.OK
    assert read_result(s3, bucket, "in/data.bin")["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("service", ["sts", "sso", "sso-oidc"])
def test_the_services_credential_providers_call_can_still_be_made_clients_of(
    slim_folder: Path, service: str, fake_aws_credentials: None
) -> None:
    loader = slim_loader(slim_folder)
    assert loader is not None
    client = session_with(loader).create_client(service, region_name="eu-west-1")
    assert client.meta.service_model.operation_names  # the whole model, not a cut-down one


def test_without_a_copy_for_the_installed_botocore_the_full_data_is_used(
    slim_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert slim_loader(slim_folder.parent / "botocore-0.0.1") is None
    # The default place is named after the running botocore: an upgrade never meets a stale copy.
    assert default_folder().name == f"botocore-{botocore.__version__}"
    assert default_folder("1.2.3") != default_folder()
    monkeypatch.setattr(botocore_data, "default_folder", lambda: slim_folder)
    assert slim_loader() is not None


def test_rebuilding_replaces_the_copy_whole(slim_folder: Path, tmp_path: Path) -> None:
    folder = build(tmp_path / "copy")
    (folder / "stray.json").write_text("{}")
    build(folder)
    assert not (folder / "stray.json").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in slim_folder.iterdir())


def test_the_ca_bundle_is_hashed_so_tls_reads_only_the_root_a_handshake_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_tls, certificate = server_context(tmp_path)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(certificate.read_bytes())
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))  # what botocore would verify with
    folder = build(tmp_path / "copy")
    ca = ca_folder_for(str(bundle), folder)
    assert ca is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(capath=str(ca))
    assert context.get_ca_certs() == []  # nothing read up front
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            connection, _ = listener.accept()
            with server_tls.wrap_socket(connection, server_side=True):
                pass

        thread = threading.Thread(target=serve)
        thread.start()
        port = listener.getsockname()[1]
        Endpoint("127.0.0.1", port, f"127.0.0.1:{port}", context).connect(timeout=5).close()
        thread.join()
    assert len(context.get_ca_certs()) == 1  # the one root the handshake needed


def test_a_changed_bundle_is_not_read_through_a_stale_hashed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tls, certificate = server_context(tmp_path)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(certificate.read_bytes())
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    folder = build(tmp_path / "copy")
    bundle.write_bytes(certificate.read_bytes() + b"\n")
    assert ca_folder_for(str(bundle), folder) is None
