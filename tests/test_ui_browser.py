"""The dashboard in a real headless Chromium, against a real service: gunicorn with two
workers on MariaDB and Redis, closed by a token. What the operator does in the page is
checked through the REST API and the run history, not through the page alone.

The screenshots in the README (docs/screenshots/) are taken here, from this service.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import PageFor
from tests.cluster import ROOT, Server, gunicorn, http, server_env
from tests.conftest import drop_mariadb_database, mysql_url, new_mariadb_database, wait_for

pytestmark = pytest.mark.processes

TOKEN = "ui-admin-" + secrets.token_hex(12)
READONLY = "ui-viewer-" + secrets.token_hex(12)
SHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}


def api(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The REST API, with the bearer token (the dashboard's cookie is never sent to it)."""
    return http(method, server.url(path), body, headers={"Authorization": f"Bearer {TOKEN}"})


@contextmanager
def running_service(log_dir: Path, redis_url: str) -> Iterator[Server]:
    """The service as deployed: production, the dashboard asked for and closed by the token."""
    name = new_mariadb_database()
    env = server_env(
        mysql_url(name),
        redis_url,
        SCHEDULER_API_TOKEN=TOKEN,
        SCHEDULER_UI_READONLY_TOKEN=READONLY,
        SCHEDULER_UI_ENABLED="true",
        SECRET_KEY=secrets.token_hex(32),
    )
    env["JOBSERVICE_ENV"] = "production"
    server = gunicorn("ui", env, log_dir, workers=2).start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        drop_mariadb_database(name)


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, mariadb_server: Any, redis_url: str
) -> Iterator[Server]:
    with running_service(tmp_path_factory.mktemp("ui"), redis_url) as server:
        yield server


def add_job(server: Server, job_id: str, **fields: Any) -> dict[str, Any]:
    trigger = {} if "trigger" in fields else {"trigger": "interval", "hours": 1}
    definition = {"id": job_id, "func": "tests.jobfuncs:noop", **trigger, **fields}
    status, body = api(server, "POST", "/scheduler/jobs", definition)
    assert status == 200, body
    return body


def signed_in(page_for: PageFor, server: Server, token: str = TOKEN, locale: str = "en-US") -> Page:
    page = page_for(locale=locale)
    page.set_viewport_size(VIEWPORT)
    page.goto(server.url("/scheduler/ui"))
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    page.get_by_test_id("token").fill(token)
    page.get_by_test_id("sign-in-submit").click()
    expect(page.get_by_test_id("sign-out")).to_be_visible()
    return page


def row(page: Page, job_id: str) -> Any:
    return page.locator(f'tr[data-job="{job_id}"]')


def test_sign_in_sets_a_strict_http_only_cookie_and_never_shows_the_token(
    page_for: PageFor, service: Server
) -> None:
    page = signed_in(page_for, service)
    assert page.url.endswith("/scheduler/ui")
    assert TOKEN not in page.url and TOKEN not in page.content()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "jobservice_ui"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/scheduler/ui"
    assert TOKEN not in cookie["value"]
    # The REST API does not take the dashboard's cookie: bearer or Basic only.
    assert page.request.get(service.url("/scheduler/jobs")).status == 401
    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    page.goto(service.url("/scheduler/ui/runs"))
    expect(page.get_by_test_id("sign-in")).to_be_visible()


def test_a_wrong_token_is_refused(page_for: PageFor, service: Server) -> None:
    page = page_for()
    page.goto(service.url("/scheduler/ui"))
    page.get_by_test_id("token").fill("not-the-token")
    page.get_by_test_id("sign-in-submit").click()
    expect(page.get_by_test_id("sign-in-error")).to_be_visible()
    assert page.request.get(service.url("/scheduler/ui/runs")).url.split("?")[0].endswith("/sign-in")


def test_a_job_added_through_the_api_appears_without_a_reload_then_pause_and_run_from_the_page(
    page_for: PageFor, service: Server
) -> None:
    page = signed_in(page_for, service)
    job_id = f"live-{secrets.token_hex(3)}"
    page.evaluate("window.__same_document = true")
    add_job(service, job_id)
    expect(row(page, job_id)).to_be_visible(timeout=10_000)
    assert page.evaluate("window.__same_document") is True  # refreshed in place, not reloaded

    row(page, job_id).get_by_test_id("pause").click()
    expect(page.get_by_test_id("notice")).to_contain_text(job_id)
    expect(row(page, job_id).get_by_test_id("state")).to_have_text("paused")
    status, job = api(service, "GET", f"/scheduler/jobs/{job_id}")
    assert status == 200 and job["next_run_time"] is None

    row(page, job_id).get_by_test_id("resume").click()
    expect(row(page, job_id).get_by_test_id("state")).to_have_text("scheduled")
    assert api(service, "GET", f"/scheduler/jobs/{job_id}")[1]["next_run_time"] is not None

    row(page, job_id).get_by_role("link", name=job_id).click()
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("notice")).to_contain_text(job_id)
    succeeded = page.locator('table[data-testid="runs"] tr[data-status="succeeded"]')
    expect(succeeded).to_have_count(1, timeout=15_000)
    status, runs = api(service, "GET", f"/scheduler/jobs/{job_id}/runs")
    assert [run["status"] for run in runs] == ["succeeded"]


