"""Event bus and run queue adapters: Redis (the in-process bus lives in corral.core.bus)."""
