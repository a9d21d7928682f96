"""The garbage collector and a long-running corral process."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move what starting made (modules, schemas, the app and its parts: it lives as long as
    the process) out of the garbage collector's view, so a full collection scans only what
    connections and runs made since. Measured (bench scaling, 1,000 connected users): full
    collections paused the event loop ~200 ms each without this. For processes corral owns
    (``corral serve``, ``corral worker``), never for an app that mounts corral."""
    gc.collect()
    gc.freeze()
