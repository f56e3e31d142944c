"""Static limits: tiers and per-client overrides from a TOML or YAML file.

```toml
default_tier = "free"

[tiers.free]
limits = [{ capacity = 20, refill_rate = 2 }, { capacity = 1000, refill_rate = 0.25 }]

[tiers.free.routes."/search"]
limits = [{ capacity = 5, refill_rate = 0.5 }]

[tiers.pro]
limits = [{ capacity = 200, refill_rate = 50 }]
# Optional: the range a learned policy (policy_mode = "model") may assign this tier.
bounds = { min_capacity = 50, max_capacity = 5000, min_refill_rate = 5, max_refill_rate = 500 }

[clients.acme]
tier = "pro"

[clients.scraper-42]
limits = [{ capacity = 5, refill_rate = 0.1 }]
```

A client's own ``limits`` win over everything; otherwise its tier's limits for the route,
else its tier's limits. Clients not listed belong to ``default_tier``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from openclaw.errors import ConfigError
from openclaw.limiter.core import BucketParams
from openclaw.policy.base import Policy

log = logging.getLogger(__name__)

BUILT_IN: Final = "built-in"


class _Spec(BaseModel):
    # Unknown keys are errors: a misspelt "refil_rate" must not silently mean "default".
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitSpec(_Spec):
    capacity: float = Field(ge=0, allow_inf_nan=False)
    refill_rate: float = Field(ge=0, allow_inf_nan=False)


class RouteSpec(_Spec):
    limits: list[LimitSpec] = Field(min_length=1)


class BoundsSpec(_Spec):
    """What a learned policy may assign a tier's clients: every predicted bucket is clipped
    into ``[min_*, max_*]`` (unset: no bound of the tier's own beyond the model's)."""

    min_capacity: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_capacity: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    min_refill_rate: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_refill_rate: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> BoundsSpec:
        for what in ("capacity", "refill_rate"):
            low, high = getattr(self, f"min_{what}"), getattr(self, f"max_{what}")
            if high is not None and low > high:
                raise ValueError(f"min_{what} {low:g} is above max_{what} {high:g}")
        return self


class TierSpec(_Spec):
    limits: list[LimitSpec] = Field(min_length=1)
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    bounds: BoundsSpec | None = None


class ClientSpec(_Spec):
    tier: str | None = None
    limits: list[LimitSpec] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _says_something(self) -> ClientSpec:
        if self.tier is None and self.limits is None:
            raise ValueError("a client entry needs a tier, limits, or both")
        return self


class PolicySpec(_Spec):
    default_tier: str = "default"
    tiers: dict[str, TierSpec] = Field(min_length=1)
    clients: dict[str, ClientSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tiers_exist(self) -> PolicySpec:
        if self.default_tier not in self.tiers:
            raise ValueError(
                f"default_tier {self.default_tier!r} is not one of the tiers: {sorted(self.tiers)}"
            )
        for client_id, client in self.clients.items():
            if client.tier is not None and client.tier not in self.tiers:
                raise ValueError(
                    f"clients.{client_id}.tier: {client.tier!r} is not one of the tiers: "
                    f"{sorted(self.tiers)}"
                )
        return self


def _limits(specs: list[LimitSpec]) -> tuple[BucketParams, ...]:
    return tuple(BucketParams(s.capacity, s.refill_rate) for s in specs)


def _bounds(spec: BoundsSpec | None) -> TierBounds:
    if spec is None:
        return TierBounds()
    return TierBounds(
        spec.min_capacity,
        math.inf if spec.max_capacity is None else spec.max_capacity,
        spec.min_refill_rate,
        math.inf if spec.max_refill_rate is None else spec.max_refill_rate,
    )


@dataclass(frozen=True, slots=True)
class TierBounds:
    """A tier's range for learned buckets (``[tiers.X.bounds]``)."""

    min_capacity: float = 0.0
    max_capacity: float = math.inf
    min_refill_rate: float = 0.0
    max_refill_rate: float = math.inf


@dataclass(frozen=True, slots=True)
class Tier:
    limits: tuple[BucketParams, ...]
    routes: dict[str, tuple[BucketParams, ...]]
    bounds: TierBounds = TierBounds()


@dataclass(frozen=True, slots=True)
class ClientRule:
    tier: str
    limits: tuple[BucketParams, ...] | None