def test_a_refresh_keeps_the_operators_filters_typing_and_scroll(page_for: PageFor, service: Server) -> None:
    for n in range(25):
        add_job(service, f"scroll-{n:02d}")
    page = signed_in(page_for, service)
    page.goto(service.url("/scheduler/ui?q=scroll-&show=all"))
    page.set_viewport_size({"width": 1000, "height": 400})
    page.get_by_test_id("search").fill("scroll-1")  # typed, not applied yet
    page.mouse.wheel(0, 600)
    # Polled from here: the page's Content-Security-Policy refuses Playwright's wait_for_function.
    scrolled = wait_for(lambda: page.evaluate("window.scrollY") > 300 and page.evaluate("window.scrollY"))
    status = page.locator("#live-status")
    first = wait_for(status.text_content)  # the first refresh...
    wait_for(lambda: status.text_content() not in ("", first), timeout_s=10)  # ...and the next
    assert page.get_by_test_id("search").input_value() == "scroll-1"
    assert page.evaluate("window.scrollY") == scrolled
    assert page.url.endswith("?q=scroll-&show=all")
    assert row(page, "scroll-24").count() == 1


def test_remove_asks_first_and_a_no_keeps_the_job(page_for: PageFor, service: Server) -> None:
    job_id = f"removed-{secrets.token_hex(3)}"
    add_job(service, job_id)
    page = signed_in(page_for, service)
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    row(page, job_id).get_by_test_id("remove").click()
    wait_for(lambda: asked)
    assert job_id in asked[0]
    assert api(service, "GET", f"/scheduler/jobs/{job_id}")[0] == 200
    page.once("dialog", lambda dialog: dialog.accept())
    row(page, job_id).get_by_test_id("remove").click()
    expect(page.get_by_test_id("notice")).to_contain_text(f"Job {job_id} is removed.")
    assert api(service, "GET", f"/scheduler/jobs/{job_id}")[0] == 404
    expect(row(page, job_id)).to_have_count(0)


def test_a_failing_jobs_traceback_is_on_its_page(page_for: PageFor, service: Server) -> None:
    job_id = f"failing-{secrets.token_hex(3)}"
    add_job(service, job_id, func="tests.jobfuncs:fail", args=["the disk is full"])
    assert api(service, "POST", f"/scheduler/jobs/{job_id}/run")[0] == 200
    wait_for(lambda: api(service, "GET", f"/scheduler/jobs/{job_id}/runs")[1], timeout_s=15)
    page = signed_in(page_for, service)
    page.goto(service.url(f"/scheduler/ui/jobs/{job_id}"))
    traceback = page.get_by_test_id("traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("RuntimeError: the disk is full")
    page.goto(service.url("/scheduler/ui/runs?status=failed"))
    expect(page.locator(f'table[data-testid="runs"] a:text-is("{job_id}")')).to_be_visible()


def test_the_add_form_shows_the_apis_error_next_to_the_cron_field_and_stores_nothing(
    page_for: PageFor, service: Server
) -> None:
    page = signed_in(page_for, service)
    page.get_by_test_id("add-job").click()
    job_id = f"bad-cron-{secrets.token_hex(3)}"
    page.get_by_test_id("field-id").fill(job_id)
    page.get_by_test_id("field-func").fill("tests.jobfuncs:noop")
    page.get_by_test_id("trigger-cron").check()
    page.get_by_test_id("field-hour").fill("25")
    page.get_by_test_id("field-minute").fill("30")
    page.get_by_test_id("save").click()
    error = page.get_by_test_id("error-hour")
    expect(error).to_contain_text("hour")
    expect(error).to_contain_text("maximum value (23)")
    # Next to its field, which keeps what was typed.
    assert page.locator("label.field.invalid").filter(has=page.get_by_test_id("field-hour")).count() == 1
    expect(page.get_by_test_id("field-hour")).to_have_value("25")
    assert api(service, "GET", f"/scheduler/jobs/{job_id}")[0] == 404
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "add-job-error.png"), full_page=True)

    page.get_by_test_id("field-hour").fill("2")
    page.get_by_test_id("save").click()
    expect(page.get_by_test_id("notice")).to_contain_text(job_id)
    status, job = api(service, "GET", f"/scheduler/jobs/{job_id}")
    assert status == 200 and (job["hour"], job["minute"]) == ("2", "30")


