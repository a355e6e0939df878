"""The live web view: a run's graph in a browser, coloured by its nodes' states as they change.

- `LiveView`: serve the page of one run of this process, fed by its events
  (``aioflow run GRAPH --ui``);
- `JournalSite` with `ViewServer`: serve the runs a journal holds, a
  running one followed as its file changes (``aioflow ui JOURNAL``);
- `Feed`, `Channel`: the state, its batches, and each browser's bounded
  queue; `layout`: where the boxes go.

Names are imported on first access: only `LiveView`, `ViewServer` and
`JournalSite` need the ``ui`` extra (Starlette, uvicorn), and only when
they serve.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._feed import Channel as Channel
    from ._feed import Feed as Feed
    from ._journal import JournalSite as JournalSite
    from ._layout import layout as layout
    from ._live import LiveView as LiveView
    from ._server import ViewServer as ViewServer
    from ._server import require_extra as require_extra

_WHERE = {
    "Channel": "._feed",
    "Feed": "._feed",
    "JournalSite": "._journal",
    "layout": "._layout",
    "LiveView": "._live",
    "ViewServer": "._server",
    "require_extra": "._server",
}

__all__ = ["Channel", "Feed", "JournalSite", "LiveView", "ViewServer", "layout", "require_extra"]


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
