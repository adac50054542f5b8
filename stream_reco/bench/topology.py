"""The deployments the bench measures (`all` workers, or `ingest` workers beside one `query`
worker): the roles each runs and the consumer groups that must be settled before a window."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from stream_reco.config import Settings
from stream_reco.errors import ConfigError

TOPOLOGIES = ("all", "split")
CHOICES = (*TOPOLOGIES, "both")
INGESTING = ("all", "ingest")
ANSWERING = ("all", "query")
# The workers the latency windows run against, per topology (recorded in the report).
LATENCY_ROLES: dict[str, tuple[str, ...]] = {"all": ("all",), "split": ("ingest", "query")}


def topologies(choice: str) -> tuple[str, ...]:
    """The topologies a `--topology` choice measures, in the order they run."""
    if choice not in CHOICES:
        raise ConfigError(f"--topology {choice!r}: choose one of {', '.join(CHOICES)}")
    return TOPOLOGIES if choice == "both" else (choice,)


def ingest_role(topology: str) -> str:
    """The role the ingest scenario scales in `topology`."""
    return "all" if topology == "all" else "ingest"


def check_roles(roles: Sequence[str]) -> None:
    if "all" in roles and "query" in roles:
        # They would share the requests between them: the figures would be of neither.
        raise ConfigError(
            "the bench runs one topology at a time: stop the `all` workers before starting "
            "a `query` worker, and the other way round"
        )


@dataclass(frozen=True)
class Need:
    """A consumer group that must be stable with `members` members that own every
    partition of `topic` between them (a rebalance would stall what a window measures);
    without a topic, stable with `members` members is enough."""

    group: str
    topic: str | None
    members: int


def needs(settings: Settings, roles: Sequence[str]) -> list[Need]:
    """What must be settled for workers of `roles` to be measured: the events and requests
    groups (librdkafka consumers shared by every worker that ingests or answers), and the
    Faust groups (catalogue and rules for `all` and `ingest`; a `query` worker's own)."""
    check_roles(roles)
    out: list[Need] = []
    ingesting = sum(r in INGESTING for r in roles)
    answering = sum(r in ANSWERING for r in roles)
    if ingesting:
        out.append(Need(settings.events_group, settings.topic_events, ingesting))
        out.append(Need(faust_group(settings, "ingest"), settings.topic_catalog, ingesting))
    if answering:
        out.append(Need(settings.requests_group, settings.topic_requests, answering))
    if "query" in roles:
        out.append(Need(faust_group(settings, "query"), None, roles.count("query")))
    return out


def faust_group(settings: Settings, role: str) -> str:
    return dataclasses.replace(settings, role=role).faust_app_id


def unsettled(admin: AdminClient, partitions: int, wanted: Sequence[Need]) -> dict[str, str]:
    """The needs not met yet, each with what its group looks like now (empty: all met)."""
    if not wanted:
        return {}
    described = admin.describe_consumer_groups(sorted({n.group for n in wanted}))
    groups = {group_id: fut.result() for group_id, fut in described.items()}
    out: dict[str, str] = {}
    for need in wanted:
        group = groups[need.group]
        owned = [
            sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == need.topic)
            for m in group.members
        ]
        covered = need.topic is None or len({p for ps in owned for p in ps}) == partitions
        if not (
            group.state == ConsumerGroupState.STABLE
            and len(group.members) == need.members
            and covered
        ):
            out[f"{need.group} on {need.topic}"] = (
                f"{group.state.name}, {len(group.members)}/{need.members} members, "
                f"partitions per member {owned}"
            )
    return out
