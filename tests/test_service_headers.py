"""Rate-limit headers: draft-ietf-httpapi-ratelimit-headers-10 syntax, Retry-After, legacy."""

from __future__ import annotations

import re

from openclaw.limiter import NEVER, BucketParams, Decision, MemoryStore
from openclaw.service import headers as h

# One Structured Field List member: a String with Integer parameters (RFC 9651).
SF_ITEM = r'"([ -!#-\[\]-~]|\\["\\])*";[a-z]+=\d{1,15}(;[a-z]+=\d{1,15})*'
SF_LIST = re.compile(rf"^{SF_ITEM}(,{SF_ITEM})*$")

BURST = BucketParams(10, 1.0)
HOURLY = BucketParams(1000, 1000 / 3600)


def test_policy_field_lists_every_limit_with_quota_and_window() -> None:
    value = h.ratelimit_policy("free", [BURST, HOURLY])
    assert value == '"free";q=10;w=10,"free.1";q=1000;w=3600'
    assert SF_LIST.match(value)


def test_a_bucket_that_never_refills_has_no_window() -> None:
    assert h.ratelimit_policy("x", [BucketParams(3, 0)]) == '"x";q=3'


def test_fractional_quota_is_rounded_down_and_window_up() -> None:
    assert h.ratelimit_policy("x", [BucketParams(2.5, 2.0)]) == '"x";q=2;w=2'


def test_ratelimit_names_the_binding_limit() -> None:
    store = MemoryStore(clock=lambda: 0.0)
    limits = [BucketParams(1000, 10), BucketParams(3, 1)]
    decision = store.take("k", limits, cost=1)
    # The 3-token bucket binds (fewest left).
    assert h.ratelimit("t", limits, decision) == '"t.1";r=2;t=1'


def test_ratelimit_on_a_full_bucket_has_no_reset() -> None:
    decision = Decision(True, 10.0, 10.0, 0.0, 0.0)
    assert h.ratelimit("t", [BURST], decision) == '"t";r=10'


def test_ratelimit_t_is_time_to_the_next_whole_token() -> None:
    # 4.5 left at 0.25/s: the fifth token is 2 s away, the bucket is full in 22 s.
    decision = Decision(True, 4.5, 10.0, 0.0, 22.0)
    assert h.ratelimit("t", [BucketParams(10, 0.25)], decision) == '"t";r=4;t=2'


def test_denied_ratelimit_and_retry_after_round_up() -> None:
    decision = Decision(False, 0.4, 10.0, 0.6, 9.6)
    headers = h.rate_limit_headers("t", [BURST], decision, throttled=True)
    assert headers["RateLimit"] == '"t";r=0;t=1'
    assert headers["Retry-After"] == "1"
    # Retry-After never points earlier than the reset parameter (draft-10, section 6).
    decision = Decision(False, 0.0, 10.0, 2.01, 10.0)
    headers = h.rate_limit_headers("t", [BURST], decision, throttled=True)
    assert headers["Retry-After"] == "3"
    assert headers["RateLimit"].endswith(";t=3")


def test_retry_after_only_on_the_429() -> None:
    decision = Decision(False, 0.0, 10.0, 2.0, 10.0)
    assert "Retry-After" not in h.rate_limit_headers("t", [BURST], decision)
    allowed = Decision(True, 5.0, 10.0, 0.0, 5.0)
    assert "Retry-After" not in h.rate_limit_headers("t", [BURST], allowed, throttled=True)


def test_a_request_that_can_never_succeed_gets_no_retry_time() -> None:
    decision = Decision(False, 10.0, 10.0, NEVER, 0.0)
    headers = h.rate_limit_headers("t", [BURST], decision, throttled=True)
    assert "Retry-After" not in headers
    assert headers["RateLimit"] == '"t";r=10'


def test_legacy_headers_only_when_asked() -> None:
    decision = Decision(True, 7.9, 10.0, 0.0, 2.1)
    assert "X-RateLimit-Limit" not in h.rate_limit_headers("t", [BURST], decision)
    headers = h.rate_limit_headers("t", [BURST], decision, legacy_headers=True)
    assert headers["X-RateLimit-Limit"] == "10"
    assert headers["X-RateLimit-Remaining"] == "7"
    assert headers["X-RateLimit-Reset"] == "3"


def test_strings_are_escaped_and_kept_ascii() -> None:
    assert h.sf_string('a"b\\c') == '"a\\"b\\\\c"'
    assert h.sf_string("tier-ü\n") == '"tier-??"'
    assert SF_LIST.match(h.ratelimit_policy('we"ird', [BURST]))


def test_integers_are_clamped_to_the_structured_field_range() -> None:
    assert h.sf_integer(1e30) == str(h.SF_INT_MAX)
    assert h.sf_integer(-3) == "0"
    assert h.sf_integer(float("nan")) == "0"
    assert h.ratelimit_policy("x", [BucketParams(1e20, 1e-12)]) == (
        f'"x";q={h.SF_INT_MAX};w={h.SF_INT_MAX}'
    )