def test_the_read_only_token_sees_no_actions_and_a_forged_post_gets_403(
    page_for: PageFor, service: Server
) -> None:
    job_id = f"viewed-{secrets.token_hex(3)}"
    add_job(service, job_id)
    page = signed_in(page_for, service, token=READONLY)
    expect(page.get_by_test_id("readonly")).to_be_visible()
    expect(row(page, job_id)).to_be_visible()
    assert page.locator('[data-testid="pause"], [data-testid="run"], [data-testid="remove"]').count() == 0
    assert page.get_by_test_id("add-job").count() == 0
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    forged = page.request.post(
        service.url(f"/scheduler/ui/jobs/{job_id}/pause"), form={"csrf": csrf or "", "next": "/scheduler/ui"}
    )
    assert forged.status == 403
    assert api(service, "GET", f"/scheduler/jobs/{job_id}")[1]["next_run_time"] is not None


def test_a_post_without_the_csrf_token_is_refused(page_for: PageFor, service: Server) -> None:
    job_id = f"csrf-{secrets.token_hex(3)}"
    add_job(service, job_id)
    page = signed_in(page_for, service)
    for form in ({"next": "/scheduler/ui"}, {"csrf": "a-guess", "next": "/scheduler/ui"}):
        response = page.request.post(service.url(f"/scheduler/ui/jobs/{job_id}/pause"), form=form)
        assert response.status == 403
    assert api(service, "GET", f"/scheduler/jobs/{job_id}")[1]["next_run_time"] is not None


def test_the_chinese_page_when_the_browser_asks_for_zh_cn(page_for: PageFor, service: Server) -> None:
    page = page_for(locale="zh-CN")
    page.goto(service.url("/scheduler/ui"))
    expect(page.locator("h1")).to_have_text("登录 jobservice 控制台")
    page.get_by_test_id("token").fill(TOKEN)
    page.get_by_test_id("sign-in-submit").click()
    expect(page.get_by_test_id("nav")).to_contain_text("作业")
    expect(page.get_by_test_id("nav")).to_contain_text("集群")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    page.get_by_test_id("lang-switch").click()
    expect(page.get_by_test_id("nav")).to_contain_text("Jobs")


def test_times_are_shown_in_the_browsers_zone_with_utc_on_hover(page_for: PageFor, service: Server) -> None:
    job_id = f"zoned-{secrets.token_hex(3)}"
    add_job(service, job_id, trigger="date", run_date="2030-06-01T12:00:00+00:00")
    page = page_for(timezone_id="Asia/Shanghai")
    page.goto(service.url("/scheduler/ui"))
    page.get_by_test_id("token").fill(TOKEN)
    page.get_by_test_id("sign-in-submit").click()
    shown = row(page, job_id).locator("time").first
    expect(shown).to_have_attribute("title", "2030-06-01 12:00:00 UTC")
    expect(shown).to_contain_text("8:00:00")  # 20:00 in Shanghai, in the browser's own format


def test_screenshots_of_every_view(
    page_for: PageFor, tmp_path: Path, mariadb_server: Any, redis_url: str
) -> None:
    """The README's pictures, from a service of their own (each run takes them anew)."""
    with running_service(tmp_path, redis_url) as service:
        take_screenshots(page_for, service)


def finished(service: Server, job_id: str) -> int:
    runs = api(service, "GET", f"/scheduler/jobs/{job_id}/runs")[1]
    return sum(run["status"] not in ("running", "queued") for run in runs)


def take_screenshots(page_for: PageFor, service: Server) -> None:
    for n in range(3):
        add_job(service, f"report-{n}", trigger="cron", hour=2 + n, minute=30)
    add_job(service, "sync-inventory", trigger="interval", minutes=5)
    add_job(service, "nightly-export", func="tests.jobfuncs:fail", args=["export bucket is read-only"])
    api(service, "POST", "/scheduler/jobs/report-2/pause")
    for n in range(1, 7):  # one after the other: each run of sync-inventory succeeds
        api(service, "POST", "/scheduler/jobs/sync-inventory/run")
        wait_for(lambda n=n: finished(service, "sync-inventory") >= n, timeout_s=20)
    api(service, "POST", "/scheduler/jobs/nightly-export/run")
    wait_for(lambda: finished(service, "nightly-export") >= 1, timeout_s=20)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = signed_in(page_for, service)
    views = {
        "jobs": "/scheduler/ui",
        "job": "/scheduler/ui/jobs/sync-inventory",
        "runs": "/scheduler/ui/runs",
        "cluster": "/scheduler/ui/cluster",
    }
    for name, path in views.items():
        page.goto(service.url(path))
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.goto(service.url("/scheduler/ui/jobs/nightly-export"))
    expect(page.get_by_test_id("traceback")).to_be_visible()
    page.screenshot(path=str(SHOTS / "failed-run.png"), full_page=True)
    chinese = signed_in(page_for, service, locale="zh-CN")
    chinese.wait_for_load_state("networkidle")
    chinese.screenshot(path=str(SHOTS / "jobs.zh-CN.png"), full_page=True)
    for name in (*views, "failed-run", "jobs.zh-CN"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
