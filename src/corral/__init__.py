"""corral: run AI agents for many users at once; each user's events reach that user only."""

from corral import client  # the client module (contract §8, §11): corral.client.AsyncClient
from corral.auth.identity import Identity
from corral.auth.request import AuthRequest
from corral.core.bus import EventBus, InProcessEventBus
from corral.core.connection import Connection
from corral.core.context import UserExecutionContext
from corral.core.emitter import UserWebSocketEmitter, WebSocketBridgeFactory
from corral.core.engine import IsolatedExecutionEngine, RunContext, RunOutcome
from corral.core.events import Event, EventType, RunStatus
from corral.core.factory import ExecutionEngineFactory, Limits
from corral.core.monitor import EventMonitor
from corral.core.pool import WebSocketConnectionPool
from corral.core.registry import AgentRegistry
from corral.core.tools import UnifiedToolExecutionEngine
from corral.errors import AgentFailed, CorralError, InputTimeout, ToolCallError

__version__ = "0.1.0"

__all__ = [
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
