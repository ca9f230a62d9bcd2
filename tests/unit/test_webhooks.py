"""Client webhooks on fakes: Standard Webhooks signatures (checked by the reference library),
retry schedule and Retry-After, disabling on 410, SSRF refusal, a temporary DNS failure retried
(a name that does not exist refused), https:// only in production,
malformed URLs refused by name (at registration, and at send time for one stored before the rule;
a property test over arbitrary text), one delivery per event."""

from __future__ import annotations

import asyncio
import random
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from meridian.app import webhooks
from meridian.config import Settings
from meridian.domain import events as ev
from meridian.domain.errors import PermissionDenied, Unavailable, ValidationError
from services.reactors.webhook import handlers
from services.reactors.webhook.worker import Worker
from tests.fakes import FakeDocumentStore
from tests.fakes_reactors import FakeWebhookSender

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LOCAL = webhooks.WebhookPolicy(webhooks.AllowList.parse("127.0.0.0/8"))
EVENT = ev.ShipmentCreated(
    event_id="evt-1", occurred_at=T0, shipment_id="s-1", client_id="c-1", parcel_ids=("p",)
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _setup(
    statuses: list[int], headers: dict[str, str] | None = None
) -> tuple[handlers.Deps, FakeWebhookSender, dict, Clock]:  # type: ignore[type-arg]
    clock = Clock()
    sender = FakeWebhookSender(statuses, headers)
    deps = handlers.Deps(FakeDocumentStore(), sender, LOCAL, clock)
    endpoint = webhooks.register_endpoint(
        deps.store, "c-1", "http://127.0.0.1:1/hook", [], LOCAL, T0
    )
    return deps, sender, endpoint, clock


def _run_due(deps: handlers.Deps) -> list[str]:
    return [handlers.attempt(path, deps) for path in handlers.due(deps)]


def test_signed_delivery_verifies_with_the_reference_library_and_is_sent_once() -> None:
    deps, sender, endpoint, clock = _setup([200])
    clock.now = datetime.now(UTC)  # the reference library refuses timestamps older than 5 minutes
    assert endpoint["secret"].startswith("whsec_")
    handlers.enqueue(EVENT, deps)
    handlers.enqueue(EVENT, deps)  # redelivered push: still one delivery
    assert _run_due(deps) == ["delivered"]
    assert _run_due(deps) == []
    ((_, headers, body),) = sender.requests
    verified = Webhook(endpoint["secret"]).verify(body, headers)  # raises if the signature is wrong
    assert verified["data"]["shipment_id"] == "s-1" and headers["webhook-id"] == "evt-1"


def test_a_500_is_retried_after_the_schedule_with_the_same_webhook_id() -> None:
    deps, sender, _, clock = _setup([500, 200])
    handlers.enqueue(EVENT, deps)
    assert _run_due(deps) == ["retry scheduled"]
    clock.now += timedelta(seconds=4)
    assert _run_due(deps) == []  # 5 s ± 10 % not yet elapsed
    clock.now += timedelta(seconds=2)
    assert _run_due(deps) == ["delivered"]
    ids = [h["webhook-id"] for _, h, _ in sender.requests]
    assert ids == ["evt-1", "evt-1"]
    log = webhooks.delivery_log(deps.store, "c-1", _endpoint_id(deps))
    assert [e["status"] for e in log[0]["log"]] == [500, 200]


def _endpoint_id(deps: handlers.Deps) -> str:
    return webhooks.list_endpoints(deps.store, "c-1")[0]["webhook_id"]


def test_retry_after_is_honoured_when_longer_than_the_schedule() -> None:
    deps, _, _, clock = _setup([429, 200], {"Retry-After": "120"})
    handlers.enqueue(EVENT, deps)
    _run_due(deps)
    clock.now += timedelta(seconds=60)
    assert _run_due(deps) == []
    clock.now += timedelta(seconds=61)
    assert _run_due(deps) == ["delivered"]


def test_410_disables_the_endpoint_and_replay_reenables_it() -> None:
    deps, _sender, _, clock = _setup([410, 200])
    handlers.enqueue(EVENT, deps)
    assert _run_due(deps) == ["failed"]
    endpoint = webhooks.list_endpoints(deps.store, "c-1")[0]
    assert endpoint["status"] == "disabled" and "410" in endpoint["disabled_reason"]
    assert webhooks.replay(deps.store, "c-1", endpoint["webhook_id"], None, clock.now) == 1
    assert _run_due(deps) == ["delivered"]


def test_an_exhausted_schedule_disables_the_endpoint() -> None:
    deps, sender, _, clock = _setup([503])
    handlers.enqueue(EVENT, deps)
    for _ in range(len(webhooks.RETRY_SCHEDULE_S) + 1):
        _run_due(deps)
        clock.now += timedelta(days=1)
    assert len(sender.requests) == len(webhooks.RETRY_SCHEDULE_S) + 1
    assert webhooks.list_endpoints(deps.store, "c-1")[0]["status"] == "disabled"


def test_schedule_spans_days_with_bounded_jitter() -> None:
    rng = random.Random(7)
    delays = [
        webhooks.retry_delay_s(n, None, rng) for n in range(1, len(webhooks.RETRY_SCHEDULE_S) + 1)
    ]
    assert all(d is not None for d in delays)
    assert 4.5 <= delays[0] <= 5.5 and sum(d for d in delays if d) > 86400
    assert webhooks.retry_delay_s(len(webhooks.RETRY_SCHEDULE_S) + 1, None) is None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/x", "http://localhost/x", "http://10.1.2.3/x", "http://169.254.169.254/latest", "http://[::1]/x",
     "http://192.168.0.1/x", "http://[::ffff:127.0.0.1]/x"],
)  # fmt: skip
def test_internal_destinations_are_refused_unless_allow_listed(url: str) -> None:
    with pytest.raises(PermissionDenied):
        webhooks.check_destination(url, webhooks.WebhookPolicy())


