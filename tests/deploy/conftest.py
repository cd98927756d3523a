"""Fixtures of the deploy tests: one helm for the session, each scenario rendered once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart import Scenario, ensure_helm, render


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: container image and Helm chart checks (offline; run by default)")


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_helm()


@pytest.fixture(scope="session")
def rendered(helm: Path) -> Callable[[Scenario], list[dict[str, Any]]]:
    cache: dict[str, list[dict[str, Any]]] = {}

    def get(scenario: Scenario) -> list[dict[str, Any]]:
        if scenario.name not in cache:
            cache[scenario.name] = render(helm, scenario)
        return cache[scenario.name]

    return get
