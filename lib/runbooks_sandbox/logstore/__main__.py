"""``python -m runbooks_sandbox.logstore [--port N]``: an empty store, for trying the API."""

from __future__ import annotations

import time

from .store import LogStore


def main(argv: list[str] | None = None) -> None:
    """``python -m runbooks_sandbox.logstore [--port N]``: an empty store, for trying the API."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    store = LogStore()
    print(store.start(args.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        store.stop()



if __name__ == "__main__":  # pragma: no cover
    main()
