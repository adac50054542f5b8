"""The one key builder: every Redis key stream-reco uses is made here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key layout `<prefix>:<scope>:{<id>}:<name>`: the hash tag keeps a session's (an item's,
    the shop-wide) keys in one Redis Cluster slot, so each can be updated by one atomic script
    when the store is sharded."""

    prefix: str

    def session(self, session_id: str, name: str) -> str:
        return f"{self.prefix}:s:{{{session_id}}}:{name}"

    def item(self, item_id: str, name: str) -> str:
        return f"{self.prefix}:i:{{{item_id}}}:{name}"

    def item_pattern(self, name: str) -> tuple[str, str]:
        """Prefix and suffix that wrap an item id, for scripts that build item keys."""
        return f"{self.prefix}:i:{{", f"}}:{name}"

    def session_pattern(self) -> tuple[str, str]:
        """What wraps a session id; a script appends the name (`recent`, `cart`, ...)."""
        return f"{self.prefix}:s:{{", "}:"

    def user(self, user_id: str, name: str) -> str:
        # A user's keys (profile, sessions, marks) share the user's slot, not a session's:
        # they are updated in their own step after the events (storage/profiles.py).
        return f"{self.prefix}:u:{{{user_id}}}:{name}"

    def user_pattern(self) -> tuple[str, str]:
        """What wraps a user id; a script appends the name (`profile`, ...)."""
        return f"{self.prefix}:u:{{", "}:"

    def global_(self, name: str) -> str:
        # One hash tag for every shop-wide key: on a Redis Cluster they share one slot, so a
        # batch's shop-wide effects (popularity, clock, offsets) are one atomic step.
        return f"{self.prefix}:g:{{g}}:{name}"

    def legacy_global(self, name: str) -> str:
        """What versions before the {g} tag named a shop-wide key (storage/layout.py)."""
        return f"{self.prefix}:g:{name}"

    def vectors(self, name: str) -> str:
        # One hash tag for the vector hash and its change log: one MULTI writes both.
        return f"{self.prefix}:g:{{vectors}}:{name}"

    def experiment(self, name: str, part: str) -> str:
        # One hash tag per experiment: its counters and session records are updated by one
        # script per batch, which a Redis Cluster runs only on keys of one slot.
        return f"{self.prefix}:x:{{x:{name}}}:{part}"

    def all_pattern(self) -> str:
        return f"{self.prefix}:*"
