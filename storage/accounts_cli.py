"""Account commands: ``digitize users add|bind-oidc|unbind-oidc|list|disable|events`` and ``digitize tokens create|list|revoke``.

Passwords come from stdin only (never argv, where other processes can read them); a token's secret is
printed once and stored only as a hash.
"""

from __future__ import annotations

import sys
from typing import Callable

import click

from digitize.errors import BadArgsError

from . import access
from .cli import _archive

_ROLE = click.Choice(access.ROLES)


def _audited(index, action: str, target: str, change: Callable[[], object], detail: Callable | None = None):
    return access.audited(index, access.cli_principal().actor, None, action, target, change, detail)


def _scope(agencies: list[str], role: str) -> str:
    return "all agencies" if role in access.ALL_AGENCIES_ROLES else ", ".join(agencies) or "-"


def _account_options(command):
    """NAME, --role and --agency: what a user and a token are made of."""
    for option in reversed([click.argument("name"), click.option("--role", required=True, type=_ROLE),
                            click.option("--agency", "agencies", multiple=True, metavar="CODE",
                                         help="Agency code (repeatable).")]):
        command = option(command)
    return command


@click.group("users")
def users_group() -> None:
    """Portal accounts (argon2-hashed passwords, or single sign-on subjects): add, bind-oidc, list, disable."""


@users_group.command("add")
@_account_options
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--oidc-subject", metavar="SUB", help="Bind the account to this single sign-on subject (the "
              "provider's `sub` of the person, of [web] oidc_issuer).")
@click.pass_obj
def users_add(settings, name: str, role: str, agencies: tuple[str, ...], password_stdin: bool,
              oidc_subject: str | None) -> None:
    """Add user NAME; without --password-stdin the account can only log in through single sign-on, once
    bound to its subject (--oidc-subject, or later `users bind-oidc`)."""
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise BadArgsError("no password on stdin")
    oidc = (settings.web.oidc_issuer, oidc_subject) if oidc_subject is not None else None
    with _archive(settings) as archive:
        user = _audited(archive.index, "user added", name,
                        lambda: access.add_user(archive.index, name, role, agencies, password, oidc),
                        lambda user: access.describe_binding(oidc) if oidc else None)
    click.echo(f"user {user.name} added: {user.role}, {_scope(user.agencies, user.role)}")


@users_group.command("bind-oidc")
@click.argument("name")
@click.argument("subject")
@click.pass_obj
def users_bind_oidc(settings, name: str, subject: str) -> None:
    """Bind user NAME to single sign-on SUBJECT (the provider's `sub` of the person, of [web] oidc_issuer, read
    from the provider's admin console), replacing any earlier binding, whose sessions end at their next
    request. Accounts are never bound by a name or an e-mail the provider sends."""
    bound = access.describe_binding((settings.web.oidc_issuer, subject))
    with _archive(settings) as archive:
        _audited(archive.index, "user bound", name,
                 lambda: access.bind_oidc(archive.index, name, settings.web.oidc_issuer, subject),
                 lambda before: bound + (f", was {access.describe_binding(before)}" if before else ""))
    click.echo(f"user {name} bound to single sign-on {bound}; its sessions of any other binding have ended")


@users_group.command("unbind-oidc")
@click.argument("name")
@click.pass_obj
def users_unbind_oidc(settings, name: str) -> None:
    """Remove user NAME's single sign-on binding: its single sign-on sessions end at their next request, and
    it logs in through single sign-on no more until bound again."""
    with _archive(settings) as archive:
        _audited(archive.index, "user unbound", name, lambda: access.unbind_oidc(archive.index, name),
                 lambda before: f"was {access.describe_binding(before)}")
    click.echo(f"user {name} unbound from single sign-on; its single sign-on sessions have ended")


@users_group.command("list")
@click.pass_obj
def users_list(settings) -> None:
    """Users with role, agencies, state and single sign-on binding (subject and issuer, or "not bound")."""
    unbound: list[str] = []

    def line(user) -> str:
        state = "disabled" if user.disabled else "active"
        login = "password" if user.password_hash else "sso only"
        binding = (user.oidc_issuer, user.oidc_subject) if user.oidc_subject and user.oidc_issuer else None
        sso = ""
        if binding:  # a binding made under another oidc_issuer spelling logs nobody in: say so
            other = "" if binding[0] == settings.web.oidc_issuer else " (not the configured [web] oidc_issuer)"
            sso = f"  sso: {access.describe_binding(binding)}{other}"
        elif not user.password_hash:
            sso = "  sso: not bound"
            if not user.disabled:
                unbound.append(user.name)
        return f"{user.name:<24} {user.role:<10} {state:<8} {login:<9} {_scope(user.agencies, user.role)}{sso}"

    _list(settings, lambda index: index.users(), line, "users")
    if unbound:  # after migration 0007 every earlier single sign-on account is here (review web15b L1)
        click.echo(f"{len(unbound)} single sign-on account(s) not bound, which cannot log in: "
                   "digitize users bind-oidc NAME SUBJECT, with the person's subject read from the provider's "
                   "admin console (see README, Upgrading)", err=True)


