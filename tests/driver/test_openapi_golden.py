"""docs/openapi.json is the committed OpenAPI document of the driver's REST API."""

from __future__ import annotations

from pathlib import Path

from stddaq_driver.openapi import openapi_document, openapi_text

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == openapi_text(), (
        "docs/openapi.json is out of date: run "
        "`.venv/bin/python -m stddaq_driver.openapi docs/openapi.json` and commit it"
    )


def test_the_document_covers_the_control_api() -> None:
    document = openapi_document()
    paths = document["paths"]
    assert {"post"} <= set(paths["/api/v1/start"])
    assert {"get", "put", "patch"} <= set(paths["/api/v1/config"])
    assert "get" in paths["/api/v1/status"] and "post" in paths["/api/v1/stop"]
    start = document["components"]["schemas"]["StartRequest"]
    assert set(start["properties"]) == {
        "path", "file_prefix", "n_image", "writer_id", "compression", "start_id"
    }
    assert start["required"] == ["path"]
    states = document["components"]["schemas"]["DaqState"]["enum"]
    assert states[0] == "idle" and "waiting_for_first_image" in states
    assert paths["/api/v1/start"]["post"]["security"] == [{"HTTPBearer": []}]
