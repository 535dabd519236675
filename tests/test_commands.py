"""Management commands that compose the generator with the policies."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.synthetic import make_shapes_dataset

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str) -> subprocess.CompletedProcess:
    # A key of its own, as a deployment has: with DEBUG off every command refuses the development
    # key (stackgan_django.E004); these commands sign nothing the tests read back.
    env = {**os.environ, "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_train_model_refuses_a_dataset_the_data_policy_rejects(tmp_path):
    data = make_shapes_dataset(tmp_path / "shapes", size=32, copies=1)
    lines = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
    lines[2]["license"] = "LicenseRef-scraped-from-the-web"
    (data / "manifest.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = manage("train_model", "--data", str(data), "--output", str(tmp_path / "run"), "--steps", "2")
    assert result.returncode != 0
    assert "data.licence" in result.stderr and "line 3" in result.stderr and "LicenseRef-scraped" in result.stderr
    assert not (tmp_path / "run" / "generator.safetensors").exists()


def test_train_model_trains_on_an_accepted_dataset(tmp_path):
    data = make_shapes_dataset(tmp_path / "shapes", size=32, copies=1)
    result = manage("train_model", "--data", str(data), "--output", str(tmp_path / "run"), "--steps", "2",
                    "--batch-size", "4", "--ngf", "8", "--ndf", "8", "--base-size", "16", "--branches", "1", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "8 of 8 items may be trained on" in result.stdout
    assert (tmp_path / "run" / "generator.safetensors").is_file()


def test_manage_py_refuses_the_development_key_with_debug_off():
    # The probe's finding: plain `manage.py check` said nothing on the settings the tests use.
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY")}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "stackgan_django.E004" in result.stderr and "DJANGO_SECRET_KEY" in result.stderr
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env={**env, "DJANGO_DEBUG": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_celery_worker_refuses_the_development_key_with_debug_off(tmp_path):
    # The fifth probe's finding: every command refused the key but `celery worker` started on it.
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY")}
    env["CELERY_BROKER_URL"] = "memory://"
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", "refused",
               "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "refuses to start" in result.stderr and "stackgan_django.E004" in result.stderr, result.stderr[-2000:]


def test_the_workers_check_lets_a_deployment_key_or_debug_through(settings):
    from stackgan_django.worker_start import refuse_development_secret_key

    settings.DEBUG = False
    settings.SECRET_KEY = secrets.token_urlsafe(50)
    refuse_development_secret_key()  # a deployment's own key: no exit
    settings.SECRET_KEY = settings.DEVELOPMENT_SECRET_KEY
    settings.DEBUG = True
    refuse_development_secret_key()  # on your own machine, with DEBUG on (make run)
    settings.DEBUG = False
    try:
        refuse_development_secret_key()
    except SystemExit as exit_:
        assert exit_.code != 0
    else:
        raise AssertionError("the development key with DEBUG off did not stop the worker")