def test_the_allow_list_admits_only_what_it_names() -> None:
    webhooks.check_destination("http://127.0.0.1:8080/x", LOCAL)
    with pytest.raises(PermissionDenied):
        webhooks.check_destination("http://10.0.0.1/x", LOCAL)


# Each malformed URL, and words its refusal must contain (issue #25: these were 500s).
MALFORMED: list[tuple[object, str]] = [
    ("http://127.0.0.2:99999/hook", "port 99999 is out of range"),
    ("http://127.0.0.2:0/hook", "port 0 is out of range"),
    ("http://h:-1/", "port '-1' is not a number"),
    ("http://h:8o/", "port '8o' is not a number"),
    ("http://[::1/hook", "no closing ']'"),
    ("http://[::1]]:80/", "after its IPv6 address"),
    ("http://[::1]x/", "after its IPv6 address"),
    ("http://[not-an-ip]/", "not an IPv6 address"),
    ("http://::1/", "IPv6 address must be in brackets"),
    ("http://h]/", "brackets"),
    ("ftp://x/", "must be http:// or https://"),
    ("HTTP://x/", "lower case"),
    ("//x/hook", "absolute http:// or https:// URL"),
    ("hook.example.com/x", "absolute http:// or https:// URL"),
    ("http:///nohost", "no host"),
    ("http://:80/", "no host"),
    ("http://a..b/", "not a valid host name"),
    ("http://a<b>/", "not a valid host name"),
    ("http://user:pw@host/", "credentials"),
    ("http://token@host/", "credentials"),
    ("http://host/a b", "whitespace or control character"),
    ("http://host/a\nb", "whitespace or control character"),
    ("http://host/\x00", "whitespace or control character"),
    ("http://host/\u2028", "whitespace or control character"),
    ("http://b\u00fccher.example/", "ASCII"),
    ("http://h:\u0661\u0662/", "ASCII"),
    ("http://h/" + "a" * 2048, "at most 2048"),
    ("", "empty"),
    (42, "must be a string, not int"),
    (None, "must be a string, not NoneType"),
    (["http://h/"], "must be a string, not list"),
]


