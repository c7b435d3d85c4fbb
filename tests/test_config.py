"""The configuration, checked without effects (redisrepl.config), and the
start-up step that reads secrets and the environment (redisrepl.startup)."""

import attrs
import pytest

from redisrepl import startup
from redisrepl.config import Config, ConfigError, validate
from redisrepl.merge import DeleteLimit

HTTP = {"haddr": "http://127.0.0.1:7379", "allow-http": 1, "nam": "ns:"}
HTTPS = {
    "haddr": "https://hub.example.org/redis",
    "cert": "/nonexistent/c.pem",
    "key": "/nonexistent/c.key",
    "ca": "/nonexistent/ca.pem",
    "nam": "ns:",
}


def test_the_default_window_cap_is_never_below_the_concurrency():
    assert validate({**HTTP, "concurrency": "40"}).max_concurrency == 40
    assert validate({**HTTP, "concurrency": "2"}).max_concurrency == 32
    assert validate({**HTTP, "concurrency": "2", "max-concurrency": "2"}).max_concurrency == 2


def error(values):
    with pytest.raises(ConfigError) as e:
        validate(values)
    return str(e.value)


def test_defaults_typed_and_immutable():
    config = validate(HTTP)
    assert config.local_endpoint == ("tcp", "127.0.0.1", 6379) and config.raddr == "127.0.0.1:6379"
    assert (config.db, config.concurrency, config.max_concurrency, config.batch) == (0, 4, 32, 256)
    assert (config.big_key_items, config.max_backlog) == (10000, 100000)
    assert (config.heartbeat, config.reconcile_interval) == (1.0, 60.0)
    assert config.log_level == "info"
    assert config.max_delete == DeleteLimit(10.0, None)
    assert config.winner == "remote" and config.rc is False and config.mirror is False
    assert config.namespace == b"ns:" and config.reserved_prefix == b"ns:__redisrepl__:"
    assert config.names.meta == b"__redisrepl__:{ns:}:"
    assert config.site_name is None and config.metrics_endpoint is None
    assert not config.https
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.db = 1


def test_certificate_files_are_named_not_read():
    config = validate(HTTPS)
    assert config.https and config.cert == "/nonexistent/c.pem"
    assert validate({**HTTPS, "password-file": "/nonexistent/pw"}).password_file == "/nonexistent/pw"


def test_values_as_twisted_usage_leaves_them():
    config = validate(
        {
            **HTTP,
            "db": "3",
            "rc": 1,
            "winner": "local",
            "heartbeat": "0.5",
            "reconcile-interval": "0",
            "max-delete": "all",
            "site": "lab-1",
            "metrics": "[::1]:9187",
            "raddr": "/run/redis.sock",
            "big-key-items": "50",
        }
    )
    assert config.db == 3 and config.rc is True and config.winner == "local"
    assert config.heartbeat == 0.5 and config.reconcile_interval == 0.0 and config.walk_share == 0.25
    assert config.max_delete == DeleteLimit(None, None)
    assert config.site_name == b"lab-1" and config.big_key_items == 50
    assert config.metrics_endpoint == "tcp:9187:interface=\\:\\:1"
    assert config.local_endpoint == ("unix", "/run/redis.sock")


def test_the_legacy_password_stays_out_of_reprs():
    config = validate({**HTTP, "pass": "hunter2"})
    assert config.legacy_password == "hunter2" and "hunter2" not in repr(config)


