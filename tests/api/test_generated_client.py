"""A client generated from the served /openapi.json works against Paydial unchanged.

openapi-python-client (https://github.com/openapi-generators/openapi-python-client) writes the
package into a temporary directory, in a network namespace of its own (`unshare --net`), which
proves it needs nothing but the document; the generated code then talks to the app over real HTTP.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from payments.attempts import pay
from payments.services import Services
from tests.api.test_contract import APPROVED


@pytest.fixture
def server_url(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def generate_client(document: dict[str, Any], where: Path) -> str:
    """Generate a client package from `document` with no network; returns its module name."""
    generator = shutil.which("openapi-python-client")
    unshare = shutil.which("unshare")
    assert generator is not None, "pip install -e '.[test]' installs openapi-python-client"
    assert unshare is not None, "util-linux's unshare cuts the generator off the network"
    package = f"paydial_client_{uuid.uuid4().hex[:8]}"
    (where / "openapi.json").write_text(json.dumps(document))
    (where / "config.yml").write_text(f"package_name_override: {package}\n")
    command = [generator, "generate", "--path", "openapi.json", "--config", "config.yml"]
    result = subprocess.run(
        [unshare, "--net", *command, "--meta", "none"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    return package


@pytest.fixture
def generated(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The generated package, made from the document the running app serves."""
    import httpx

    document = httpx.get(f"{server_url}/openapi.json").json()
    package = generate_client(document, tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module(package)
    for name in [name for name in sys.modules if name.startswith(package)]:
        del sys.modules[name]


def module(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def test_a_generated_client_creates_reads_and_cancels_a_session(
    generated: ModuleType, server_url: str, merchant: dict[str, str]
) -> None:
    models = module(generated, "models")
    sessions = "api.public_api_v_1"
    create = module(generated, f"{sessions}.create_session_v1_sessions_post")
    get = module(generated, f"{sessions}.get_session_v1_sessions_session_id_get")
    find = module(generated, f"{sessions}.find_session_v1_sessions_get")
    cancel = module(generated, f"{sessions}.cancel_session_v1_sessions_session_id_cancel_post")
    client = generated.AuthenticatedClient(
        base_url=server_url,
        token=merchant["test"].removeprefix("Bearer "),
        raise_on_unexpected_status=True,
    )
    with client as client:
        created = create.sync(
            client=client,
            body=models.SessionCreate(
                project="acme",
                caller="+14155552671",
                amount="150.00",
                mode=models.PaymentMode.CHARGE,
                gateway=models.Gateway.STRIPE,
                memory="VIP caller",
            ),
        )
        assert isinstance(created, models.SessionCreateResponse), created
        assert created.status.value == "pending" and len(created.access_code) == 6

        read = get.sync(created.session_id, client=client)
        assert isinstance(read, models.SessionGetResponse), read
        assert (read.status, read.currency, read.project_slug) == (
            models.Status.PENDING,
            "USD",
            "acme",
        )
        assert (read.amount, read.memory, read.language) == ("150.00", "VIP caller", "en-US")
        found = find.sync(client=client, caller="+14155552671")
        assert isinstance(found, models.SessionGetResponse)
        assert found.session_id == created.session_id  # both typed as UUIDs

        assert cancel.sync_detailed(created.session_id, client=client).status_code == 204
        again = cancel.sync(created.session_id, client=client)
        assert isinstance(again, models.Detail)  # the 409, typed as documented
        read = get.sync(created.session_id, client=client)
        assert (read.status, read.is_terminal) == (models.Status.CANCELLED, True)

        invalid = create.sync(
            client=client,
            body=models.SessionCreate(
                project="acme",
                caller="555",
                amount=150,
                mode=models.PaymentMode.CHARGE,
                gateway=models.Gateway.STRIPE,
            ),
        )
        assert isinstance(invalid, models.HTTPValidationError)
        assert [error.loc for error in invalid.detail] == [["body", "caller"]]


def test_a_generated_client_reads_a_paid_session_with_its_typed_processor(
    generated: ModuleType, server_url: str, merchant: dict[str, str], services: Services
) -> None:
    models = module(generated, "models")
    widget = module(generated, "api.widget_sessions.create_widget_session_v1_widget_sessions_post")
    get = module(generated, "api.public_api_v_1.get_session_v1_sessions_session_id_get")
    client = generated.AuthenticatedClient(
        base_url=server_url,
        token=merchant["test"].removeprefix("Bearer "),
        raise_on_unexpected_status=True,
    )
    with client as client:
        created = widget.sync(
            client=client,
            body=models.CreateWidgetSession(
                project="acme",
                amount_cents=1999,
                gateway=models.CreateWidgetSessionGateway.AUTHORIZENET,
            ),
        )
        assert isinstance(created, models.WidgetSessionCreated), created
        pay(services, str(created.session_id), APPROVED)
        read = get.sync(created.session_id, client=client)
    assert isinstance(read, models.SessionGetResponse), read
    assert read.status == models.Status.PAYMENT_SUCCESS
    assert isinstance(read.processor, models.AuthorizenetProcessor)
    assert (read.processor.card_brand, read.processor.card_last4) == ("visa", "4242")
    assert read.processor.authnet_transaction_id
    assert read.processor.authnet_cavv_result_code is None  # the simulator gives none
