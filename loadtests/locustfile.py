"""Locust load test of stream-reco: storefront clickstream, Kafka requests, HTTP requests.

Run `locust -f loadtests/locustfile.py --help` for the stream-reco options; loadtests/README.md
shows headless, web-UI and remote-cluster runs.
"""

from __future__ import annotations

import time
from typing import Any

import reco_load
from locust import HttpUser, User, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from stream_reco.config import Settings

PROCESS = reco_load.PROCESS


@events.init_command_line_parser.add_listener
def _add_options(parser: Any, **_: Any) -> None:
    reco_load.add_arguments(parser)


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    """The catalogue once per run (master or local runner), a Kafka client per load process."""
    options = environment.parsed_options
    settings, kafka = reco_load.settings_from(options), reco_load.kafka_config(options)
    if not isinstance(environment.runner, WorkerRunner) and not options.skip_catalog:
        reco_load.publish_catalog(settings, options.catalog_items, kafka)
    if not isinstance(environment.runner, MasterRunner):
        PROCESS.start(environment, settings, options.reco_timeout, kafka)


@events.test_stop.add_listener
def _stop(environment: Environment, **_: Any) -> None:
    PROCESS.stop()


class StorefrontUser(User):
    """Shoppers: a stream of overlapping simulated sessions, each event stamped now."""

    weight = 3
    wait_time = between(0.05, 0.25)

    def on_start(self) -> None:
        self.shop = reco_load.storefront(self.environment.parsed_options.catalog_items)

    @task
    def browse(self) -> None:
        event = next(self.shop)
        # A live shop stamps events now; the simulator's own clock runs much faster.
        event["ts"] = int(time.time() * 1000)
        PROCESS.track(event)
        reco_load.RECENT_SESSIONS.append(str(event["session_id"]))


class ServiceUser(User):
    """A backend asking over Kafka for recommendations for sessions shoppers are in."""

    weight = 2
    wait_time = between(0.1, 0.5)

    @task
    def recommend(self) -> None:
        PROCESS.recommend(reco_load.pick_session(), self.environment.parsed_options.k)


class WebUser(HttpUser):
    """A page asking the worker's HTTP endpoint; --host overrides the local default."""

    weight = 1
    wait_time = between(0.1, 0.5)
    host = f"http://127.0.0.1:{Settings.from_env().web_port}"

    @task
    def recommendations(self) -> None:
        params = {"session_id": reco_load.pick_session(), "k": self.environment.parsed_options.k}
        with self.client.get(
            "/recommendations", params=params, name="/recommendations", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                body = response.json()
            except ValueError:
                response.failure(f"body is not JSON: {response.text[:200]}")
                return
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                response.failure(f"body without an items list: {response.text[:200]}")