@pytest.mark.parametrize(("url", "problem"), MALFORMED)
def test_a_malformed_url_is_refused_at_registration_naming_the_problem(
    url: Any, problem: str
) -> None:
    store = FakeDocumentStore()
    with pytest.raises(ValidationError) as refused:
        webhooks.register_endpoint(store, "c-1", url, [], LOCAL, T0)
    assert problem in str(refused.value)
    assert webhooks.list_endpoints(store, "c-1") == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/x?a=b#f", ("http", "127.0.0.1", 8080)),
        ("https://Hooks.Example.com/x", ("https", "hooks.example.com", 443)),
        ("http://hooks.example.com:/x", ("http", "hooks.example.com", 80)),
        ("https://[2001:db8::1]:8443", ("https", "2001:db8::1", 8443)),
        ("http://[::ffff:127.0.0.1]/", ("http", "::ffff:127.0.0.1", 80)),
        ("https://xn--bcher-kva.example./a_b", ("https", "xn--bcher-kva.example.", 443)),
    ],
)
def test_a_well_formed_url_names_its_scheme_host_and_port(
    url: str, expected: tuple[str, str, int]
) -> None:
    assert webhooks.parse_url(url) == expected


def test_credentials_in_a_url_are_refused_without_being_repeated() -> None:
    with pytest.raises(ValidationError, match="must not carry credentials") as refused:
        webhooks.parse_url("https://ops:hunter2@hooks.example.com/x")
    assert "hunter2" not in str(refused.value)


def _public_resolver(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
    """getaddrinfo without the network: every name is one public address; encoding the name is
    still checked as the real call checks it."""
    host.encode("idna")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]


_PRINTABLE = st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=9)
# Text, and text shaped like a URL where the parse has most to get wrong: the authority.
_ANY_URL = st.one_of(
    st.text(),
    st.builds(
        "{}://{}{}{}{}".format,
        st.sampled_from(["http", "https"] * 4 + ["HTTP", "ftp", "", "http:"]),
        st.sampled_from([""] * 10 + ["user:pw@", "@"]),
        st.one_of(
            st.text(alphabet=st.sampled_from("abx09.-_:[]%"), max_size=20),
            st.ip_addresses(v=6).map("[{}]".format),
            st.ip_addresses(v=4).map(str),
        ),
        st.one_of(
            st.just(""),
            st.integers(-5, 100_000).map(":{}".format),
            st.text(alphabet=st.sampled_from("0123456789:]["), max_size=7).map(":{}".format),
        ),
        _PRINTABLE.map("/{}".format) | _PRINTABLE,
    ),
)


@settings(max_examples=400, deadline=None)
@given(_ANY_URL)
def test_registration_rules_accept_any_text_or_refuse_it_by_name(text: str) -> None:
    with mock.patch.object(socket, "getaddrinfo", _public_resolver):
        try:
            webhooks.register_endpoint(FakeDocumentStore(), "c-1", text, [], LOCAL, T0)
        except ValidationError as e:
            assert str(e).startswith("webhook ")
            return
    # What registration accepts, the senders' own parse reads as the same destination.
    scheme, host, port = webhooks.parse_url(text)
    parts = urlsplit(text)
    assert (parts.scheme, parts.hostname) == (scheme, host)
    assert (parts.port or webhooks.DEFAULT_PORTS[scheme]) == port


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.2:99999/hook", "port 99999 is out of range"),
        ("http://[::1/hook", "no closing ']'"),
        ("http://[::1]]:80/", "after its IPv6 address"),
        ("http://user:pw@127.0.0.1:1/", "credentials"),
    ],
)
def test_an_endpoint_stored_before_the_url_rules_is_disabled_unsent_naming_the_problem(
    url: str, problem: str
) -> None:
    deps, sender, endpoint, _ = _setup([200])
    deps.store.update(f"{webhooks.ENDPOINTS}/{endpoint['webhook_id']}", {"url": url})
    handlers.enqueue(EVENT, deps)
    assert _run_due(deps) == ["failed"]
    assert sender.requests == []
    disabled = webhooks.get_endpoint(deps.store, "c-1", endpoint["webhook_id"])
    assert disabled["status"] == "disabled"
    assert problem in disabled["disabled_reason"]


class Resolver:
    """getaddrinfo without the network: ``answer`` is the address every name resolves to, or
    the error the lookup raises."""

    def __init__(self) -> None:
        self.answer: str | OSError = "93.184.216.34"
        self.lookups = 0

    def __call__(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.lookups += 1
        if isinstance(self.answer, OSError):
            raise self.answer
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.answer, port))]


