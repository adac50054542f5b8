"""Session state: what one shopping session has done so far, as a request reads it."""

from __future__ import annotations

from dataclasses import dataclass, field

TYPE_RANK = {"view": 0, "click": 1, "remove_from_cart": 1, "add_to_cart": 2, "purchase": 3}
CART_TYPES = frozenset({"add_to_cart", "remove_from_cart"})


@dataclass(frozen=True, slots=True)
class Interaction:
    item_id: str
    type: str
    ts: int


@dataclass(frozen=True)
class SessionView:
    """A session as stored: recent interactions (newest first), cart, purchases, counters."""

    session_id: str
    recent: tuple[Interaction, ...] = ()
    cart: dict[str, int] = field(default_factory=dict)
    purchased: frozenset[str] = frozenset()
    events: int = 0
    user_id: str | None = None
    last_ts: int | None = None

    def strongest(self) -> list[Interaction]:
        """One entry per distinct item, newest first, carrying the item's current standing:
        in the cart now -> add_to_cart; added and taken out again -> view; otherwise its
        strongest type. The cart is the truth, not the event history, so every source and
        reason reads the same standing. Cart items older than the recent list come last, at
        the oldest remembered time."""
        best: dict[str, Interaction] = {}  # insertion order: newest first
        for it in self.recent:
            have = best.get(it.item_id)
            if have is None:
                best[it.item_id] = it
            elif TYPE_RANK[it.type] > TYPE_RANK[have.type]:
                best[it.item_id] = Interaction(it.item_id, it.type, have.ts)
        out = [self._standing(it) for it in best.values()]
        oldest = self.recent[-1].ts if self.recent else (self.last_ts or 0)
        # A cart item outlives the recent-events cap: it was added before anything remembered.
        out += [Interaction(i, "add_to_cart", oldest) for i in self.cart if i not in best]
        return out

    def _standing(self, it: Interaction) -> Interaction:
        if it.item_id in self.cart:
            kind = "add_to_cart"
        elif it.type in CART_TYPES:
            kind = "view"  # taken out of the cart again: still a sign of interest, no more
        else:
            return it
        return it if it.type == kind else Interaction(it.item_id, kind, it.ts)

    def to_json(self) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "events": self.events,
            "last_ts": self.last_ts,
            "cart": self.cart,
            "purchased": sorted(self.purchased),
            "recent": [[i.item_id, i.type, i.ts] for i in self.recent],
        }


# Fields of a stored interaction are joined by the unit separator: ids never hold control
# characters (events.py rejects them), and the event script splits this far faster than JSON.
SEP = "\x1f"


def entry(item_id: str, event_type: str, ts: int) -> bytes:
    """How one interaction is stored in the session's recent list: `item SEP type SEP ts`."""
    return f"{item_id}{SEP}{event_type}{SEP}{ts}".encode()


def parse_entry(raw: bytes) -> Interaction:
    item_id, event_type, ts = raw.decode().split(SEP)
    return Interaction(item_id, event_type, int(ts))


def parse_session(
    session_id: str,
    recent: list[bytes],
    cart: dict[bytes, bytes],
    bought: set[bytes],
    info: dict[bytes, bytes],
) -> SessionView:
    items = tuple(parse_entry(raw) for raw in recent)
    user = info.get(b"user_id")
    last = info.get(b"last_ts")
    return SessionView(
        session_id=session_id,
        recent=items,
        cart={k.decode(): int(v) for k, v in cart.items()},
        purchased=frozenset(b.decode() for b in bought),
        events=int(info.get(b"events", b"0")),
        user_id=user.decode() if user else None,
        last_ts=int(last) if last else None,
    )
