"""The authenticated caller, built once from validated claims."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

_EMPTY: frozenset[str] = frozenset()


def _str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


def _all_str(value: list[Any]) -> str | None:
    """The members of ``value`` joined, when every one is a string (``None`` otherwise):
    one C-level pass instead of an ``isinstance`` per member."""
    try:
        return "".join(value)
    except TypeError:
        return None


def _str_set(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name)
    if not isinstance(value, list) or not value:
        return _EMPTY
    if _all_str(value) is not None:
        return frozenset(value)
    return frozenset(v for v in value if isinstance(v, str))


def _lower(value: str) -> str:
    """``value.lower()``, but the claim's own string when it already is (Entra sends
    lower-case GUIDs): a cached principal then holds one copy, not two."""
    lowered = value.lower()
    return value if lowered == value else lowered


def _guid_set(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    """Object ids are case-insensitive: lower-cased here, once, for every comparison."""
    value = claims.get(name)
    if not isinstance(value, list) or not value:
        return _EMPTY
    joined = _all_str(value)
    # Lower-casing maps character by character (only a capital sigma looks at its
    # neighbours, and it changes whatever they are), so the joined text is unchanged
    # exactly when every member is: the usual case, Entra sends lower-case GUIDs.
    if joined is not None and joined.lower() == joined:
        return frozenset(value)
    return frozenset(_lower(v) for v in value if isinstance(v, str))


def _guid(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return _lower(value) if isinstance(value, str) else None


def _auth_scopes(scopes: frozenset[str], roles: frozenset[str]) -> tuple[str, ...]:
    names = ["scp:" + s for s in scopes]
    if roles:
        names += ["role:" + r for r in roles]
    names.sort()
    return tuple(names)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (delegated token) or an application (app-only token).

    Authorize on ``tenant_id`` + ``object_id``, ``scopes``, ``roles``,
    ``groups`` and ``wids``; ``name`` and ``preferred_username`` are mutable
    and for display only. The GUIDs (``tenant_id``, ``object_id``, ``groups``,
    ``wids``) are lower-cased; ``claims`` keeps the token's own spelling.
    """

    tenant_id: str
    object_id: str | None
    subject: str | None
    app_id: str | None
    is_app_only: bool
    scopes: frozenset[str]
    roles: frozenset[str]
    groups: frozenset[str]
    groups_overage: bool
    wids: frozenset[str]
    token_version: str
    name: str | None
    preferred_username: str | None
    is_guest: bool
    claims: Mapping[str, Any] = field(repr=False, compare=False)
    #: The validated ``iss``: which authority accepted the token (docs/customer-identities.md
    #: "Several authorities on one API").
    issuer: str | None = None
    #: The Azure AD B2C user flow / custom policy (as configured); ``None`` outside B2C.
    policy: str | None = None
    #: ``request.auth.scopes``: ``scp:<scope>`` and ``role:<app role>``, sorted; built
    #: once here rather than on every request (docs/getting-started.md "Use it in your API").
    auth_scopes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "auth_scopes", _auth_scopes(self.scopes, self.roles))

    @classmethod
    def from_claims(
        cls,
        claims: Mapping[str, Any],
        version: str,
        *,
        tenant_id: str | None = None,
        issuer: str | None = None,
        policy: str | None = None,
    ) -> Principal:
        """``tenant_id``: the validated tenant when the token has no ``tid`` (B2C); with
        a ``policy`` (B2C), a token without ``oid`` is keyed by its ``sub``."""
        return _build(
            cls, claims, dict(claims), version, tenant_id=tenant_id, issuer=issuer, policy=policy
        )

    # Starlette ``BaseUser`` protocol, so ``request.user`` works as usual.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name or self.preferred_username or self.object_id or self.app_id or ""

    @property
    def identity(self) -> str:
        """Stable key for app data: ``{tid}/{oid}`` (falls back to ``sub``)."""
        return f"{self.tenant_id}/{self.object_id or self.subject or self.app_id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (sets as sorted lists, no raw claims): what ``/me`` returns."""
        return {
            "tenant_id": self.tenant_id,
            "object_id": self.object_id,
            "subject": self.subject,
            "app_id": self.app_id,
            "is_app_only": self.is_app_only,
            "scopes": sorted(self.scopes),
            "roles": sorted(self.roles),
            "groups": sorted(self.groups),
            "groups_overage": self.groups_overage,
            "wids": sorted(self.wids),
            "token_version": self.token_version,
            "name": self.name,
            "preferred_username": self.preferred_username,
            "is_guest": self.is_guest,
            "issuer": self.issuer,
            "policy": self.policy,
        }


def principal_from_verified(
    claims: dict[str, Any],
    version: str,
    *,
    tenant_id: str | None,
    issuer: str | None,
    policy: str | None,
) -> Principal:
    """``Principal.from_claims`` for the claims dict the validator decoded for this very
    token, which nothing else holds: wrapped read-only as it is instead of copied."""
    return _build(
        Principal, claims, claims, version, tenant_id=tenant_id, issuer=issuer, policy=policy
    )


def _build(
    cls: type[Principal],
    claims: Mapping[str, Any],
    owned: dict[str, Any],
    version: str,
    *,
    tenant_id: str | None,
    issuer: str | None,
    policy: str | None,
) -> Principal:
    """The one construction of a ``Principal`` from claims; ``owned`` (the claims, or a
    copy of them that only the principal holds) becomes ``claims``, read-only."""
    scp = _str(claims, "scp")
    claim_names = claims.get("_claim_names")
    overage = (isinstance(claim_names, dict) and "groups" in claim_names) or bool(
        claims.get("hasgroups") is True
    )
    idp, iss = _str(claims, "idp"), _str(claims, "iss")
    scopes = frozenset(scp.split()) if scp else _EMPTY
    roles = _str_set(claims, "roles")
    # In the order of the fields (``INIT_FIELDS``).
    values = (
        _lower(tenant_id if tenant_id is not None else str(claims["tid"])),
        _guid(claims, "oid") or (_guid(claims, "sub") if policy is not None else None),
        _str(claims, "sub"),
        _str(claims, "azp") or _str(claims, "appid"),
        claims.get("idtyp") == "app" or "scp" not in claims,
        scopes,
        roles,
        _guid_set(claims, "groups"),
        overage,
        _guid_set(claims, "wids"),
        version,
        _str(claims, "name"),
        _str(claims, "preferred_username") or _str(claims, "upn"),
        # B2C's idp names the social/federated provider of a customer, not a guest.
        claims.get("acct") == 1 or (policy is None and idp is not None and idp != iss),
        MappingProxyType(owned),
        iss if issuer is None else issuer,
        policy,
    )
    if cls is not Principal:
        return cls(*values)
    # What the generated ``__init__`` does (one ``object.__setattr__`` per field, then
    # ``__post_init__``), with the slots' own setters: half the cost, on every fresh token.
    principal: Principal = _new(Principal)
    for setter, value in zip(_SETTERS, values, strict=True):
        setter(principal, value)
    _set_auth_scopes(principal, _auth_scopes(scopes, roles))
    return principal


#: The ``Principal`` fields ``_build`` fills, in order (tests/test_hot_path.py checks them).
INIT_FIELDS = tuple(f.name for f in fields(Principal) if f.init)
_SETTERS: tuple[Callable[[Principal, Any], None], ...] = tuple(
    vars(Principal)[name].__set__ for name in INIT_FIELDS
)
_set_auth_scopes: Callable[[Principal, tuple[str, ...]], None] = vars(Principal)[
    "auth_scopes"
].__set__
_new = object.__new__
