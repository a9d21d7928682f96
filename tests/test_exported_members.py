"""The public API is exactly what corral.__all__ says (contract §8 names included)."""

from __future__ import annotations

import inspect

import corral

EXPORTED = [
    "AgentFailed",
    "AgentRegistry",
    "AuthRequest",
    "Connection",
    "CorralError",
    "Event",
    "EventBus",
    "EventMonitor",
    "EventType",
    "ExecutionEngineFactory",
    "Identity",
    "InProcessEventBus",
    "InputTimeout",
    "IsolatedExecutionEngine",
    "Limits",
    "RunContext",
    "RunOutcome",
    "RunStatus",
    "ToolCallError",
    "UnifiedToolExecutionEngine",
    "UserExecutionContext",
    "UserWebSocketEmitter",
    "WebSocketBridgeFactory",
    "WebSocketConnectionPool",
    "__version__",
    "client",
]

CLIENT_EXPORTED = [
    "TERMINAL_TYPES",
    "Agent",
    "AguiStream",
    "AsyncClient",
    "ClientState",
    "CorralAPIError",
    "Event",
    "Me",
    "Run",
    "RunPage",
    "RunStream",
    "SSEMessage",
    "SSEParser",
    "Session",
    "SessionState",
    "Thread",
    "ThreadPage",
    "TokenProvider",
    "open_socket",
    "ws_url",
]

CONTRACT_COMPONENTS = {
    "UserExecutionContext",
    "AgentRegistry",
    "ExecutionEngineFactory",
    "IsolatedExecutionEngine",
    "UnifiedToolExecutionEngine",
    "WebSocketBridgeFactory",
    "UserWebSocketEmitter",
    "WebSocketConnectionPool",
}


def test_all_is_pinned_exactly() -> None:
    assert corral.__all__ == EXPORTED


def test_all_is_sorted_and_without_duplicates() -> None:
    assert corral.__all__ == sorted(set(corral.__all__))


def test_every_exported_name_exists() -> None:
    for name in corral.__all__:
        assert hasattr(corral, name), name


def test_every_public_member_is_exported() -> None:
    public = {
        name
        for name, value in vars(corral).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(corral.__all__) - {"__version__", "client"}


def test_contract_components_are_public() -> None:
    assert set(corral.__all__) >= CONTRACT_COMPONENTS
    for name in CONTRACT_COMPONENTS:
        assert getattr(corral, name).__module__.startswith("corral.core.")


def test_the_client_module_is_public_and_pinned() -> None:
    """corral.client (contract §8, §11) is reachable from corral; its names are pinned, and its
    error is one of corral's."""
    from corral.client import CorralAPIError

    assert corral.client.__all__ == CLIENT_EXPORTED
    for name in CLIENT_EXPORTED:
        assert hasattr(corral.client, name), name
    assert issubclass(CorralAPIError, corral.CorralError)
