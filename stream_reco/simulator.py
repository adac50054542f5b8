"""A seeded simulated storefront: shopper, bot and shilling sessions in reco-events format."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

# Re-exported: callers build the catalogue and its shoppers from this one module.
from stream_reco.simulated_catalog import make_catalog as make_catalog

ZIPF_EXPONENT = 1.1
_N_USERS = 1000  # a bounded pool so signed-in users come back across sessions
_GAP_MS = (2_000, 60_000)
_KNOWN_SESSIONS = 10_000  # sessions whose user a reaction still knows: bounded for endless runs
REACT_TOP = 3  # a shopper who clicks a recommendation picks one of its first items
# A variant name -> the probability a shopper clicks an answer it served (see Storefront.react).
ClickProb = Mapping[str, float] | Callable[[str | None], float]
# Abusive traffic (bots.py flags it): a crawler walks hundreds of distinct items, a cart spammer
# adds item after item, a repeater sends one event again and again; all at machine pace.
BOT_KINDS = ("crawler", "cart_spammer", "repeater")
_BOT_GAP_MS = (10, 60)


class Storefront:
    """Shoppers browsing `catalog`: Zipf popularity, focus categories, complements in the cart.

    Everything (popularity ranking, complements, sessions) comes from one `random.Random(seed)`,
    so the same seed and the same sequence of calls give the same events.
    """

    def __init__(
        self,
        catalog: list[dict[str, object]],
        seed: int = 0,
        run_id: str = "sim",
        start_ms: int = 1_700_000_000_000,
        click_prob: ClickProb | None = None,
        bot_share: float = 0.0,
    ) -> None:
        if not catalog:
            raise ValueError("catalog is empty")
        if not 0.0 <= bot_share <= 1.0:
            raise ValueError(f"bot_share must be in [0, 1], got {bot_share}")
        self.bot_share = bot_share
        self.bots: dict[str, str] = {}  # bot session -> its kind (the latest _KNOWN_SESSIONS)
        self.run_id = run_id
        self._rng = random.Random(seed)
        self._seed = seed
        self.click_prob = click_prob
        self._users: dict[str, str | None] = {}
        self._answers: dict[str, int] = {}  # per session, how many answers it reacted to
        self._n_reactions = 0
        self._clock_ms = start_ms
        self._n_sessions = 0
        self._n_events = 0
        self._ids = [str(item["item_id"]) for item in catalog]
        self._category = {str(i["item_id"]): str(i["category"]) for i in catalog}
        self._price = {str(i["item_id"]): float(cast(float, i["price"])) for i in catalog}
        self._in_stock = {str(i["item_id"]): bool(i["in_stock"]) for i in catalog}

        ranking = self._ids[:]
        self._rng.shuffle(ranking)
        weight = {item: (rank + 1) ** -ZIPF_EXPONENT for rank, item in enumerate(ranking)}
        self._by_category: dict[str, list[str]] = {}
        for item in self._ids:
            self._by_category.setdefault(self._category[item], []).append(item)
        self._categories = list(self._by_category)
        self._weights = {c: [weight[i] for i in items] for c, items in self._by_category.items()}
        self._all_weights = [weight[i] for i in self._ids]

        self.complements: dict[str, list[str]] = {}
        for item in self._ids:
            self.complements[item] = self._pick_complements(item)

    def _pick_complements(self, item: str) -> list[str]:
        own = self._category[item]
        same = [i for i in self._by_category[own] if i != item]
        other = [i for i in self._ids if self._category[i] != own]
        chosen: list[str] = []
        for _ in range(self._rng.randint(1, 3)):
            # Mostly cross-category (tent -> lantern): that is what co-views alone would miss.
            pool = other if other and (not same or self._rng.random() < 0.8) else same
            pool = [i for i in pool if i not in chosen]
            if pool:
                chosen.append(self._rng.choice(pool))
        return chosen

    def complement_pairs(self) -> list[tuple[str, str]]:
        """Every (item, complement) pair the shoppers are inclined to buy together."""
        return [(item, other) for item, others in self.complements.items() for other in others]

    def session(self) -> list[dict[str, object]]:
        """One session's events in time order; the next session starts after this one ends."""
        events = self._session_at(self._clock_ms)
        self._clock_ms = cast(int, events[-1]["ts"]) + self._rng.randint(*_GAP_MS)
        return events

    def stream(
        self, n_sessions: int | None = None, concurrency: int = 20
    ) -> Iterator[dict[str, object]]:
        """Events of `concurrency` overlapping sessions in global ts order; None means endless.

        A finished session is replaced by a new one that starts after it, so about
        `concurrency` shoppers are active at any time, like a real shop.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if n_sessions is not None and n_sessions < 0:
            raise ValueError(f"n_sessions must be >= 0 or None, got {n_sessions}")
        started = 0
        # (ts of next event, start order, session events, index); the start order breaks ties
        # deterministically and keeps the lists from ever being compared.
        heap: list[tuple[int, int, list[dict[str, object]], int]] = []

        def start(at_ms: int) -> None:
            nonlocal started
            events = self._session_at(at_ms)
            started += 1
            heapq.heappush(heap, (cast(int, events[0]["ts"]), started, events, 0))

        first = concurrency if n_sessions is None else min(concurrency, n_sessions)
        for _ in range(first):
            # Staggered arrivals, so the opening minute is not every shopper at once.
            start(self._clock_ms + self._rng.randint(0, _GAP_MS[1]))
        while heap:
            ts, order, events, index = heapq.heappop(heap)
            self._clock_ms = max(self._clock_ms, ts)
            yield events[index]
            if index + 1 < len(events):
                heapq.heappush(heap, (cast(int, events[index + 1]["ts"]), order, events, index + 1))
            elif n_sessions is None or started < n_sessions:
                start(ts + self._rng.randint(*_GAP_MS))

    def react(self, answer: Mapping[str, Any]) -> list[dict[str, object]]:
        """A shopper's reaction to a recommendation (a reco-responses value): with the click
        probability of the answer's variant (`click_prob`, by name or a function of it), a
        click on one of its first items naming its recommendation_id; else nothing."""
        items = answer.get("items") or []
        if self.click_prob is None or not items:
            return []
        variant = answer.get("variant")
        prob = (
            self.click_prob(variant)
            if callable(self.click_prob)
            else self.click_prob.get(str(variant), 0.0)
        )
        session_id = str(answer["session_id"])
        n = self._answers[session_id] = self._answers.get(session_id, 0) + 1
        if len(self._answers) > _KNOWN_SESSIONS:
            del self._answers[next(iter(self._answers))]
        # Its own generator per session and answer: the sessions stay what the seed makes them,
        # and a shopper's reaction does not depend on the order answers arrive in.
        rng = random.Random(f"react-{self._seed}-{session_id}-{n}")
        if rng.random() >= prob:
            return []
        pick = rng.choice(items[:REACT_TOP])
        self._n_reactions += 1
        return [
            {
                "event_id": f"{self.run_id}-r{self._n_reactions}",
                "type": "click",
                "session_id": session_id,
                "user_id": self._users.get(session_id),
                "item_id": str(pick["item_id"]),
                "ts": self._clock_ms + rng.randint(*_GAP_MS),
                "recommendation_id": answer.get("recommendation_id"),
            }
        ]

    def _draw(self, category: str | None) -> str:
        if category is None:
            return self._rng.choices(self._ids, weights=self._all_weights)[0]
        return self._rng.choices(self._by_category[category], weights=self._weights[category])[0]

    def _event(self, kind: str, sid: str, item: str, ts: int) -> dict[str, object]:
        event: dict[str, object] = {"event_id": f"{self.run_id}-e{self._n_events}", "type": kind}
        event.update(session_id=sid, user_id=None, item_id=item, ts=ts)
        self._n_events += 1
        if kind == "add_to_cart":
            event.update(quantity=1, price=self._price[item])
        return event

    def _bot_at(self, start_ms: int) -> list[dict[str, object]]:
        """One bot session (a kind of BOT_KINDS), drawn from the storefront's generator."""
        rng, kind = self._rng, self._rng.choice(BOT_KINDS)
        session_id = f"{self.run_id}-s{self._n_sessions}"
        self._n_sessions += 1
        self.bots[session_id] = kind
        if len(self.bots) > _KNOWN_SESSIONS:
            del self.bots[next(iter(self.bots))]
        n = rng.randint(150, 400)
        if kind == "crawler":
            first = rng.randrange(len(self._ids))
            plan = [("view", self._ids[(first + i) % len(self._ids)]) for i in range(n)]
        elif kind == "cart_spammer":
            stocked = [i for i in self._ids if self._in_stock[i]] or self._ids
            plan = [("add_to_cart", rng.choice(stocked)) for _ in range(n // 3)]
        else:
            plan = [("view", self._draw(None))] * n
        events, ts = [], start_ms
        for kind_, item in plan:
            events.append(self._event(kind_, session_id, item, ts))
            ts += rng.randint(*_BOT_GAP_MS)
        return events

    def shilling(
        self,
        target: str,
        lure: str,
        n_sessions: int = 20,
        rounds: int = 50,
        start_ms: int = 0,
        gap_ms: tuple[int, int] = _BOT_GAP_MS,
    ) -> list[dict[str, object]]:
        """A shilling attack: `n_sessions` fake sessions, each viewing the popular `lure` then
        the `target` `rounds` times, `gap_ms` (low, high) apart: machine pace by default, a
        person's with seconds, so the target looks bought together with the lure. Its own
        generator (the shoppers' sessions stay what the seed makes them); events in time order,
        from `start_ms` (default: the storefront's clock)."""
        rng = random.Random(f"shill-{self._seed}-{target}")
        start = start_ms or self._clock_ms
        events: list[dict[str, object]] = []
        for s in range(n_sessions):
            sid, ts = f"{self.run_id}-shill{s}", start + rng.randint(0, 120_000)
            for _ in range(rounds):
                for item in (lure, target):
                    events.append(self._event("view", sid, item, ts))
                    ts += rng.randint(*gap_ms)
        return sorted(events, key=lambda e: cast(int, e["ts"]))

    def _session_at(self, start_ms: int) -> list[dict[str, object]]:
        rng = self._rng
        # Drawn only when bots are asked for: a bot-free stream stays what it always was.
        if self.bot_share > 0 and rng.random() < self.bot_share:
            return self._bot_at(start_ms)
        session_id = f"{self.run_id}-s{self._n_sessions}"
        self._n_sessions += 1
        user_id = None if rng.random() < 0.5 else f"user-{rng.randrange(_N_USERS)}"
        self._users[session_id] = user_id
        if len(self._users) > _KNOWN_SESSIONS:
            del self._users[next(iter(self._users))]  # the oldest session has long ended
        focus = rng.sample(self._categories, min(len(self._categories), rng.randint(1, 2)))
        events: list[dict[str, object]] = []
        ts = start_ms
        cart: dict[str, int] = {}

        def emit(kind: str, item: str, quantity: int | None = None) -> None:
            nonlocal ts
            if events:
                ts += rng.randint(*_GAP_MS)
            event: dict[str, object] = {
                "event_id": f"{self.run_id}-e{self._n_events}",
                "type": kind,
                "session_id": session_id,
                "user_id": user_id,
                "item_id": item,
                "ts": ts,
            }
            self._n_events += 1
            if quantity is not None:
                event["quantity"] = quantity
            if kind in ("add_to_cart", "purchase"):
                event["price"] = self._price[item]
            event["recommendation_id"] = None
            events.append(event)

        def add(item: str) -> bool:
            # Out-of-stock items can be looked at but never bought.
            if not self._in_stock[item] or item in cart:
                return False
            cart[item] = 1 if rng.random() < 0.8 else rng.randint(2, 3)
            emit("add_to_cart", item, cart[item])
            return True

        n_interactions = rng.randint(2, 12)
        adds: set[int] = set()
        if rng.random() < 0.4:
            adds = set(rng.sample(range(n_interactions), min(n_interactions, rng.randint(1, 3))))
        for position in range(n_interactions):
            item = self._draw(rng.choice(focus) if rng.random() < 0.85 else None)
            emit("click" if rng.random() < 0.3 else "view", item)
            if position in adds and add(item) and self.complements[item]:
                # The complement step is what makes "bought together" learnable.
                complement = rng.choice(self.complements[item])
                emit("view", complement)
                if rng.random() < 0.6:
                    add(complement)
        if cart and rng.random() < 0.05:
            dropped = rng.choice(list(cart))
            emit("remove_from_cart", dropped, cart.pop(dropped))
        if cart and rng.random() < 0.35:
            for item, quantity in cart.items():
                emit("purchase", item, quantity)
        return events
