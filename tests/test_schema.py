"""The OpenAPI schema against the live API: schemathesis with every check (--checks all) on a real
server, with an API key, a bounded number of examples. Zero server errors, zero schema violations.

The run is reproducible: SCHEMATHESIS_SEED picks the seed (a fixed one by default, so CI does not
flake); set it to "random" to explore, e.g. SCHEMATHESIS_SEED=random pytest tests/test_schema.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api_assets import make_assets

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "schemathesis" / "schemathesis.toml"
DEFAULT_SEED = "20261130"


def test_openapi_documents_bounds_and_status_codes(db, users, api_key_for):
    schema = api_key_for(users[0]).get("/api/v1/schema/?format=json").json()
    create = schema["paths"]["/api/v1/requests/"]["post"]
    assert {"202", "400", "401", "403", "413", "415", "422", "429", "503"} <= set(create["responses"])
    body = schema["components"]["schemas"]["RequestRequest"]["properties"]
    assert (body["num_images"]["minimum"], body["num_images"]["maximum"]) == (1, 8)
    assert body["seed"]["minimum"] == 0 and body["seed"]["maximum"] == 2**63 - 1
    assert body["caption"]["maxLength"] == 1000 and "pattern" in body["caption"]
    assert set(schema["paths"]["/api/v1/assets/{id}/file/"]["get"]["responses"]) >= {"200", "304", "404", "410", "412"}
    assert "ApiKey" in schema["components"]["securitySchemes"]
    # What a verified file is, apart from its asset's state (a copy of an approved asset is not it).
    report = schema["components"]["schemas"]["VerificationReport"]
    file_enum = next(s for s in schema["components"]["schemas"].values() if "derived copy" in s.get("enum", []))
    assert set(file_enum["enum"]) == {"approved file", "derived copy", "not approved", "unconfirmed", "not ours"}
    assert {"file", "file_message"} <= set(report["required"])
    assert "not this file's" in report["properties"]["asset"]["description"]


def test_swagger_ui_is_served_without_a_cdn(db, users, client):
    client.force_login(users[0])
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    # Every script and style sheet from this server: no absolute URL, no protocol-relative one. (Not
    # "cdn" anywhere in the page: the CSRF token is random letters and once held "cdn".)
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
    assert "swagger-ui" in html and sources and all(s.startswith("/") and not s.startswith("//") for s in sources), sources
    assert "https://" not in html and "http://" not in html


@pytest.mark.slow
def test_schemathesis_all_checks_against_the_live_api(transactional_db, live_server, active_model, no_broker, users,
                                                      api_key_for, settings, tmp_path):
    # Generous limits: a 429 is documented, but would leave the other operations untested.
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {}}
    editor, reviewer = users
    from stackgan_django import services

    approved = make_assets(editor, 1)[0]
    services.approve_asset(approved.pk, reviewer)
    client = api_key_for(editor)
    seed = os.environ.get("SCHEMATHESIS_SEED", DEFAULT_SEED)
    command = [str(Path(sys.executable).with_name("st")), "--config-file", str(CONFIG), "run",
               f"{live_server.url}/api/v1/schema/?format=json", "--checks", "all",
               "-H", f"Authorization: Api-Key {client.secret}", "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", "10"),
               "--workers", "1", "--report-dir", str(tmp_path), "--no-color"]
    if seed != "random":
        command += ["--seed", seed]
    done = subprocess.run(command, capture_output=True, text=True, timeout=420, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]
    assert "No issues found" in output or " passed" in output, output[-3000:]
