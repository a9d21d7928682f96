"""``corral loadtest``: prove isolation, completeness and order of event delivery under load.

A black-box client of the public API: it talks to a corral server only over HTTP and
WebSocket, signs its own tokens, and imports nothing of the server, core or store.

    from corral.loadtest import LoadtestConfig, run_loadtest

    report = await run_loadtest(LoadtestConfig(url="http://127.0.0.1:8000", users=100))
    assert report.passed, report.failures
"""

from corral.loadtest.config import LoadtestConfig
from corral.loadtest.metrics import Stats
from corral.loadtest.report import LoadtestReport
from corral.loadtest.runner import run_cli, run_loadtest
from corral.loadtest.verify import Category, ConnectionVerifier, Kind, Violations

__all__ = [
    "Category",
    "ConnectionVerifier",
    "Kind",
    "LoadtestConfig",
    "LoadtestReport",
    "Stats",
    "Violations",
    "run_cli",
    "run_loadtest",
]
