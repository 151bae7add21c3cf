"""The dashboard without a browser: who may see and act, CSRF, the API's rules behind every
form, what each view lists, bounded SQL per page, the words of triggers, both languages.
The browser's part (live refresh, clicks, local times, screenshots) is tests/test_ui_browser.py.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask
from sqlalchemy import event, insert

import config
from jobservice import JobService, create_app
from jobservice.errors import ConfigError
from jobservice.runs import runs as runs_table
from jobservice.settings import read
from jobservice.ui import i18n, words
from tests.conftest import engine

TOKEN = "admin-token-0123456789abcdef"
READONLY = "viewer-token-0123456789abcdef"
SECRET = "a-secret-key-for-the-tests-only"
UI = "/scheduler/ui"
JOB = {"id": "nightly", "func": "tests.jobfuncs:noop", "trigger": "cron", "hour": 2, "minute": 30}
#: Every page, for job `nightly`.
VIEWS = [
    "", "/", "?show=paused", "?show=failing&sort=-next", "?q=noop&page=2", "/jobs/nightly",
    "/jobs/nightly?cursor=5", "/runs", "/runs?status=failed&job_id=nightly", "/cluster", "/add",
    "/jobs/nightly/edit",
]  # fmt: skip
#: Every action, for job `nightly`.
ACTIONS = [
    "/jobs/nightly/pause", "/jobs/nightly/resume", "/jobs/nightly/run", "/jobs/nightly/remove",
    "/cluster/pause", "/cluster/resume", "/add", "/jobs/nightly/edit",
]  # fmt: skip


@pytest.fixture
def ui_app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(SCHEDULER_API_TOKEN=TOKEN, SCHEDULER_UI_READONLY_TOKEN=READONLY, SECRET_KEY=SECRET)
    app.extensions["jobservice"].operations.add(JOB)
    return app


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def sign_in(client: Any, token: str = TOKEN) -> str:
    """Sign in through the form; the CSRF token of the session it made."""
    form = client.get(f"{UI}/sign-in")
    response = client.post(
        f"{UI}/sign-in", data={"csrf": csrf_of(form.text), "token": token, "next": f"{UI}/runs"}
    )
    assert response.status_code == 303, response.text
    assert response.headers["Location"] == f"{UI}/runs"
    return csrf_of(client.get(UI).text)


def job_state(app: Flask) -> Any:
    job = app.extensions["jobservice"].store.lookup_job("nightly")
    return None if job is None else job.next_run_time


def cluster_state(app: Flask) -> str:
    return app.extensions["jobservice"].cluster.state()


# Who may look and act ---------------------------------------------------------------


@pytest.mark.parametrize("path", VIEWS)
def test_an_unauthenticated_view_gets_the_sign_in_page_never_data(ui_app: Flask, path: str) -> None:
    client = ui_app.test_client()
    response = client.get(UI + path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith(f"{UI}/sign-in?next=")
    page = client.get(response.headers["Location"])
    assert page.status_code == 200 and 'name="token"' in page.text
    live = client.get(UI + path, headers={"X-Jobservice-Live": "1"})
    assert live.status_code == 401
    for answer in (response, page, live):  # the job's data: its function, its trigger, the counts
        assert not re.search(r"jobfuncs|02:30|data-job=|data-run=|of \d+", answer.text)


@pytest.mark.parametrize("path", ACTIONS)
def test_an_unauthenticated_action_gets_401_and_changes_nothing(ui_app: Flask, path: str) -> None:
    client = ui_app.test_client()
    before = job_state(ui_app)
    csrf = csrf_of(client.get(f"{UI}/sign-in").text)  # a session's CSRF token, not signed in
    form = {"csrf": csrf, "id": "other", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": "1"}
    response = client.post(UI + path, data=form)
    assert response.status_code == 401
    assert job_state(ui_app) == before and cluster_state(ui_app) == "running"
    assert ui_app.extensions["jobservice"].store.lookup_entry("other") is None


@pytest.mark.parametrize("path", VIEWS)
def test_every_view_answers_200_when_signed_in(ui_app: Flask, path: str) -> None:
    client = ui_app.test_client()
    sign_in(client)
    response = client.get(UI + path)
    assert response.status_code == 200, response.text[:1000]
    assert response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert response.headers["X-Frame-Options"] == "DENY"
    live = client.get(UI + path, headers={"X-Jobservice-Live": "1"})
    assert live.status_code == 200 and "<html" not in live.text


def test_the_session_cookie_is_signed_http_only_strict_and_secure_over_https(ui_app: Flask) -> None:
    client = ui_app.test_client()
    form = client.get(f"{UI}/sign-in", base_url="https://localhost")
    response = client.post(
        f"{UI}/sign-in",
        data={"csrf": csrf_of(form.text), "token": TOKEN},
        base_url="https://localhost",
    )
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("jobservice_ui=")]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    assert f"Path={UI}" in cookie and TOKEN not in cookie
    plain = ui_app.test_client().get(f"{UI}/sign-in")
    assert "Secure" not in plain.headers["Set-Cookie"]


def test_the_token_never_appears_in_a_url_a_page_a_cookie_or_a_log(
    ui_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = ui_app.test_client()
    form = client.get(f"{UI}/sign-in")
    response = client.post(f"{UI}/sign-in", data={"csrf": csrf_of(form.text), "token": TOKEN})
    seen = [response.headers.get("Location", ""), *response.headers.getlist("Set-Cookie"), response.text]
    for path in VIEWS:
        page = client.get(UI + path)
        seen += [page.text, *page.headers.getlist("Set-Cookie")]
    wrong = client.post(f"{UI}/sign-in", data={"csrf": csrf_of(form.text), "token": TOKEN + "x"})
    seen += [wrong.text, caplog.text]
    assert not [text for text in seen if TOKEN in text or READONLY in text]


def test_a_wrong_token_is_refused_and_signs_nobody_in(ui_app: Flask) -> None:
    client = ui_app.test_client()
    csrf = csrf_of(client.get(f"{UI}/sign-in").text)
    for token in ("", "wrong", TOKEN[:-1], TOKEN + " "):
        response = client.post(f"{UI}/sign-in", data={"csrf": csrf, "token": token})
        assert response.status_code == 401 and "sign-in-error" in response.text
    assert client.get(f"{UI}/runs").status_code == 302


def test_sign_in_needs_the_forms_csrf_token(ui_app: Flask) -> None:
    client = ui_app.test_client()
    client.get(f"{UI}/sign-in")
    response = client.post(f"{UI}/sign-in", data={"token": TOKEN})
    assert response.status_code == 403
    assert client.get(f"{UI}/runs").status_code == 302


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/elsewhere", "/scheduler/jobs"]
)
def test_sign_in_never_sends_the_browser_outside_the_dashboard(ui_app: Flask, target: str) -> None:
    client = ui_app.test_client()
    csrf = csrf_of(client.get(f"{UI}/sign-in").text)
    response = client.post(f"{UI}/sign-in", data={"csrf": csrf, "token": TOKEN, "next": target})
    assert response.headers["Location"] == UI
    language = client.get(f"{UI}/language/zh-CN", query_string={"next": target})
    assert language.headers["Location"] == UI


def test_sign_out_ends_the_session(ui_app: Flask) -> None:
    client = ui_app.test_client()
    csrf = sign_in(client)
    assert client.post(f"{UI}/sign-out", data={"csrf": csrf}).status_code == 303
    assert client.get(f"{UI}/runs").status_code == 302


def test_a_changed_token_ends_the_sessions_it_granted(make_app: Callable[..., Flask]) -> None:
    first = make_app(SCHEDULER_API_TOKEN=TOKEN, SECRET_KEY=SECRET)
    client = first.test_client()
    sign_in(client)
    cookie = client.get_cookie("jobservice_ui", path=UI)
    assert cookie is not None
    rotated = make_app(SCHEDULER_API_TOKEN=TOKEN + "-rotated", SECRET_KEY=SECRET).test_client()
    rotated.set_cookie("jobservice_ui", cookie.value, path=UI)
    assert rotated.get(f"{UI}/runs").status_code == 302
    same = make_app(SCHEDULER_API_TOKEN=TOKEN, SECRET_KEY=SECRET).test_client()
    same.set_cookie("jobservice_ui", cookie.value, path=UI)
    assert same.get(f"{UI}/runs").status_code == 200  # another worker with the same settings


def test_the_api_never_accepts_the_dashboards_cookie(ui_app: Flask) -> None:
    client = ui_app.test_client()
    sign_in(client)
    assert client.get("/scheduler/jobs").status_code == 401
    assert client.post("/scheduler/jobs/nightly/pause").status_code == 401
    assert client.post("/scheduler/pause").status_code == 401
    assert job_state(ui_app) is not None and cluster_state(ui_app) == "running"


@pytest.mark.parametrize("path", ACTIONS)
def test_a_post_without_the_sessions_csrf_token_is_refused(ui_app: Flask, path: str) -> None:
    client = ui_app.test_client()
    sign_in(client)
    before = job_state(ui_app)
    for form in ({}, {"csrf": "guessed"}):
        response = client.post(UI + path, data={**form, "id": "other", "func": "tests.jobfuncs:noop"})
        assert response.status_code == 403
    assert job_state(ui_app) == before and cluster_state(ui_app) == "running"


@pytest.mark.parametrize("path", ACTIONS)
def test_the_read_only_token_sees_no_actions_and_gets_403_for_each(ui_app: Flask, path: str) -> None:
    client = ui_app.test_client()
    csrf = sign_in(client, READONLY)
    for view in ("", "/jobs/nightly", "/cluster"):
        html = client.get(UI + view).text
        assert "nightly" in html or view == "/cluster"
        assert not re.search(r'action="[^"]*/(pause|resume|run|remove)"', html)
        assert 'data-testid="add-job"' not in html and 'data-testid="edit"' not in html
    before = job_state(ui_app)
    form = {"csrf": csrf, "id": "other", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": "1"}
    assert client.post(UI + path, data=form).status_code == 403
    assert job_state(ui_app) == before and cluster_state(ui_app) == "running"
    assert ui_app.extensions["jobservice"].store.lookup_entry("other") is None


# Actions, with the API's rules ----------------------------------------------------------


def test_each_action_does_what_the_api_does_and_says_so(ui_app: Flask) -> None:
    client = ui_app.test_client()
    csrf = sign_in(client)
    api = {"Authorization": f"Bearer {TOKEN}"}
    page = f"{UI}/jobs/nightly"

    def act(path: str) -> str:
        response = client.post(UI + path, data={"csrf": csrf, "next": page})
        assert response.status_code == 303
        return client.get(response.headers["Location"]).text

    assert "Job nightly is paused." in act("/jobs/nightly/pause")
    assert client.get("/scheduler/jobs/nightly", headers=api).json["next_run_time"] is None
    assert "Job nightly is resumed." in act("/jobs/nightly/resume")
    assert client.get("/scheduler/jobs/nightly", headers=api).json["next_run_time"] is not None
    assert "A run of nightly is queued" in act("/jobs/nightly/run")
    assert [run["trigger"] for run in client.get("/scheduler/jobs/nightly/runs", headers=api).json] == [
        "manual"
    ]
    assert "The cluster is paused" in act("/cluster/pause")
    assert client.get("/scheduler", headers=api).json["state"] == "paused"
    assert "Nothing changed" in act("/cluster/pause")
    assert "running again" in act("/cluster/resume")
    assert "Job nightly is removed." in act("/jobs/nightly/remove")
    assert client.get("/scheduler/jobs/nightly", headers=api).status_code == 404
    assert "There is no job nightly." in act("/jobs/nightly/pause")


def test_the_service_jobs_cannot_be_removed_from_the_page(ui_app: Flask) -> None:
    client = ui_app.test_client()
    csrf = sign_in(client)
    response = client.post(f"{UI}/jobs/jobservice-maintenance/remove", data={"csrf": csrf})
    assert "can be paused and resumed, not removed" in client.get(response.headers["Location"]).text


ADD = {"id": "added", "func": "tests.jobfuncs:noop", "trigger": "cron", "hour": "3", "minute": "15"}


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"hour": "25"}, "hour", "the last value (25) is higher than the maximum value (23)"),
        ({"func": "os:system"}, "func", "func must name a public module-level function"),
        ({"func": "tests.jobfuncs:missing"}, "func", "missing"),
        ({"id": ""}, "id", "id"),
        ({"id": "a/b"}, "id", "id"),
        ({"args": "[1,"}, "args", "args must be JSON"),
        ({"kwargs": "[]"}, "kwargs", "kwargs"),
        ({"trigger": "interval", "seconds": "abc"}, "seconds", "seconds must be a number"),
        ({"trigger": "date", "run_date": "tomorrow"}, "run_date", "run_date"),
        ({"trigger": "sometimes"}, "trigger", "trigger must be one of"),
        ({"max_instances": "0"}, "max_instances", "max_instances"),
        ({"timezone": "Mars/Base"}, "timezone", "timezone"),
    ],
)
def test_the_add_form_shows_the_apis_error_next_to_its_field_and_stores_nothing(
    ui_app: Flask, changes: dict[str, str], field: str, says: str
) -> None:
    client = ui_app.test_client()
    csrf = sign_in(client)
    store = ui_app.extensions["jobservice"].store
    before = store.count()
    response = client.post(f"{UI}/add", data={"csrf": csrf, **ADD, **changes})
    assert response.status_code == 400
    error = re.search(rf'data-testid="error-{field}">([^<]*)<', response.text)
    assert error, response.text
    assert says in error.group(1).replace("&#39;", "'")
    assert store.count() == before
    # The form keeps what was typed.
    for name, value in changes.items():
        if value and name != "trigger":
            assert f'value="{value}"' in response.text.replace("&#34;", '"') or name in ("args", "kwargs")


def test_the_add_form_adds_what_the_api_would(ui_app: Flask) -> None:
    client = ui_app.test_client()
    csrf = sign_in(client)
    form = {**ADD, "args": "[]", "kwargs": "{}", "max_instances": "2", "retries": "1"}
    response = client.post(f"{UI}/add", data={"csrf": csrf, **form})
    assert response.status_code == 303 and response.headers["Location"] == f"{UI}/jobs/added"
    job = client.get("/scheduler/jobs/added", headers={"Authorization": f"Bearer {TOKEN}"}).json
    assert (job["func"], job["trigger"], job["hour"], job["minute"]) == (
        "tests.jobfuncs:noop",
        "cron",
        "3",
        "15",
    )
    assert (job["max_instances"], job["retries"]) == (2, 1)
    taken = client.post(f"{UI}/add", data={"csrf": csrf, **form})
    assert taken.status_code == 409 and "Job added already exists." in taken.text


def test_the_edit_form_changes_the_trigger_and_arguments_with_the_apis_rules(ui_app: Flask) -> None:
    client = ui_app.test_client()
    csrf = sign_in(client)
    edit = f"{UI}/jobs/nightly/edit"
    shown = client.get(edit).text
    assert 'value="2"' in shown and 'value="30"' in shown  # the trigger as it is
    bad = client.post(edit, data={"csrf": csrf, "trigger": "cron", "minute": "61"})
    assert bad.status_code == 400 and 'data-testid="error-minute"' in bad.text
    api = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/scheduler/jobs/nightly", headers=api).json["minute"] == "30"
    good = client.post(edit, data={"csrf": csrf, "trigger": "interval", "minutes": "10", "name": "Every ten"})
    assert good.status_code == 303
    job = client.get("/scheduler/jobs/nightly", headers=api).json
    assert (job["trigger"], job["minutes"], job["name"]) == ("interval", 10, "Every ten")


# What the views list ------------------------------------------------------------------


_CALLS = itertools.count()


def add_runs(app: Flask, job_id: str, statuses: list[str], error: str | None = None) -> None:
    """Finished runs of a job, a minute apart, ending before now (each call a second earlier)."""
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=next(_CALLS))
    rows = []
    for n, status in enumerate(statuses):
        scheduled = now - timedelta(minutes=len(statuses) - n)
        rows.append(
            {
                "job_id": job_id,
                "trigger": "cron",
                "scheduled_at": scheduled,
                "attempt": 1,
                "status": status,
                "started_at": scheduled + timedelta(milliseconds=40),
                "finished_at": scheduled + timedelta(milliseconds=40 + 100 * (n + 1)),
                "error": error if status == "failed" else None,
                "worker": "host-a:4242",
                "fence": 7,
                "prevented": 1 if n == 0 else 0,
                "created_at": scheduled,
                "updated_at": scheduled,
            }  # fmt: skip
        )
    with engine(app).begin() as conn:
        conn.execute(insert(runs_table), rows)


def listed(html: str) -> list[str]:
    return re.findall(r'<tr data-job="([^"]+)"', html)


def test_the_jobs_view_searches_filters_and_sorts_in_the_database(ui_app: Flask) -> None:
    operations = ui_app.extensions["jobservice"].operations
    operations.add({"id": "sync", "func": "tests.jobfuncs:record", "trigger": "interval", "minutes": 5})
    operations.add({"id": "broken", "func": "tests.jobfuncs:fail", "trigger": "interval", "hours": 2})
    operations.add({"id": "resting", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 3})
    operations.pause("resting")
    add_runs(ui_app, "sync", ["failed", "succeeded"])
    add_runs(ui_app, "broken", ["succeeded", "failed"], error="Traceback ...\nRuntimeError: x")
    client = ui_app.test_client()
    sign_in(client)
    assert listed(client.get(f"{UI}?show=failing").text) == ["broken"]
    assert listed(client.get(f"{UI}?show=paused").text) == ["resting"]
    assert set(listed(client.get(f"{UI}?show=never").text)) == {"nightly", "resting"}
    assert listed(client.get(f"{UI}?q=jobfuncs:rec").text) == ["sync"]
    assert listed(client.get(f"{UI}?q=ync").text) == ["sync"]
    assert listed(client.get(f"{UI}?q=100%25").text) == []  # LIKE's wildcards are plain text here
    soonest = listed(client.get(UI).text)
    assert soonest[0] == "sync" and soonest[-1] == "resting"  # next run first, paused last
    latest = listed(client.get(f"{UI}?sort=-next").text)
    assert latest[-1] == "resting" and latest[0] != "sync"
    assert listed(client.get(f"{UI}?sort=id").text) == sorted(soonest)
    page = client.get(UI).text
    assert "1–4 of 4" in page
    assert "every 5 min" in page and "every day at 02:30 UTC" in page
    assert re.search(r'data-job="broken".*?data-status="failed"', page, re.S)


def test_a_job_page_shows_its_runs_tracebacks_chart_fire_times_and_prevented_claims(ui_app: Flask) -> None:
    add_runs(
        ui_app,
        "nightly",
        ["succeeded", "failed", "succeeded"],
        error="Traceback (most recent call last):\nRuntimeError: the disk is full",
    )
    client = ui_app.test_client()
    sign_in(client)
    html = client.get(f"{UI}/jobs/nightly").text
    assert "RuntimeError: the disk is full" in html and 'data-testid="traceback"' in html
    assert len(re.findall(r"<tr data-run=", html)) == 3
    assert "host-a:4242" in html and ">7<" in html  # worker and fence
    assert re.search(r'data-testid="prevented">1<', html)
    assert html.count("<polyline") == 2
    fires = re.search(r'<ol class="fires" data-testid="fires">(.*?)</ol>', html, re.S)
    assert fires and fires.group(1).count("<li>") == 10 and "02:30:00 UTC" in fires.group(1)


def test_runs_page_by_the_same_cursor_as_the_api(ui_app: Flask) -> None:
    add_runs(ui_app, "nightly", ["succeeded"] * 120)
    client = ui_app.test_client()
    sign_in(client)
    first = client.get(f"{UI}/runs?job_id=nightly").text
    ids = [int(i) for i in re.findall(r"<tr data-run=\"(\d+)\"", first)]
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    older = re.search(r'href="([^"]+cursor=(\d+))"', first)
    assert older and int(older.group(2)) == ids[-1]
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert [int(i) for i in re.findall(r"<tr data-run=\"(\d+)\"", second)][0] == ids[-1] - 1
    api = client.get(
        f"/scheduler/runs?job_id=nightly&limit=50&cursor={ids[-1]}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json
    assert [run["id"] for run in api] == [int(i) for i in re.findall(r"<tr data-run=\"(\d+)\"", second)]


def test_the_runs_view_filters_by_status_and_window_and_names_a_bad_date(ui_app: Flask) -> None:
    add_runs(ui_app, "nightly", ["succeeded", "failed", "missed"], error="RuntimeError: boom")
    client = ui_app.test_client()
    sign_in(client)
    failed = client.get(f"{UI}/runs?status=failed").text
    assert re.findall(r'<tr data-run="\d+" data-status="(\w+)"', failed) == ["failed"]
    assert f'href="{UI}/jobs/nightly"' in failed and "RuntimeError: boom" in failed
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert "<tr data-run=" not in client.get(f"{UI}/runs?since={future}").text
    assert client.get(f"{UI}/runs?until={future}").text.count("<tr data-run=") == 3
    bad = client.get(f"{UI}/runs?since=yesterday")
    assert bad.status_code == 400 and 'data-field="since"' in bad.text


def test_the_cluster_view_shows_what_health_says(ui_app: Flask) -> None:
    client = ui_app.test_client()
    sign_in(client)
    html = client.get(f"{UI}/cluster").text
    assert "nobody leads" in html and "no process leads: due jobs are not being run" in html
    assert 'data-testid="cluster-state">running' in html and 'data-testid="cluster-pause"' in html
    assert "reachable" in html and "<dt>Jobs in the store</dt><dd>1</dd>" in html


def test_an_unknown_job_is_a_404_page(ui_app: Flask) -> None:
    client = ui_app.test_client()
    sign_in(client)
    for path in ("/jobs/nobody", "/jobs/nobody/edit"):
        response = client.get(UI + path)
        assert response.status_code == 404 and response.mimetype == "text/html"
        assert "There is no job nobody." in response.text


def test_a_removed_jobs_runs_stay_on_its_page(ui_app: Flask) -> None:
    add_runs(ui_app, "nightly", ["succeeded"])
    ui_app.extensions["jobservice"].operations.remove("nightly")
    client = ui_app.test_client()
    sign_in(client)
    response = client.get(f"{UI}/jobs/nightly")
    assert response.status_code == 200 and "<tr data-run=" in response.text


# Bounded SQL ---------------------------------------------------------------------------


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine(app), "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine(app), "before_cursor_execute", count)


#: At most this many statements a page, whatever the store holds (the cluster view is /health's).
STATEMENT_LIMITS = {
    "": 3, "?show=failing": 3, "?q=jobfuncs&sort=-next": 3, "/jobs/nightly": 3, "/runs": 1,
    "/runs?status=failed": 1, "/cluster": 6, "/add": 0, "/jobs/nightly/edit": 1,
}  # fmt: skip


def test_the_statements_a_page_takes_do_not_grow_with_the_store(ui_app: Flask) -> None:
    client = ui_app.test_client()
    sign_in(client)
    operations = ui_app.extensions["jobservice"].operations
    counts: list[dict[str, int]] = []
    for size in (5, 80):
        have = ui_app.extensions["jobservice"].store.count()
        for n in range(have, size):
            operations.add(
                {"id": f"job-{n}", "func": "tests.jobfuncs:noop", "trigger": "interval", "minutes": n + 1}
            )
            add_runs(ui_app, f"job-{n}", ["succeeded", "failed"], error="RuntimeError: x")
        add_runs(ui_app, "nightly", ["succeeded"] * size)
        measured = {}
        for path in STATEMENT_LIMITS:
            with statements(ui_app) as seen:
                assert client.get(UI + path).status_code == 200
            measured[path] = len(seen)
        counts.append(measured)
    assert counts[0] == counts[1]
    assert {path: n for path, n in counts[1].items() if n > STATEMENT_LIMITS[path]} == {}


# Words and languages -------------------------------------------------------------------


def say_in(lang: str) -> Callable[..., str]:
    return lambda key, **values: i18n.translate(lang, key, **values)


def plain(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


@pytest.mark.parametrize(
    ("trigger", "english", "chinese"),
    [
        (IntervalTrigger(seconds=10), "every 10 s", "每 10 秒"),
        (IntervalTrigger(minutes=5), "every 5 min", "每 5 分钟"),
        (IntervalTrigger(days=1, hours=2), "every 1 d 2 h", "每 1 天 2 小时"),
        (IntervalTrigger(weeks=2), "every 2 wk", "每 2 周"),
        (CronTrigger(hour=2, minute=30, timezone="UTC"), "every day at 02:30 UTC", "每天 02:30 UTC"),
        (CronTrigger(day_of_week="mon,fri", hour=9, minute=0, timezone="Asia/Shanghai"),
         "every Monday, Friday at 09:00 Asia/Shanghai", "每周一、周五 09:00 Asia/Shanghai"),
        (CronTrigger(day=1, hour=6, minute=0, timezone="UTC"), "on day 1 of every month at 06:00 UTC", "每月 1 日 06:00 UTC"),
        (CronTrigger(minute=15, timezone="UTC"), "every hour at minute 15 UTC", "每小时的第 15 分 UTC"),
        (CronTrigger(minute="*/5", hour="9-17", timezone="UTC"), "cron hour=9-17 minute=*/5 second=0 UTC", "cron hour=9-17 minute=*/5 second=0 UTC"),
        (DateTrigger(datetime(2030, 6, 1, 12, tzinfo=UTC)), "once at 2030-06-01 12:00 UTC", "在 2030-06-01 12:00 UTC 运行一次"),
    ],
)  # fmt: skip
def test_triggers_in_words(trigger: Any, english: str, chinese: str) -> None:
    assert words.describe(trigger, say_in("en"), plain) == english
    assert words.describe(trigger, say_in("zh-CN"), plain) == chinese


def test_every_string_is_in_both_languages_and_every_key_a_page_uses_exists() -> None:
    assert set(i18n.EN) == set(i18n.ZH)
    assert [
        k for k in i18n.EN if i18n.EN[k] == i18n.ZH[k] and not re.fullmatch(r"[\s\w{}.:=-]*", i18n.EN[k])
    ] == []
    from pathlib import Path

    folder = Path(i18n.__file__).parent
    sources = [*folder.glob("templates/jobservice_ui/*.html"), *folder.glob("*.py")]
    used = set()
    for source in sources:
        used |= set(re.findall(r"""\b(?:t|say)\(['"]([\w.]+)['"]""", source.read_text()))
    prefixes = {key for key in used if key.endswith(".")}  # t('status.' ~ value): one per value
    assert used and used - prefixes - set(i18n.EN) == set()
    assert all(any(key.startswith(prefix) for key in i18n.EN) for prefix in prefixes)