@pytest.mark.parametrize(
    "change,expect",
    [
        ({"db": "x"}, "--db must be a whole number, not 'x'"),
        ({"concurrency": "0"}, "--concurrency must be between 1 and 64"),
        ({"max-concurrency": "300"}, "--max-concurrency must be between 1 and 256"),
        ({"concurrency": "8", "max-concurrency": "6"}, "--max-concurrency (6) must not be below --concurrency (8)"),
        ({"max-backlog": "10"}, "--max-backlog must be between 100 and 100000000"),
        ({"winner": "both"}, "--winner must be remote or local, not 'both'"),
        ({"log-level": "loud"}, "--log-level must be one of debug, info, warn, error, critical, not 'loud'"),
        ({"reconcile-interval": "soon"}, "--reconcile-interval must be a number of seconds, not 'soon'"),
        ({"reconcile-interval": "-1"}, "--reconcile-interval must not be negative"),
        ({"full-walk-interval": "-1"}, "--full-walk-interval must not be negative"),
        ({"full-walk-interval": "daily"}, "--full-walk-interval must be a number of seconds, not 'daily'"),
        ({"walk-share": "0"}, "--walk-share must be a number from 0.01 to 1 (a share of the hub's time), not '0'"),
        ({"walk-share": "25%"}, "--walk-share must be a number from 0.01 to 1"),
        ({"walk-share": "nan"}, "--walk-share must be a number from 0.01 to 1"),
        ({"walk-share": "1.5"}, "--walk-share must be a number from 0.01 to 1"),
        ({"heartbeat": "0"}, "--heartbeat must be between 0.1 and 3600 seconds"),
        ({"max-delete": "lots"}, "--max-delete must be a percentage (10%), a number of keys or 'all', not 'lots'"),
        ({"mirror": 1, "rc": 1}, "--mirror is for one-way mode: with --rc both sides are merged"),
        ({"site": "bad name"}, "--site must be 1 to 64 letters, digits, '-', '_' or '.', not 'bad name'"),
        ({"nam": ""}, "--nam is empty: give a namespace (key prefix), or --all-keys to replicate every key"),
        ({"haddr": None}, "--haddr is required: the https:// URL of the hub"),
        ({"haddr": "https://h:99999/"}, "--haddr 'https://h:99999/' is not a valid URL"),
        ({"haddr": "ftp://h/"}, "--haddr 'ftp://h/' is not an https://host[:port][/path] URL"),
        ({"haddr": "https://h/?x=1"}, "--haddr 'https://h/?x=1' must not have a query or fragment"),
        ({"allow-http": 0}, "--haddr 'http://127.0.0.1:7379' is plain HTTP: the hub needs https://"),
        ({"haddr": "https://h/"}, "--cert, --key, --ca required for an https:// hub"),
        ({"raddr": "localhost"}, "--raddr 'localhost' is neither host:port nor a unix socket path"),
        ({"raddr": "localhost:0"}, "--raddr port must be between 1 and 65535"),
        ({"metrics": "x:y"}, "--metrics port must be a whole number, not 'y'"),
    ],
)
def test_each_bad_value_has_its_message(change, expect):
    assert error({**HTTP, **change}).startswith(expect)


def test_the_first_check_to_fail_names_the_problem():
    assert error({**HTTP, "db": "x", "winner": "both", "nam": ""}).startswith("--db ")


def prepare(config, environ=None):
    return startup.prepare(config, environ if environ is not None else {})


def test_the_environment_is_read_from_the_mapping_given():
    environ = {"REDISREPL_PASSWORD": "pw", "REDISREPL_USERNAME": "repl"}
    config = validate(HTTP, environ)
    assert (config.username, config.environ_password, config.password_moved) == ("repl", "pw", False)
    assert "pw" not in repr(config)
    assert validate({**HTTP, "username": "flag"}, environ).username == "flag"
    assert (validate(HTTP).username, validate(HTTP).environ_password) == (None, None)
    assert validate(HTTP, {"REDISREPL_PASSWORD": ""}).environ_password is None


def test_startup_takes_the_password_from_the_environment_last():
    environ = {"REDISREPL_PASSWORD": "pw"}
    runtime = prepare(validate(HTTP, environ))
    assert (runtime.password, runtime.tls_policy) == ("pw", None)
    assert "pw" not in repr(runtime)


def test_startup_password_file_first_line_and_mode_warning(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\nignored\n")
    pw.chmod(0o640)
    runtime = prepare(validate({**HTTP, "password-file": str(pw)}, {"REDISREPL_PASSWORD": "not this"}))
    assert runtime.password == "s3cret"
    (warning,) = runtime.warnings
    assert warning.fields == {"path": str(pw), "mode": 0o640}
    assert str(warning) == f"{pw} is readable by other users (mode 640): chmod 600 it"
    pw.chmod(0o600)
    assert prepare(validate({**HTTP, "password-file": str(pw)})).warnings == ()


def test_startup_failures_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read --password-file /nonexistent/pw"):
        prepare(validate({**HTTP, "password-file": "/nonexistent/pw"}))
    with pytest.raises(ConfigError, match="cannot read the client certificate /nonexistent/c.pem"):
        prepare(validate(HTTPS))


def test_startup_legacy_pass_marker_is_taken_out_of_the_environment():
    environ = {"REDISREPL_PASSWORD": "moved", startup.LEGACY_PASS_ENV: "1"}
    runtime = prepare(validate(HTTP, environ), environ)
    assert runtime.legacy_pass and runtime.password == "moved"
    assert startup.LEGACY_PASS_ENV not in environ


def test_startup_deprecated_flag_is_a_warning():
    runtime = prepare(validate({**HTTP, "keep-remote-only": 1}))
    assert [str(w) for w in runtime.warnings] == ["--keep-remote-only is the default now and can be dropped"]


def test_config_is_a_plain_record():
    assert attrs.has(Config) and "tls_policy" not in attrs.fields_dict(Config)
