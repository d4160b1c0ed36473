"""``python -m mpbot stats``: the /metrics figures as a table an admin can read.

With Redis the figures come straight from the store (every process's counts); in embedded mode
they live in the running bot's memory, so they are read from its ``/metrics``.
"""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .metrics import BUCKETS
from .simulator import http_only

OUTCOMES = ("answered", "fallback", "fetched", "reply", "error", "silent", "lost")


def samples_from_store(config) -> tuple[dict, dict]:
    """The samples, and RQ's own figures (workers, failed jobs)."""
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry

    from .jobs import RQRunner
    from .keys import Keys
    from .metrics import Metrics, registry
    from .store import RedisStore

    store = RedisStore(config)
    try:
        runner = RQRunner(config, store)
        samples = _samples(registry(Metrics(config, store, Keys(config.MPBOT_KEY_PREFIX)), runner).collect())
        queue = Queue(config.MPBOT_QUEUE, connection=store.rq_redis)
        rq = {"workers": len(Worker.all(queue=queue)), "failed": FailedJobRegistry(queue=queue).count}
    finally:
        store.close()
    return samples, rq


def samples_from_url(url: str, token: str = "") -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(http_only(url), headers=headers)  # noqa: S310 (http_only checked it)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (as above)
        return _samples(text_string_to_metric_families(response.read().decode()))


def _samples(families) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def _sum(samples: dict, name: str, **labels) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


def _quantile(samples: dict, name: str, q: float) -> str:
    total = _sum(samples, f"{name}_count")
    if not total:
        return "-"
    for bound in BUCKETS:
        if _sum(samples, f"{name}_bucket", le=str(float(bound))) >= q * total:
            return f"<= {bound:g} s"
    return f"> {BUCKETS[-1]:g} s"


def _labels_of(samples: dict, name: str, label: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name and value:
            key = dict(labels).get(label, "")
            values[key] = values.get(key, 0) + value
    return values


def table(samples: dict, rq: dict | None = None) -> list[tuple[str, str]]:
    deliveries = "mpbot_deliveries_total"
    rows = [("deliveries", f"{_sum(samples, deliveries):g}")]
    for outcome in OUTCOMES:
        count = _sum(samples, deliveries, outcome=outcome)
        if outcome == "answered" and count:
            each = ", ".join(f"{n}: {_sum(samples, deliveries, outcome=outcome, delivery=str(n)):g}" for n in (1, 2, 3))
            rows.append((f"  {outcome}", f"{count:g} (on delivery {each})"))
        else:
            rows.append((f"  {outcome}", f"{count:g}"))
    answered = _sum(samples, deliveries, outcome="answered")
    ended = answered + _sum(samples, deliveries, outcome="fallback") + _sum(samples, deliveries, outcome="error")
    share = f"{100 * answered / ended:.1f}%" if ended else "-"
    rows.append(("answered in the window", f"{share} of questions"))
    calls = _sum(samples, "mpbot_llm_seconds_count")
    mean = f", mean {_sum(samples, 'mpbot_llm_seconds_sum') / calls:.1f} s" if calls else ""
    rows.append(("model calls", f"{calls:g}{mean}"))
    rows.append(
        (
            "  time, p50 / p90",
            f"{_quantile(samples, 'mpbot_llm_seconds', 0.5)} / {_quantile(samples, 'mpbot_llm_seconds', 0.9)}",
        )
    )
    rows.append(("  first text, p50", _quantile(samples, "mpbot_llm_first_text_seconds", 0.5)))
    errors = _labels_of(samples, "mpbot_llm_errors_total", "kind")
    rows.append(("model errors", ", ".join(f"{kind} {count:g}" for kind, count in sorted(errors.items())) or "none"))
    rows.append(
        (
            "answers in flight",
            f"queued {_sum(samples, 'mpbot_answers_in_flight', state='queued'):g}, "
            f"running {_sum(samples, 'mpbot_answers_in_flight', state='running'):g}",
        )
    )
    rows.append(("sessions started", f"{_sum(samples, 'mpbot_sessions_started_total'):g}"))
    pages = _labels_of(samples, "mpbot_pages_viewed_total", "page")
    rows.append(("pages viewed", ", ".join(f"{page} {count:g}" for page, count in sorted(pages.items())) or "none"))
    pushes = _labels_of(samples, "mpbot_pushes_total", "outcome")
    if pushes:
        sent = pushes.pop("sent", 0)
        failed = ", ".join(f"{reason} {count:g}" for reason, count in sorted(pushes.items()))
        rows.append(("pushed messages", f"{sent:g} sent" + (f", not sent: {failed}" if failed else "")))
        rows.append(("access_token fetches", f"{_sum(samples, 'mpbot_wechat_token_fetches_total'):g}"))
    if rq is not None:
        rows.append(("RQ", f"{rq['workers']} workers, {rq['failed']} failed jobs (see `rq info`)"))
    return rows


def render(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
