"""Read ahead: the next pages of a list fetched by a thread while the caller works on the current one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator


def read_ahead(pages: Iterable[list[dict]], depth: int = 2) -> Iterator[list[dict]]:
    """`pages`, with the next ones fetched by a thread while the caller works on the current one.

    The API server builds page N+1 (and the socket receives it) while page N is checked, so a
    long list costs about the larger of the two instead of their sum. At most `depth` pages wait
    in memory. An error while fetching is raised here, at the page it would have come from;
    closing the generator early stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pages:
                if not put(("page", page)):
                    return
            put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", e))

    worker = threading.Thread(target=fetch, name="kube-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "page":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        worker.join(timeout=5)