def test_the_page_speaks_chinese_when_the_browser_asks_and_keeps_the_switch(ui_app: Flask) -> None:
    client = ui_app.test_client()
    zh = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
    assert "登录 jobservice 控制台" in client.get(f"{UI}/sign-in", headers=zh).text
    assert (
        "Sign in to the jobservice dashboard"
        in client.get(f"{UI}/sign-in", headers={"Accept-Language": "de, en;q=0.5"}).text
    )
    csrf = csrf_of(client.get(f"{UI}/sign-in").text)
    client.post(f"{UI}/sign-in", data={"csrf": csrf, "token": TOKEN})
    page = client.get(UI, headers=zh).text
    assert '<html lang="zh-CN">' in page and "每天 02:30 UTC" in page and ">作业<" in page
    switched = client.get(f"{UI}/language/en", query_string={"next": f"{UI}/runs"})
    assert switched.headers["Location"] == f"{UI}/runs"
    assert ">Runs<" in client.get(f"{UI}/runs", headers=zh).text  # the switch wins over the header


# Settings ------------------------------------------------------------------------------


def ui_settings(**config_keys: Any) -> Any:
    return read({"SCHEDULER_API_ENABLED": True, **config_keys}, "app")


def test_the_dashboard_is_on_in_development_and_off_in_production_unless_asked() -> None:
    development = config.load_config({"JOBSERVICE_ENV": "development"})
    production = config.load_config(
        {"JOBSERVICE_ENV": "production", "SCHEDULER_API_TOKEN": TOKEN, "SECRET_KEY": SECRET}
    )
    assert development.SCHEDULER_UI_ENABLED is None and development.SCHEDULER_UI_ALLOW_ANONYMOUS is True
    assert production.SCHEDULER_UI_ENABLED is False and production.SCHEDULER_UI_ALLOW_ANONYMOUS is False
    asked = config.load_config({"JOBSERVICE_ENV": "production", "SCHEDULER_UI_ENABLED": "true"})
    assert asked.SCHEDULER_UI_ENABLED is True


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        (
            {"SCHEDULER_UI_ENABLED": True, "SECRET_KEY": SECRET},
            "SCHEDULER_UI_ENABLED is on with no credentials",
        ),
        ({"SCHEDULER_UI_ENABLED": True, "SCHEDULER_API_TOKEN": TOKEN}, "SECRET_KEY must be set"),
        ({"SCHEDULER_UI_READONLY_TOKEN": READONLY}, "SCHEDULER_UI_READONLY_TOKEN needs SCHEDULER_API_TOKEN"),
        ({"SCHEDULER_API_TOKEN": TOKEN, "SCHEDULER_UI_READONLY_TOKEN": TOKEN}, "must differ"),
        ({"SCHEDULER_UI_ENABLED": "yes"}, "SCHEDULER_UI_ENABLED must be True or False"),
    ],
)
def test_a_dashboard_setting_that_cannot_be_honoured_stops_start_up(keys: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        ui_settings(**keys)


def test_unset_it_follows_the_api_where_it_may_be_served() -> None:
    assert ui_settings(SCHEDULER_API_TOKEN=TOKEN, SECRET_KEY=SECRET).ui_enabled
    assert not ui_settings(SECRET_KEY=SECRET).ui_enabled  # open API, no opt-in: no open dashboard
    assert ui_settings(SECRET_KEY=SECRET, SCHEDULER_UI_ALLOW_ANONYMOUS=True).ui_enabled
    assert ui_settings(SECRET_KEY=SECRET, DEBUG=True).ui_enabled
    assert not ui_settings(SCHEDULER_API_TOKEN=TOKEN).ui_enabled  # nothing to sign a cookie with
    assert not read({"SCHEDULER_API_TOKEN": TOKEN, "SECRET_KEY": SECRET}, "app").ui_enabled  # API off


def test_the_production_service_refuses_an_open_dashboard(tmp_path: Any) -> None:
    environ = {"JOBSERVICE_ENV": "production", "SCHEDULER_UI_ENABLED": "true", "SCHEDULER_API_ENABLED": "false",
               "DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "SECRET_KEY": SECRET}  # fmt: skip
    with pytest.raises(ConfigError, match="SCHEDULER_UI_ENABLED is on with no credentials"):
        create_app(config.load_config(environ))
    with pytest.raises(ConfigError, match="SECRET_KEY must be set"):
        create_app(config.load_config({**environ, "SECRET_KEY": "", "SCHEDULER_API_TOKEN": TOKEN}))
    meant = create_app(config.load_config({**environ, "SCHEDULER_UI_ALLOW_ANONYMOUS": "true"}))
    try:  # the operator said so: served, open
        assert meant.test_client().get(UI).status_code == 200
    finally:
        meant.extensions["jobservice"].close()


def test_an_open_dashboard_in_development_acts_with_a_csrf_token(make_app: Callable[..., Flask]) -> None:
    app = make_app(SCHEDULER_UI_ALLOW_ANONYMOUS=True)
    app.extensions["jobservice"].operations.add(JOB)
    client = app.test_client()
    page = client.get(UI)
    assert page.status_code == 200 and "nightly" in page.text and "sign-out" not in page.text
    assert client.post(f"{UI}/jobs/nightly/pause").status_code == 403
    csrf = csrf_of(client.get(UI).text)
    assert client.post(f"{UI}/jobs/nightly/pause", data={"csrf": csrf}).status_code == 303
    assert job_state(app) is None


def test_the_prefix_follows_scheduler_api_prefix(make_app: Callable[..., Flask]) -> None:
    app = make_app(SCHEDULER_API_PREFIX="/ops/scheduler", SCHEDULER_API_TOKEN=TOKEN, SECRET_KEY=SECRET)
    client = app.test_client()
    assert client.get("/scheduler/ui").status_code == 404
    response = client.get("/ops/scheduler/ui/runs")
    assert response.status_code == 302 and response.headers["Location"].startswith(
        "/ops/scheduler/ui/sign-in"
    )


def test_the_dashboard_in_your_own_app_runs_in_your_app(database_url: str, tmp_path: Any) -> None:
    app = Flask("yourapp", instance_path=str(tmp_path))
    app.config.update(
        SECRET_KEY=SECRET, SCHEDULER_API_ENABLED=True, SCHEDULER_API_TOKEN=TOKEN, SCHEDULER_AUTOSTART=False,
        JOBSERVICE_DATABASE_URL=database_url, JOBSERVICE_JOB_PACKAGES=["tests.jobfuncs"],
    )  # fmt: skip

    @app.get("/")
    def home() -> str:
        return "your home page"

    JobService(app)
    try:
        client = app.test_client()
        sign_in(client)
        assert client.get(UI).status_code == 200
        assert client.get("/").text == "your home page"
        assert client.get("/nothing-here").mimetype == "text/html"  # your app's errors stay yours
    finally:
        app.extensions["jobservice"].close()


def test_flask_apschedulers_basic_auth_signs_in_with_its_callback(database_url: str, tmp_path: Any) -> None:
    from flask_apscheduler.auth import HTTPBasicAuth

    from jobservice import APScheduler

    app = Flask("yourapp", instance_path=str(tmp_path))
    app.config.update(
        SECRET_KEY=SECRET, SCHEDULER_API_ENABLED=True, SCHEDULER_AUTH=HTTPBasicAuth(),
        SCHEDULER_AUTOSTART=False, JOBSERVICE_DATABASE_URL=database_url,
    )  # fmt: skip
    scheduler = APScheduler()
    scheduler.init_app(app)
    scheduler.authenticate(lambda auth: auth["username"] == "ops" and auth["password"] == "s3cret")
    try:
        client = app.test_client()
        assert client.get(f"{UI}/runs").status_code == 302
        form = client.get(f"{UI}/sign-in").text
        assert 'name="username"' in form and 'name="token"' not in form
        csrf = csrf_of(form)
        wrong = client.post(f"{UI}/sign-in", data={"csrf": csrf, "username": "ops", "password": "guess"})
        assert wrong.status_code == 401
        good = client.post(f"{UI}/sign-in", data={"csrf": csrf, "username": "ops", "password": "s3cret"})
        assert good.status_code == 303
        assert client.get(f"{UI}/runs").status_code == 200
        assert client.get("/scheduler/jobs").status_code == 401  # the API wants Basic credentials
    finally:
        app.extensions["jobservice"].close()


def test_the_pages_say_so_when_the_database_is_unreachable(proxied_app: Any) -> None:
    app, proxy = proxied_app
    app.config.update(SECRET_KEY=SECRET)
    client = app.test_client()
    assert client.get(UI).status_code in (200, 302)
    proxy.cut()
    for path in ("", "/runs", "/jobs/nightly"):
        response = client.get(UI + path)
        assert response.status_code == 503 and response.mimetype == "text/html"
        assert "The database cannot be reached" in response.text
    cluster = client.get(f"{UI}/cluster")
    assert cluster.status_code == 200 and "unreachable" in cluster.text


def test_outside_production_the_service_keeps_one_secret_key_for_all_its_workers(
    make_app: Callable[..., Flask], tmp_path: Any
) -> None:
    import stat

    from jobservice.standalone import _instance_secret

    key = _instance_secret(tmp_path / "instance")
    assert key == _instance_secret(tmp_path / "instance") and len(key) >= 32
    assert stat.S_IMODE((tmp_path / "instance" / "secret_key").stat().st_mode) == 0o600
    assert not list((tmp_path / "instance").glob(".secret_key.*"))
    first, second = make_app(), make_app()
    assert first.config["SECRET_KEY"] and first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    production = make_app(ENV_NAME="production", SCHEDULER_API_TOKEN=TOKEN)
    assert production.config.get("SECRET_KEY") is None
    assert "jobservice_ui" not in production.blueprints
