"""Counters every process adds to, kept in the store, shown at ``/metrics`` and by ``mpbot stats``.

The figures live in the store (one Redis hash, or this process's memory in embedded mode), not
in each process: any number of gunicorn workers and RQ workers on any number of hosts add to the
same counters, and any web process shows them all. ``/metrics`` renders them in Prometheus's text
format with the official client library (``prometheus_client``).

| metric                              | type      | labels               |
|-------------------------------------|-----------|----------------------|
| mpbot_deliveries_total              | counter   | outcome, delivery    |
| mpbot_llm_seconds                   | histogram | (whole model call)   |
| mpbot_llm_first_text_seconds        | histogram | (until the first text)|
| mpbot_llm_errors_total              | counter   | kind                 |
| mpbot_media_total                   | counter   | kind, outcome        |
| mpbot_answers_in_flight             | gauge     | state (queued/running)|
| mpbot_sessions_started_total        | counter   |                      |
| mpbot_keyword_replies_total         | counter   |                      |
| mpbot_pages_viewed_total            | counter   | page (answer/history)|
| mpbot_pushes_total                  | counter   | outcome              |
| mpbot_wechat_token_fetches_total    | counter   |                      |

Delivery outcomes: ``answered`` (the answer, on delivery 1, 2 or 3), ``fallback`` (the last
delivery sent the text so far and the link), ``fetched`` (the message delivered an earlier
answer), ``reply`` (a command's or the bot's own reply), ``error`` (the answer failed),
``silent`` (kept until WeChat dropped it, to be retried), ``lost`` (the first delivery failed).

Media outcomes: ``ok``, or the kind of failure the subscriber was told about (``picture_expired``,
``voice_failed``, ...; see media.py). A picture fetched again for a question after it counts again.

Push outcomes (verified accounts, ``push.py``): ``sent``, or why a customer-service message did
not go (``no_permission``, ``window_expired``, ``quota_used``, ``unreachable``, ...).
"""

import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from . import green
from .errors import StoreError

log = logging.getLogger(__name__)

# Seconds a count may wait for Redis (under gevent) before it is dropped.
WAIT = 0.5

BUCKETS = (0.5, 1, 2, 3, 5, 8, 10, 12, 15, 20, 30, 60, 120)

COUNTERS = {
    "deliveries": (
        "mpbot_deliveries",
        "WeChat deliveries handled, by outcome and delivery number",
        ["outcome", "delivery"],
    ),
    "llm_errors": ("mpbot_llm_errors", "Model calls that failed, by kind", ["kind"]),
    "media": (
        "mpbot_media",
        "Pictures and voice messages made ready for the model, by kind (picture, voice) and outcome (ok, or why not)",
        ["kind", "outcome"],
    ),
    "refused": (
        "mpbot_requests_refused",
        "Requests to /wechat refused, by reason (signature, stale, replay, plaintext, malformed, too_large)",
        ["reason"],
    ),
    "sessions_started": ("mpbot_sessions_started", "Chat sessions started with the start command", []),
    "keyword_replies": (
        "mpbot_keyword_replies",
        "Messages answered by the account's own keyword rules (MPBOT_RULES), with no model call",
        [],
    ),
    "pages_viewed": ("mpbot_pages_viewed", "Answer and history pages opened", ["page"]),
    "pushes": ("mpbot_pushes", "Customer-service messages pushed with late answers, by outcome", ["outcome"]),
    "wechat_token_fetches": ("mpbot_wechat_token_fetches", "access_token fetches from WeChat (all processes)", []),
}
HISTOGRAMS = {
    "llm_seconds": ("mpbot_llm_seconds", "Model call time, question sent to answer complete"),
    "llm_first_text_seconds": ("mpbot_llm_first_text_seconds", "Model call time until the first text"),
}


def field(name: str, **labels) -> str:
    """A counter's field in the store: ``name|key=value,key=value`` (labels sorted)."""
    return name + "|" + ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def parse_field(text: str) -> tuple[str, dict[str, str]]:
    name, _, labels = text.partition("|")
    return name, dict(pair.split("=", 1) for pair in labels.split(",") if pair)


class Metrics:
    """The counters in the store (``keys.metrics``, kept ``MPBOT_METRICS_TTL`` after their last
    change). A failure to count never breaks what is counted."""

    def __init__(self, config, store, keys) -> None:
        self.store = store
        self.key = keys.metrics()
        self.ttl = config.MPBOT_METRICS_TTL

    def _add(self, amounts: dict[str, float]) -> None:
        # A count is not worth a delivery's time: in a gevent process it is written by a greenlet
        # of its own, after the reply has gone, and one that Redis does not take within WAIT
        # seconds is dropped.
        if green.patched():
            import gevent

            gevent.spawn(self._write, amounts)
        else:
            self._write(amounts)

    def _write(self, amounts: dict[str, float]) -> None:
        try:
            with green.store_deadline(WAIT, "a count"):
                self.store.add(self.key, amounts, self.ttl)
        except StoreError as exc:
            log.debug("metrics not counted: %s", exc)

    def count(self, name: str, **labels) -> None:
        self._add({field(name, **labels): 1})

    def observe(self, name: str, seconds: float) -> None:
        amounts = {field(name, le=str(bound)): 1 for bound in BUCKETS if seconds <= bound}
        amounts[field(name, le="+Inf")] = 1
        amounts[field(name, stat="sum")] = seconds
        self._add(amounts)

    def read(self) -> dict[str, float]:
        return self.store.counters(self.key)


class Collector:
    """Reads the counters from the store for ``prometheus_client``."""

    def __init__(self, metrics: Metrics, runner) -> None:
        self.metrics = metrics
        self.runner = runner

    def collect(self):
        raw = self.metrics.read()
        families = {key: CounterMetricFamily(name, doc, labels=labels) for key, (name, doc, labels) in COUNTERS.items()}
        histograms: dict[str, dict] = {key: {"buckets": {}, "sum": 0.0} for key in HISTOGRAMS}
        for text, value in sorted(raw.items()):
            name, labels = parse_field(text)
            if name in families:
                families[name].add_metric([labels.get(key, "") for key in COUNTERS[name][2]], value)
            elif name in histograms:
                if labels.get("stat") == "sum":
                    histograms[name]["sum"] = value
                else:
                    histograms[name]["buckets"][labels["le"]] = value
        yield from families.values()
        for key, (name, doc) in HISTOGRAMS.items():
            buckets = histograms[key]["buckets"]
            # Stored per bucket as "at most this long", which is already cumulative.
            pairs = [(str(float(bound)), buckets.get(str(bound), 0)) for bound in BUCKETS]
            pairs.append(("+Inf", buckets.get("+Inf", 0)))
            yield HistogramMetricFamily(name, doc, buckets=pairs, sum_value=histograms[key]["sum"])
        in_flight = GaugeMetricFamily(
            "mpbot_answers_in_flight", "Answers waiting for a job slot or being written", labels=["state"]
        )
        queued, running = self.runner.in_flight()
        in_flight.add_metric(["queued"], queued)
        in_flight.add_metric(["running"], running)
        yield in_flight


def registry(metrics: Metrics, runner) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(metrics, runner))
    return registry
