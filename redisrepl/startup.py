"""What start-up does with a sound Config, before twistd daemonizes.

``prepare`` does every effect the options call for, in one place: it reads
the key passphrase and password files, loads the certificates into the
HTTPS policy, notes the secret files others can read, takes the marker of a
``-pass`` re-run out of the environment and, for the deprecated ``-pass``,
runs the program again with the password moved from its command line to its
environment. It returns a Runtime, or raises ConfigError with the one line
the user sees.
"""

import os
import sys
from collections.abc import Mapping, MutableMapping

import attrs
from twisted.web.iweb import IPolicyForHTTPS

from redisrepl.config import LEGACY_PASS_ENV, PASSWORD_ENV, Config, ConfigError
from redisrepl.tls import CredentialsError, load_policy


@attrs.frozen
class Notice:
    """A warning for the log at start: a twisted.logger format and its fields."""

    format: str
    fields: Mapping[str, object] = attrs.field(factory=dict)

    def __str__(self) -> str:
        return self.format.format(**self.fields)


@attrs.frozen(kw_only=True)
class Runtime:
    """What start-up read and loaded for the daemon."""

    #: the client certificate's HTTPS policy; None for an allowed http:// hub
    tls_policy: IPolicyForHTTPS | None
    #: the local Redis' password, wherever it came from
    password: str | None = attrs.field(repr=False)
    #: the password came from the deprecated -pass (the log says so)
    legacy_pass: bool
    warnings: tuple[Notice, ...]


def prepare(config: Config, environ: MutableMapping[str, str] = os.environ) -> Runtime:
    """Do the effects ``config`` calls for; a Runtime, or ConfigError.
    ``environ`` is the environment the -pass marker is taken out of (so that
    no child inherits it).

    May not return: with ``-pass`` under twistd it re-runs the program."""
    warnings = []
    if config.keep_remote_only:
        warnings.append(Notice("--keep-remote-only is the default now and can be dropped"))
    tls_policy = None
    if config.https:
        passphrase = None
        if config.key_password_file:
            passphrase = _first_line(config.key_password_file, "--key-password-file").encode()
            warnings += _private_file(config.key_password_file)
        try:
            tls_policy = load_policy(config.cert, config.key, config.ca, passphrase)
        except CredentialsError as e:
            raise ConfigError(str(e)) from None
        warnings += _private_file(config.key)
    password = None
    environ.pop(LEGACY_PASS_ENV, None)
    legacy_pass = config.password_moved
    if config.legacy_password is not None:
        _reexec_without(config.legacy_password)
        password = config.legacy_password  # not on Linux: only the warning is left
        legacy_pass = True
    elif config.password_file:
        password = _first_line(config.password_file, "--password-file")
        warnings += _private_file(config.password_file)
    else:
        password = config.environ_password
    return Runtime(tls_policy=tls_policy, password=password or None, legacy_pass=legacy_pass, warnings=tuple(warnings))


def _private_file(path: str | None) -> list[Notice]:
    """A warning if others can read a secret."""
    if path is None:
        return []
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    if mode & 0o044:
        return [
            Notice(
                "{path} is readable by other users (mode {mode:03o}): chmod 600 it",
                {"path": path, "mode": mode & 0o777},
            )
        ]
    return []


def _first_line(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None


def _reexec_without(password: str) -> None:
    """Run this same command again without ``-pass PASSWORD``, the password in
    the environment instead: ``ps`` shows any user the arguments of every
    process, while a process' environment is readable only by its owner."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:-1]
    except OSError:
        return
    if b"redisrepl" not in argv:
        return  # not ``twistd ... redisrepl ...`` (the options parsed in-process)
    kept, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg.startswith(b"-") and arg.lstrip(b"-").split(b"=", 1)[0] == b"pass":
            skip = b"=" not in arg
            continue
        kept.append(arg)
    env = dict(os.environb)
    env[PASSWORD_ENV.encode()] = password.encode("utf-8", "surrogateescape")
    env[LEGACY_PASS_ENV.encode()] = b"1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [os.fsencode(sys.executable)] + kept, env)
