"""A steady stream of token creations and deletions through the real APIs."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx

REQUEST_TIMEOUT_SECONDS = 5.0
PAUSE_SECONDS = 0.1
EXPIRE_IN_DAYS = 9


@dataclass
class Owner:
    user_id: str
    email: str
    session: str


def _bearer(owner: Owner) -> dict[str, str]:
    return {"Authorization": f"Bearer {owner.session}"}


@dataclass
class Workload:
    """Creates and deletes tokens until stopped, spreading calls over replicas.

    Outcomes are only counted here. A request cut off by a fault may have
    committed or not, so the tokens database is the record of which changes
    were committed.
    """

    owners: list[Owner]
    tokens_urls: list[str]
    operations: int = 0
    failures: int = 0
    created: list[tuple[str, Owner]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _random: random.Random = field(default_factory=lambda: random.Random(7))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT_SECONDS * 2)

    def _run(self) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS) as client:
            while not self._stop.is_set():
                self._step(client)
                time.sleep(PAUSE_SECONDS)

    def _step(self, client: httpx.Client) -> None:
        url = self._random.choice(self.tokens_urls)
        self.operations += 1
        try:
            if self.created and self._random.random() < 0.3:
                index = self._random.randrange(len(self.created))
                token_id, owner = self.created.pop(index)
                response = client.delete(
                    f"{url}/v1/tokens/{token_id}", headers=_bearer(owner)
                )
                ok = response.status_code in (204, 404)
            else:
                owner = self._random.choice(self.owners)
                body = {
                    "name": f"load {self.operations}",
                    "expire_in_days": EXPIRE_IN_DAYS,
                }
                response = client.post(
                    f"{url}/v1/tokens", json=body, headers=_bearer(owner)
                )
                ok = response.status_code == 201
                if ok:
                    self.created.append((response.json()["id"], owner))
        except httpx.HTTPError:
            ok = False
        if not ok:
            self.failures += 1