TEMPORARY = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
NO_SUCH_NAME = socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize("failure", [TEMPORARY, TimeoutError("resolver timed out")])
def test_a_temporary_dns_failure_at_send_time_is_retried_and_never_disables_the_endpoint(
    failure: OSError,
) -> None:
    resolver = Resolver()
    with mock.patch.object(socket, "getaddrinfo", resolver):
        deps, sender, _, clock = _setup([200])
        endpoint = webhooks.register_endpoint(
            deps.store, "c-2", "https://hooks.example.com/x", [], LOCAL, T0
        )
        handlers.enqueue(EVENT.model_copy(update={"client_id": "c-2"}), deps)
        resolver.answer = failure
        assert _run_due(deps) == ["retry scheduled"]
        assert sender.requests == []
        kept = webhooks.get_endpoint(deps.store, "c-2", endpoint["webhook_id"])
        assert (kept["status"], kept["disabled_reason"]) == ("active", None)
        (entry,) = webhooks.delivery_log(deps.store, "c-2", endpoint["webhook_id"])[0]["log"]
        assert entry["status"] is None and "cannot be resolved just now" in entry["error"]
        resolver.answer = "93.184.216.34"  # the resolver is back: the retry on schedule is sent
        clock.now += timedelta(seconds=6)
        assert _run_due(deps) == ["delivered"]
        assert [url for url, _, _ in sender.requests] == ["https://hooks.example.com/x"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [(NO_SUCH_NAME, "does not resolve"), ("10.1.2.3", "resolves to 10.1.2.3, a private")],
)
def test_a_name_that_no_longer_exists_or_resolves_to_a_refused_address_disables_the_endpoint(
    answer: str | OSError, reason: str
) -> None:
    resolver = Resolver()
    with mock.patch.object(socket, "getaddrinfo", resolver):
        deps, sender, _, _ = _setup([200])
        endpoint = webhooks.register_endpoint(
            deps.store, "c-2", "https://hooks.example.com/x", [], LOCAL, T0
        )
        handlers.enqueue(EVENT.model_copy(update={"client_id": "c-2"}), deps)
        resolver.answer = answer
        assert _run_due(deps) == ["failed"]
    assert sender.requests == []
    disabled = webhooks.get_endpoint(deps.store, "c-2", endpoint["webhook_id"])
    assert disabled["status"] == "disabled" and reason in disabled["disabled_reason"]


def test_registration_in_a_temporary_dns_failure_is_unavailable_not_refused() -> None:
    resolver = Resolver()
    store = FakeDocumentStore()
    url = "https://hooks.example.com/x"
    with mock.patch.object(socket, "getaddrinfo", resolver):
        resolver.answer = TEMPORARY
        with pytest.raises(Unavailable, match="cannot be resolved just now"):
            webhooks.register_endpoint(store, "c-2", url, [], LOCAL, T0)
        resolver.answer = NO_SUCH_NAME
        with pytest.raises(ValidationError, match="does not resolve"):
            webhooks.register_endpoint(store, "c-2", url, [], LOCAL, T0)
    assert webhooks.list_endpoints(store, "c-2") == []


PRODUCTION = webhooks.WebhookPolicy(LOCAL.allow, https_only=True)


def test_production_refuses_plain_http_endpoints_at_registration_naming_the_rule() -> None:
    store = FakeDocumentStore()
    for url in ("http://127.0.0.1:1/hook", "http://hooks.example.com/x"):  # allow-listed or not
        with pytest.raises(ValidationError, match=r"must be https:// in production"):
            webhooks.register_endpoint(store, "c-1", url, [], PRODUCTION, T0)
    assert webhooks.list_endpoints(store, "c-1") == []
    webhooks.register_endpoint(store, "c-1", "https://127.0.0.1:1/hook", [], PRODUCTION, T0)
    assert [e["url"] for e in webhooks.list_endpoints(store, "c-1")] == ["https://127.0.0.1:1/hook"]


def test_plain_http_is_allowed_locally_only_where_the_allow_list_says() -> None:
    store = FakeDocumentStore()
    webhooks.register_endpoint(store, "c-1", "http://127.0.0.1:1/hook", [], LOCAL, T0)
    with pytest.raises(PermissionDenied):
        webhooks.register_endpoint(store, "c-1", "http://10.0.0.1/hook", [], LOCAL, T0)
    assert len(webhooks.list_endpoints(store, "c-1")) == 1


