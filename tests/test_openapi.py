"""The OpenAPI contract: it lists every route, real responses fit it, and a bounded
schemathesis run finds no 5xx, no undocumented response, and no refused request
that changed the store."""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import TestResponse

from jobservice import create_app
from tests.conftest import close_app, drop_mariadb_database, mysql_url, new_mariadb_database
from tests.conftest import settings as app_settings
from tests.netproxy import TcpProxy
from tests.test_api import snapshot

TOKEN = "openapi-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_document_lists_exactly_the_routes_served(app: Flask) -> None:
    document = app.test_client().get("/scheduler/openapi.json").json
    assert document["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    served = {
        (openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        # The dashboard's pages are HTML for a browser, not the API (tests/test_ui.py).
        if rule.endpoint != "static" and not rule.endpoint.startswith("jobservice_ui.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == served


def test_bearer_scheme_is_declared_when_a_token_is_set(make_app: Any) -> None:
    document = (
        make_app(SCHEDULER_API_TOKEN=TOKEN).test_client().get("/scheduler/openapi.json", headers=AUTH).json
    )
    assert document["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "401" in document["paths"]["/scheduler/jobs"]["post"]["responses"]


class Contract:
    """Sends requests with the test client and checks each response against the document."""

    def __init__(self, app: Flask, headers: dict[str, str]) -> None:
        self.client: FlaskClient = app.test_client()
        self.headers = headers
        self.document = self.client.get("/scheduler/openapi.json", headers=headers).json
        self.schema = schemathesis.openapi.from_dict(self.document)
        self.checked: set[tuple[str, str, int]] = set()

    def __call__(self, method: str, template: str, path: str | None = None, **kwargs: Any) -> TestResponse:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response = self.client.open(path or template, method=method, headers=headers, **kwargs)
        documented = self.document["paths"][template][method.lower()]["responses"]
        assert str(response.status_code) in documented, (
            f"{method} {template}: {response.status_code} undocumented"
        )
        self.schema[template][method].validate_response(response)  # the body fits the documented schema
        self.checked.add((method, template, response.status_code))
        return response


def test_real_responses_fit_the_document(make_app: Any) -> None:
    check = Contract(make_app(SCHEDULER_API_TOKEN=TOKEN, SCHEDULER_AUTOSTART=True), AUTH)
    job = {"id": "doc", "func": "tests.jobfuncs:noop", "trigger": "cron", "minute": "*/5", "jitter": 3}
    assert check("POST", "/scheduler/jobs", json=job).status_code == 200
    assert check("POST", "/scheduler/jobs", json=job).status_code == 409
    assert check("POST", "/scheduler/jobs", json={**job, "id": "x", "func": "os:system"}).status_code == 400
    assert check("POST", "/scheduler/jobs", json={**job, "args": ["x" * 2_000_000]}).status_code == 413
    assert (
        check("POST", "/scheduler/jobs", json=job, headers={"Authorization": "Bearer no"}).status_code == 401
    )
    check("GET", "/scheduler/jobs")
    check("GET", "/scheduler/jobs", "/scheduler/jobs?limit=1&offset=0")
    assert check("GET", "/scheduler/jobs", "/scheduler/jobs?limit=x").status_code == 400
    check("GET", "/scheduler/jobs/{job_id}", "/scheduler/jobs/doc")
    assert check("GET", "/scheduler/jobs/{job_id}", "/scheduler/jobs/none").status_code == 404
    check("PATCH", "/scheduler/jobs/{job_id}", "/scheduler/jobs/doc", json={"name": "renamed"})
    assert (
        check("PATCH", "/scheduler/jobs/{job_id}", "/scheduler/jobs/doc", json={"id": "y"}).status_code == 400
    )
    check("POST", "/scheduler/jobs/{job_id}/pause", "/scheduler/jobs/doc/pause")
    check("POST", "/scheduler/jobs/{job_id}/resume", "/scheduler/jobs/doc/resume")
    check("POST", "/scheduler/jobs/{job_id}/run", "/scheduler/jobs/doc/run")
    check("GET", "/scheduler/jobs/{job_id}/runs", "/scheduler/jobs/doc/runs")
    check("GET", "/scheduler/runs", "/scheduler/runs?status=succeeded&limit=5")
    assert check("GET", "/scheduler/runs", "/scheduler/runs?since=never").status_code == 400
    exported = check("GET", "/scheduler/jobs/export")
    assert check("POST", "/scheduler/jobs/import", json=exported.json).status_code == 409
    upload = {"file": (io.BytesIO(exported.data), "jobs.json")}
    path = "/scheduler/jobs/import?replace=true"
    assert (
        check(
            "POST", "/scheduler/jobs/import", path, data=upload, content_type="multipart/form-data"
        ).status_code
        == 200
    )
    for action in ("pause", "resume"):
        check("POST", f"/scheduler/{action}")
    assert check("POST", "/scheduler/start").status_code == 400
    check("POST", "/scheduler/shutdown", json={"wait": True})
    assert check("POST", "/scheduler/shutdown").status_code == 400
    check("POST", "/scheduler/start")
    check("GET", "/scheduler")
    check("GET", "/scheduler/openapi.json")
    check("GET", "/health")
    check("GET", "/metrics")
    assert check("DELETE", "/scheduler/jobs/{job_id}", "/scheduler/jobs/doc").status_code == 204
    assert len(check.checked) >= 30


def test_responses_while_the_database_is_down_fit_the_document(proxied_app: tuple[Flask, TcpProxy]) -> None:
    app, proxy = proxied_app
    check = Contract(app, {})
    proxy.cut()
    assert check("GET", "/scheduler/jobs").status_code == 503
    assert (
        check("POST", "/scheduler/jobs", json={"id": "x", "func": "tests.jobfuncs:noop"}).status_code == 503
    )
    assert check("GET", "/scheduler").status_code == 503
    assert check("GET", "/scheduler/runs").status_code == 503
    assert check("GET", "/health").status_code == 503


# Fuzzing ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def fuzz_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    if request.param == "sqlite":
        url, database = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/jobs.sqlite3", None
    else:
        request.getfixturevalue("mariadb_server")
        database = new_mariadb_database()
        url = mysql_url(database)
    app = create_app(app_settings(url))
    app.test_client().post(
        "/scheduler/jobs",
        json={"id": "existing", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1},
    )
    yield app
    close_app(app)
    if database:
        drop_mariadb_database(database)


#: Examples per operation and mode (valid and invalid input): bounded, deterministic.
EXAMPLES = 60


def test_fuzzed_requests_get_documented_answers_and_refusals_change_nothing(fuzz_app: Flask) -> None:
    """Schemathesis generates valid and invalid requests for every operation of the document."""
    schema = schemathesis.openapi.from_wsgi("/scheduler/openapi.json", fuzz_app)
    statuses: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def exercise(case: Any) -> None:
                before = snapshot(fuzz_app)
                response = case.call()
                statuses[(case.operation.label, response.status_code)] += 1
                case.validate_response(response, checks=CHECKS)
                if response.status_code >= 400:
                    assert snapshot(fuzz_app) == before, (
                        f"{case.operation.label} was refused but changed the store"
                    )

            try:
                exercise()
            except Unsatisfiable:
                pass  # nothing to make invalid in this operation (no parameters, no body)
    total = sum(statuses.values())
    print(
        f"\n[schemathesis] {total} requests over {len(schema)} paths; by status: {sorted(Counter(s for _, s in statuses.elements()).items())}"
    )
    assert total > 800 and not [s for _, s in statuses if s >= 500]