@dataclass(frozen=True, slots=True)
class StaticPolicy:
    """An immutable table; a reload builds a new one and swaps it in whole."""

    default_tier: str
    tiers: dict[str, Tier]
    clients: dict[str, ClientRule]
    version: str
    source: str = BUILT_IN

    @property
    def name(self) -> str:
        return "static"

    def limits_for(self, client_id: str, *, route: str | None = None) -> tuple[BucketParams, ...]:
        rule = self.clients.get(client_id)
        if rule is not None and rule.limits is not None:
            return rule.limits
        tier = self.tiers[rule.tier if rule is not None else self.default_tier]
        if route is not None:
            routed = tier.routes.get(route)
            if routed is not None:
                return routed
        return tier.limits

    def tier_of(self, client_id: str) -> str:
        rule = self.clients.get(client_id)
        return rule.tier if rule is not None else self.default_tier

    @classmethod
    def default(cls) -> StaticPolicy:
        """The embedded default: one tier, a burst of 100 then 10 requests per second."""
        return cls.from_spec(
            PolicySpec(
                tiers={"default": TierSpec(limits=[LimitSpec(capacity=100, refill_rate=10)])}
            ),
            version=BUILT_IN,
        )

    @classmethod
    def from_spec(cls, spec: PolicySpec, *, version: str, source: str = BUILT_IN) -> StaticPolicy:
        tiers = {
            name: Tier(
                _limits(tier.limits),
                {route: _limits(r.limits) for route, r in tier.routes.items()},
                _bounds(tier.bounds),
            )
            for name, tier in spec.tiers.items()
        }
        clients = {
            client_id: ClientRule(
                c.tier or spec.default_tier, _limits(c.limits) if c.limits else None
            )
            for client_id, c in spec.clients.items()
        }
        return cls(spec.default_tier, tiers, clients, version, source)

    @classmethod
    def load(cls, path: str | Path) -> StaticPolicy:
        """Read and validate a policy file; a ConfigError names the file and the bad key."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the policy file: {exc.strerror}") from exc
        return cls.parse(raw, source=str(path), fmt=path.suffix.lstrip(".").lower())

    @classmethod
    def parse(cls, raw: bytes, *, source: str, fmt: str) -> StaticPolicy:
        data = _decode(raw, source=source, fmt=fmt)
        try:
            spec = PolicySpec.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_explain(exc)}") from exc
        digest = hashlib.sha256(raw).hexdigest()[:12]
        return cls.from_spec(spec, version=f"sha256:{digest}", source=source)


def _decode(raw: bytes, *, source: str, fmt: str) -> Any:
    if fmt == "toml":
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    if fmt in ("yaml", "yml"):
        import yaml

        try:
            data = yaml.safe_load(raw)  # safe_load: a policy file never constructs objects
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise ConfigError(f"{source}: not valid YAML: {where}{exc.problem}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a policy file is a mapping of tiers and clients")
        return data
    raise ConfigError(f"{source}: unknown policy file type {fmt!r}: use .toml, .yaml or .yml")


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{key}: {message}")
    return "; ".join(problems)


class PolicyHolder:
    """The policy in force, swapped atomically on reload.

    A reload that fails keeps the policy in force and says why: a typo in a file must never
    take limits away from a running service.
    """

    def __init__(self, policy: Policy, *, path: str | Path | None = None) -> None:
        self._policy = policy
        self._path = Path(path) if path is not None else None
        self._stamp = self._file_stamp()
        self._lock = threading.Lock()
        #: Why the last reload failed, or None.
        self.last_error: str | None = None

    @classmethod
    def from_file(cls, path: str | Path | None) -> PolicyHolder:
        """The policy in ``path``, or the built-in default when there is none."""
        if path is None:
            return cls(StaticPolicy.default())
        return cls(StaticPolicy.load(path), path=path)

    @property
    def current(self) -> Policy:
        return self._policy

    @property
    def path(self) -> Path | None:
        return self._path

    def reload(self) -> str | None:
        """Load the file again: None when the new policy is in force, else the reason."""
        if self._path is None:
            return "the policy is built in: there is no file to reload"
        with self._lock:
            self._stamp = self._file_stamp()
            try:
                policy = StaticPolicy.load(self._path)
            except ConfigError as exc:
                self.last_error = str(exc)
                log.error("policy reload failed, keeping %s: %s", self._policy.version, exc)
                return self.last_error
            self._policy = policy  # one reference store: a decision sees old or new, whole
            self.last_error = None
            log.info("policy reloaded from %s: %s", self._path, policy.version)
            return None

    def reload_if_changed(self) -> str | None:
        """Reload when the file changed since the last look; None when nothing failed."""
        if self._path is None or self._file_stamp() == self._stamp:
            return None
        return self.reload()

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size