def test_the_policy_is_chosen_from_the_backend() -> None:
    assert webhooks.WebhookPolicy.from_settings(Settings(backend="gcp")).https_only
    assert not webhooks.WebhookPolicy.from_settings(Settings(backend="embedded")).https_only


def test_production_never_sends_to_a_plain_http_endpoint_registered_before_the_rule() -> None:
    deps, sender, endpoint, _ = _setup([200])  # registered as http:// under the local policy
    deps = handlers.Deps(deps.store, sender, PRODUCTION, deps.clock)
    handlers.enqueue(EVENT, deps)
    assert _run_due(deps) == ["failed"]
    assert sender.requests == []
    disabled = webhooks.get_endpoint(deps.store, "c-1", endpoint["webhook_id"])
    assert disabled["status"] == "disabled"
    assert "https:// in production" in disabled["disabled_reason"]


def test_events_go_only_to_endpoints_that_want_their_type() -> None:
    deps, _, _, _ = _setup([200])
    webhooks.register_endpoint(
        deps.store, "c-1", "http://127.0.0.1:2/h", ["ParcelDelivered"], LOCAL, T0
    )
    webhooks.register_endpoint(deps.store, "c-2", "http://127.0.0.1:3/h", [], LOCAL, T0)
    assert len(handlers.enqueue(EVENT, deps)) == 1  # only c-1's catch-all endpoint


def test_due_deliveries_are_claimed_together_once_and_sent_each_once() -> None:
    deps, sender, _endpoint, clock = _setup([200])
    events = [EVENT.model_copy(update={"event_id": f"evt-{i}"}) for i in range(5)]
    assert [len(p) for p in handlers.enqueue_batch([*events, events[0]], deps)] == [1] * 5 + [0]
    claimed = handlers.claim_due(deps, limit=3)
    assert len(claimed) == 3 and all(c["attempts"] == 1 for c in claimed)
    rest = handlers.claim_due(deps, limit=10)  # the first three are leased: not claimed again
    assert len(rest) == 2
    assert handlers.claim_due(deps, limit=10) == []
    assert [handlers.send_claimed(c, deps) for c in claimed + rest] == ["delivered"] * 5
    assert sorted(h["webhook-id"] for _, h, _ in sender.requests) == [f"evt-{i}" for i in range(5)]
    clock.now += handlers.LEASE * 2
    assert handlers.claim_due(deps, limit=10) == []  # delivered: never claimed again


def test_deliveries_claimed_by_path_and_by_the_due_query_are_sent_once() -> None:
    deps, sender, _endpoint, _clock = _setup([200])
    events = [EVENT.model_copy(update={"event_id": f"evt-{i}"}) for i in range(3)]
    paths = [p for ps in handlers.enqueue_batch(events, deps) for p in ps]
    by_query = handlers.claim_due(deps, limit=1)
    by_path = handlers.claim_paths(deps, [*paths, "webhook_deliveries/unknown"])
    assert len(by_query) == 1 and len(by_path) == 2  # the one the query took is leased
    assert {c["path"] for c in by_query + by_path} == set(paths)
    assert [handlers.send_claimed(c, deps) for c in by_query + by_path] == ["delivered"] * 3
    assert len(sender.requests) == 3


def test_the_worker_sends_what_its_pushes_enqueued_once_and_records_every_outcome() -> None:
    deps, sender, _endpoint, _clock = _setup([200])
    events = [EVENT.model_copy(update={"event_id": f"evt-{i}"}) for i in range(6)]

    async def scenario() -> None:
        worker = Worker(deps, concurrency=4, poll_s=0.05)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.05)
        enqueued, claimed = handlers.enqueue_claimed(events, deps)
        paths = [p for ps in enqueued for p in ps]
        worker.send_now(claimed)
        for _ in range(200):
            if all(deps.store.get(p).data["status"] == "delivered" for p in paths):  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.02)
        task.cancel()

    asyncio.run(scenario())
    assert sorted(h["webhook-id"] for _, h, _ in sender.requests) == [f"evt-{i}" for i in range(6)]
