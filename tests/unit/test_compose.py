"""docker-compose.yml cannot run here, so its structure is checked instead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("settings", "profile", "tokens", "notifier")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_part_present(compose: dict[str, Any]) -> None:
    services = compose["services"]

    for name in (*APP_SERVICES, "kafka", "postgres", "mailpit", "gateway", "provision"):
        assert name in services, name
    assert (
        "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    )


def test_images_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is None:
            assert service.get("build"), f"{name} has neither image nor build"
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: {image}"
        assert not image.endswith(":latest"), name


def test_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "provision":
            continue
        assert "healthcheck" in service, name
        assert service["healthcheck"]["test"], name


def test_app_services_check_readiness(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        test = " ".join(compose["services"][name]["healthcheck"]["test"])
        assert "/readyz" in test, name


def test_notifier_can_scale(compose: dict[str, Any]) -> None:
    notifier = compose["services"]["notifier"]

    assert "ports" not in notifier
    assert "container_name" not in notifier


def test_ports_bound_to_loopback(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_no_real_secrets(compose: dict[str, Any]) -> None:
    secret_names = re.compile(r"PASSWORD|KEY|SECRET|DATABASE_URL", re.I)
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        for variable, value in environment.items():
            if not secret_names.search(variable) or variable.endswith("_KEY_ID"):
                continue
            assert "${" in str(value), f"{name}.{variable} is hard-coded"
            assert "dev-only" in str(value), (
                f"{name}.{variable} default not a placeholder"
            )
