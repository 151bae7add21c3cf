"""jobservice is installable: a wheel of the package alone, installed into a fresh virtual
environment, runs an app of the test's own from a directory outside the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent

OWN_APP = """
    import sys
    import time
    from pathlib import Path

    from flask import Flask, current_app

    from jobservice import APScheduler

    MARKER = Path(__file__).with_name("ran")
    app = Flask("ownapp")
    app.config["JOBSERVICE_DATABASE_URL"] = f"sqlite:///{Path(__file__).with_name('jobs.sqlite3')}"


    def tick() -> None:
        MARKER.write_text("ran in " + current_app.name)  # in the app's context


    if __name__ == "__main__":
        scheduler = APScheduler(app=app)
        scheduler.add_job(id="tick", func="ownapp:tick", trigger="date")  # now
        scheduler.start()
        deadline = time.monotonic() + 20
        while not MARKER.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        sys.exit(0 if MARKER.exists() else 1)
"""


def test_a_wheel_installs_the_package_alone_and_runs_an_app_outside_the_repository(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "jobservice", source / "jobservice", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = dist.glob("jobservice-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "jobservice/migrations/env.py" in names and "jobservice/migrations/script.py.mako" in names
    assert any(n.startswith("jobservice/migrations/versions/0001") for n in names)
    tops = {n.split("/")[0] for n in names}
    assert tops == {
        "jobservice",
        wheel.name.split("-py3")[0] + ".dist-info",
    }  # no jobs/, tests/, bench/, config

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "requirements.txt"), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    own = tmp_path / "elsewhere"
    own.mkdir()
    (own / "ownapp.py").write_text(textwrap.dedent(OWN_APP))
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import jobservice, importlib.util as u; "
         "print(jobservice.__file__, [m for m in ('jobs', 'tests', 'bench', 'config') if u.find_spec(m)])"],
        cwd=own, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    location, missing = probe.stdout.rsplit(" [", 1)
    assert str(venv) in location and missing.strip() == "]"  # nothing but the package came along
    ran = subprocess.run(
        [str(venv / "bin" / "python"), "ownapp.py"],
        cwd=own,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    assert (own / "ran").read_text() == "ran in ownapp"
