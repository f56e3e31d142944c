"""Static policy files: precedence, both formats, errors that name the bad key, safe reloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openclaw.errors import ConfigError
from openclaw.limiter import BucketParams
from openclaw.policy.base import Policy
from openclaw.policy.static import PolicyHolder, StaticPolicy

TOML = """
default_tier = "free"

[tiers.free]
limits = [{ capacity = 20, refill_rate = 2 }, { capacity = 1000, refill_rate = 0.25 }]

[tiers.free.routes."/search"]
limits = [{ capacity = 5, refill_rate = 0.5 }]

[tiers.pro]
limits = [{ capacity = 200, refill_rate = 50 }]

[clients.acme]
tier = "pro"

[clients.scraper-42]
limits = [{ capacity = 5, refill_rate = 0.1 }]
"""

YAML = """
default_tier: free
tiers:
  free:
    limits: [{capacity: 20, refill_rate: 2}]
  pro:
    limits: [{capacity: 200, refill_rate: 50}]
clients:
  acme: {tier: pro}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_precedence_client_limits_then_route_then_tier(tmp_path: Path) -> None:
    policy = StaticPolicy.load(write(tmp_path, "p.toml", TOML))
    assert isinstance(policy, Policy)
    assert policy.limits_for("someone") == (BucketParams(20, 2), BucketParams(1000, 0.25))
    assert policy.limits_for("someone", route="/search") == (BucketParams(5, 0.5),)
    assert policy.limits_for("someone", route="/other") == policy.limits_for("someone")
    assert policy.limits_for("acme") == (BucketParams(200, 50),)
    assert policy.limits_for("acme", route="/search") == (BucketParams(200, 50),)
    assert policy.limits_for("scraper-42", route="/search") == (BucketParams(5, 0.1),)
    assert (policy.tier_of("acme"), policy.tier_of("scraper-42"), policy.tier_of("x")) == (
        "pro",
        "free",
        "free",
    )
    assert policy.name == "static"
    assert policy.version.startswith("sha256:")


def test_yaml_reads_like_toml(tmp_path: Path) -> None:
    policy = StaticPolicy.load(write(tmp_path, "p.yaml", YAML))
    assert policy.limits_for("acme") == (BucketParams(200, 50),)
    assert policy.limits_for("anyone") == (BucketParams(20, 2),)


def test_the_built_in_default_needs_no_file() -> None:
    policy = StaticPolicy.default()
    assert policy.limits_for("anyone") == (BucketParams(100, 10),)
    assert policy.version == "built-in"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (TOML.replace("capacity = 200", "capacity = -1"), "tiers.pro.limits.0.capacity"),
        (TOML.replace("refill_rate = 50", "refil_rate = 50"), "tiers.pro.limits.0.refil_rate"),
        (TOML.replace('tier = "pro"', 'tier = "platinum"'), "clients.acme.tier"),
        (TOML.replace('default_tier = "free"', 'default_tier = "gold"'), "default_tier"),
        (TOML.replace("refill_rate = 0.5 }", 'refill_rate = "fast" }'), "routes./search"),
        ("[tiers]\n", "tiers"),
        (
            '[clients.x]\ncolour = "red"\n[tiers.t]\nlimits = [{capacity = 1, refill_rate = 1}]',
            "clients.x",
        ),
    ],
)
def test_errors_name_the_file_and_the_bad_key(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(ConfigError) as caught:
        StaticPolicy.load(path)
    assert str(path) in str(caught.value)
    assert named in str(caught.value)


def test_syntax_errors_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML: .*line 3"):
        StaticPolicy.load(write(tmp_path, "bad.toml", "[tiers.a]\nlimits = []\nbroken = = 1\n"))
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML: line 2"):
        StaticPolicy.load(write(tmp_path, "bad.yaml", "tiers:\n  a: b: c\nclients: {}\n"))


def test_unreadable_or_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        StaticPolicy.load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown policy file type"):
        StaticPolicy.load(write(tmp_path, "p.ini", "x=1"))
    with pytest.raises(ConfigError, match="mapping"):
        StaticPolicy.load(write(tmp_path, "p.yaml", "- just\n- a list\n"))


def test_a_bad_reload_keeps_the_policy_in_force(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", TOML)
    holder = PolicyHolder.from_file(path)
    before = holder.current
    path.write_text(TOML.replace("capacity = 200", "capacity = -5"))
    reason = holder.reload()
    assert reason is not None
    assert "tiers.pro.limits.0.capacity" in reason
    assert holder.current is before
    assert holder.last_error == reason

    path.write_text(TOML.replace("capacity = 200", "capacity = 300"))
    assert holder.reload() is None
    assert holder.current.limits_for("acme") == (BucketParams(300, 50),)
    assert holder.current.version != before.version
    assert holder.last_error is None


def test_reload_if_changed_notices_a_new_file(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", TOML)
    holder = PolicyHolder.from_file(path)
    first = holder.current
    assert holder.reload_if_changed() is None
    assert holder.current is first  # unchanged file: nothing reloaded
    path.write_text(TOML.replace("capacity = 200", "capacity = 250"))
    os.utime(path, ns=(1, 10**18))  # a distinct mtime even on coarse clocks
    assert holder.reload_if_changed() is None
    assert holder.current.limits_for("acme") == (BucketParams(250, 50),)


def test_a_built_in_policy_has_nothing_to_reload() -> None:
    holder = PolicyHolder.from_file(None)
    assert holder.current.version == "built-in"
    assert holder.reload() == "the policy is built in: there is no file to reload"
    assert holder.reload_if_changed() is None
