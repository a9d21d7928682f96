"""AG-UI (contract §12): corral runs in the Agent-User Interaction protocol, for AG-UI clients
such as ``@ag-ui/client``'s ``HttpAgent`` and CopilotKit."""