@users_group.command("disable")
@click.argument("name")
@click.pass_obj
def users_disable(settings, name: str) -> None:
    """Disable NAME: its sessions stop working at their next request."""
    _end(settings, "user disabled", name, lambda index, now: index.set_user_disabled(name, True, now))


@users_group.command("events")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.pass_obj
def users_events(settings, limit: int) -> None:
    """Changes to users and tokens, newest first: when, who (user:NAME from /admin, cli:OSUSER), what."""
    def line(event) -> str:
        detail = f" ({event.detail})" if event.detail else ""
        return f"{event.time}  {event.actor:<24} {event.action:<14} {event.target}{detail}  {event.client or ''}".rstrip()

    _list(settings, lambda index: index.account_events(limit), line, "account events")


@click.group("tokens")
def tokens_group() -> None:
    """API tokens for other systems: create (shown once), list, expire, revoke."""


@tokens_group.command("create")
@_account_options
@click.option("--expires-days", type=click.IntRange(0, access.MAX_TOKEN_DAYS), default=access.TOKEN_DAYS,
              show_default=True, help="Days until the token expires (then refused: 401 token_expired); 0: never.")
@click.pass_obj
def tokens_create(settings, name: str, role: str, agencies: tuple[str, ...], expires_days: int) -> None:
    """Create token NAME and print its secret once (only its hash is kept)."""
    with _archive(settings) as archive:
        secret = _audited(archive.index, "token created", name,
                          lambda: access.create_token(archive.index, name, role, agencies, expires_days))
        expiry = _expiry(archive.index.token_by_name(name))
    click.echo(secret)
    click.echo(f"token {name} created ({role}, {_scope(list(access.parse_agencies(agencies)), role)}, {expiry}); "
               "store it now, it is not shown again", err=True)


def _expiry(token) -> str:
    """When the token expires, in words: a date, never (made so), or none (made before expiries existed)."""
    if not token.expiry_recorded:
        return "no expiry (made before expiring tokens: digitize tokens expire NAME --days N)"
    if token.expires_at is None:
        return "never expires (--expires-days 0)"
    return f"{'expired' if _past(token.expires_at) else 'expires'} {token.expires_at}"


def _past(when: str) -> bool:
    from datetime import datetime, timezone

    return datetime.fromisoformat(when) <= datetime.now(timezone.utc)


@tokens_group.command("list")
@click.pass_obj
def tokens_list(settings) -> None:
    """Tokens with role, agencies, state and expiry (never the secret)."""
    def line(token) -> str:
        state = f"revoked {token.revoked_at}" if token.revoked_at else "active"
        return f"{token.name:<24} {token.role:<10} {state:<8} {_scope(token.agencies, token.role)}  {_expiry(token)}"

    _list(settings, lambda index: index.tokens(), line, "tokens")


@tokens_group.command("expire")
@click.argument("name")
@click.option("--days", type=click.IntRange(0, access.MAX_TOKEN_DAYS), required=True,
              help="Days from now until the token expires (then refused: 401 token_expired); 0: never.")
@click.pass_obj
def tokens_expire(settings, name: str, days: int) -> None:
    """Set when token NAME expires, from now: for a token made before expiring tokens (it has none), or to
    renew or shorten one. Recorded as an account event."""
    with _archive(settings) as archive:
        _audited(archive.index, "token expiry set", name, lambda: access.expire_token(archive.index, name, days),
                 lambda expires_at: f"expires {expires_at}" if expires_at else "never expires")
        expiry = _expiry(archive.index.token_by_name(name))
    click.echo(f"token {name} {expiry}")


@tokens_group.command("revoke")
@click.argument("name")
@click.pass_obj
def tokens_revoke(settings, name: str) -> None:
    """Revoke token NAME (a running portal refuses it within [web] token_cache_seconds, default 2 s)."""
    _end(settings, "token revoked", name, lambda index, now: index.revoke_token(name, now))


def _list(settings, read: Callable, line: Callable, noun: str) -> None:
    """One line per account (users or tokens) on stdout, their count on stderr."""
    with _archive(settings) as archive:
        items = read(archive.index)
    for item in items:
        click.echo(line(item))
    click.echo(f"{len(items)} {noun}", err=True)


def _end(settings, action: str, name: str, change: Callable) -> None:
    """Disable a user or revoke a token (``change(index, now)``, recorded as ACTION), then say so."""
    with _archive(settings) as archive:
        _audited(archive.index, action, name, lambda: change(archive.index, access.now_iso()))
    noun, verb = action.split(" ", 1)
    click.echo(f"{noun} {name} {verb}")


COMMANDS: list = [users_group, tokens_group]
