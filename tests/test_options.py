"""The command line: new and old spellings, and bad options refused before
daemonizing with one clear line."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from redisrepl import __version__
from redisrepl.options import Options, translate_legacy
from redisrepl.sandbox import generate_certificates
from tests.harness import ROOT, write_toml

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


@pytest.fixture(scope="module")
def certs():
    directory = tempfile.mkdtemp(prefix="redisrepl-certs-")
    yield generate_certificates(directory)
    shutil.rmtree(directory)


def parse(argv):
    options = Options()
    options.parseOptions(argv)
    return options


def good(certs, *extra):
    return [
        "--haddr",
        "https://hub.example.org/redis",
        "--cert",
        certs["client_cert"],
        "--key",
        certs["client_key"],
        "--ca",
        certs["ca_cert"],
        "--nam",
        "ns:",
        *extra,
    ]


def error_of(argv):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    message = str(e.value.code)
    assert message.startswith("redisrepl: error: ")
    assert "\n" not in message
    return message


def test_legacy_flags_are_translated(certs):
    options = parse(
        [
            "-haddr",
            "https://hub.example.org:8443/redis",
            "-cert",
            certs["client_cert"],
            "-key",
            certs["client_key"],
            "-CA",
            certs["ca_cert"],
            "-nam",
            "lab:",
            "-raddr",
            "10.1.2.3:6380",
            "-rc",
        ]
    )
    assert options.config.haddr == "https://hub.example.org:8443/redis"
    assert options.config.ca == certs["ca_cert"]
    assert options.config.rc == 1
    assert options.config.namespace == b"lab:"
    assert options.config.reserved_prefix == b"lab:__redisrepl__:"
    assert options.config.local_endpoint == ("tcp", "10.1.2.3", 6380)


def test_legacy_equals_form_and_unknown_single_dash_untouched():
    assert translate_legacy(["-CA=/x", "-nam=a", "-n", "-rc"]) == ["--ca=/x", "--nam=a", "-n", "--rc"]
    assert translate_legacy(["--CA", "/x", "--", "-CA"]) == ["--ca", "/x", "--", "-CA"]


def test_unknown_option_is_one_line():
    assert "option --bogus not recognized" in error_of(["--bogus"])


def test_defaults_and_unix_socket(certs):
    options = parse(good(certs))
    assert options.config.local_endpoint == ("tcp", "127.0.0.1", 6379)
    assert options.config.db == 0 and not options.config.rc
    options = parse(good(certs, "--raddr", "/run/redis/redis.sock", "--db", "3"))
    assert options.config.local_endpoint == ("unix", "/run/redis/redis.sock")
    assert options.config.db == 3


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        parse(["-version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"redisrepl {__version__}"


@pytest.mark.parametrize(
    "change,expect",
    [
        (("--cert", "/nonexistent/cert.pem"), "cannot read the client certificate /nonexistent/cert.pem"),
        (("--ca", "/nonexistent/ca.pem"), "cannot read the CA file"),
        (("--key", "other_client_key"), "does not belong to the certificate"),
        (("--cert", "client_key"), "holds no PEM certificate"),
        (("--haddr", "https://hub.example.org:99999/"), "is not a valid URL"),
        (("--haddr", "hub.example.org/redis"), "is not an https://"),
        (("--haddr", "http://hub.example.org/"), "plain HTTP"),
        (("--haddr", "https://hub.example.org/?x=1"), "query or fragment"),
        (("--nam", ""), "--all-keys"),
        (("--raddr", "localhost"), "neither host:port nor a unix socket"),
        (("--raddr", "localhost:0"), "between 1 and 65535"),
        (("--db", "x"), "--db must be a whole number"),
        (("--password-file", "/nonexistent/pw"), "cannot read --password-file"),
    ],
)
def test_bad_options(certs, change, expect):
    flag, value = change
    argv = good(certs, flag, certs.get(value, value))  # the last occurrence wins
    assert expect in error_of(argv)


def test_missing_tls_files_are_named(certs):
    assert "--cert, --key, --ca required" in error_of(["--haddr", "https://h/", "--nam", "x"])


def test_explicit_flags_allow_http_and_everything(certs):
    options = parse(["--haddr", "http://127.0.0.1:7379", "--allow-http", "--all-keys"])
    assert options.config.namespace == b"" and options.runtime.tls_policy is None


def test_password_sources(certs, tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\nignored\n")
    assert parse(good(certs, "--password-file", str(pw))).runtime.password == "s3cret"
    monkeypatch.setenv("REDISREPL_PASSWORD", "fromenv")
    monkeypatch.setenv("REDISREPL_USERNAME", "repl")
    options = parse(good(certs))
    assert (options.config.username, options.runtime.password) == ("repl", "fromenv")


def test_twistd_refuses_before_daemonizing_with_one_line(certs, tmp_path):
    # no -n: a bad option must fail before twistd forks into the background
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [TWISTD, "--pidfile=", "redisrepl", *good(certs, "--key", certs["other_client_key"])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("redisrepl: error: the client key")
    assert not (tmp_path / "twistd.log").exists()


def test_installed_plugin_is_listed_by_twistd(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert "redisrepl" in result.stdout, "redisrepl is not installed in this environment (pip install .)"


def test_config_file_with_flags_overriding(certs, tmp_path):
    conf = write_toml(
        tmp_path / "redisrepl.toml",
        haddr="https://hub.example.org/redis",
        cert=certs["client_cert"],
        key=certs["client_key"],
        ca=certs["ca_cert"],
        nam="fromfile:",
        rc=True,
        db=2,
        metrics="9187",
        raddr="/run/redis.sock",
    )
    options = parse(["--config", str(conf), "--nam", "fromflag:"])
    assert options.config.namespace == b"fromflag:"
    assert options.config.rc == 1 and options.config.db == 2
    assert options.config.local_endpoint == ("unix", "/run/redis.sock")
    assert options.config.metrics_endpoint == "tcp:9187:interface=127.0.0.1"


@pytest.mark.parametrize(
    "content,expect",
    [
        ('nam = "x"\nbogus = 1\n', "unknown key 'bogus'"),
        ('pass = "secret"\n', "unknown key 'pass' (secrets go in password-file)"),
        ('rc = "yes"\n', "'rc' must be true or false"),
        ("nam = [1]\n", "'nam' must be a string or a number"),
        ("nam = \n", "is not valid TOML"),
    ],
)
def test_bad_config_file_names_key_and_file(tmp_path, content, expect):
    conf = tmp_path / "bad.toml"
    conf.write_text(content)
    message = error_of(["--config", str(conf)])
    assert expect in message and str(conf) in message


def test_missing_config_file():
    assert "cannot read --config /nonexistent.toml" in error_of(["--config=/nonexistent.toml"])


def _client_cert(directory, ca_cert_path, ca_key_path, days_from, days_to, passphrase=None):
    """A client certificate signed by the sandbox CA, valid between two day offsets."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    with open(ca_cert_path, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(ca_key_path, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days_from))
        .not_valid_after(now + datetime.timedelta(days=days_to))
        .sign(ca_key, hashes.SHA256())
    )
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    cert_path, key_path = directory / f"c{days_from}.pem", directory / f"c{days_from}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


@pytest.mark.parametrize(
    "days,expect",
    [
        ((-10, -1), "expired on"),
        ((1, 10), "is not valid yet"),
    ],
)
def test_certificate_dates_are_checked(certs, tmp_path, days, expect):
    cert, key = _client_cert(tmp_path, certs["ca_cert"], certs["ca_key"], *days)
    message = error_of(good(certs, "--cert", cert, "--key", key))
    assert expect in message and cert in message


def test_encrypted_key_needs_its_passphrase(certs, tmp_path):
    cert, key = _client_cert(tmp_path, certs["ca_cert"], certs["ca_key"], -1, 10, passphrase=b"open sesame")
    assert "is encrypted: give its passphrase with --key-password-file" in error_of(
        good(certs, "--cert", cert, "--key", key)
    )
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    wrong.chmod(0o600)
    assert "cannot be decrypted" in error_of(
        good(certs, "--cert", cert, "--key", key, "--key-password-file", str(wrong))
    )
    right = tmp_path / "right"
    right.write_text("open sesame\n")
    right.chmod(0o600)
    options = parse(good(certs, "--cert", cert, "--key", key, "--key-password-file", str(right)))
    assert options.runtime.tls_policy is not None and options.runtime.warnings == ()


def test_secrets_readable_by_others_are_warned_about(certs, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    pw.chmod(0o644)
    options = parse(good(certs, "--password-file", str(pw)))
    assert any(str(pw) in w and "chmod 600" in w for w in map(str, options.runtime.warnings))


def test_pass_parsed_in_process_is_kept_with_a_warning_flag(certs):
    options = parse(good(certs, "-pass", "pw"))
    assert options.runtime.password == "pw" and options.runtime.legacy_pass


def test_site_name_deletion_limit_and_mirror(certs):
    from redisrepl.merge import DeleteLimit

    options = parse(good(certs, "--site", "lab-42.a", "--max-delete", "250"))
    assert options.config.site_name == b"lab-42.a"
    assert options.config.max_delete == DeleteLimit(None, 250)
    assert options.config.names.meta == b"__redisrepl__:{ns:}:"
    assert parse(good(certs)).config.max_delete.limit(10_000) == 1000
    assert parse(good(certs, "--mirror")).config.mirror == 1
    assert "--site must be" in error_of(good(certs, "--site", "bad name"))
    assert "--max-delete must be" in error_of(good(certs, "--max-delete", "lots"))
    assert "--mirror is for one-way mode" in error_of(good(certs, "--mirror", "--rc"))
    assert "default now" in str(parse(good(certs, "--keep-remote-only")).runtime.warnings[0])


@pytest.mark.real_servers  # runs a process (no server)
def test_verify_without_options_says_so_and_exits_2_not_1_which_means_differ():
    result = subprocess.run(
        [sys.executable, "-m", "redisrepl", "verify"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("redisrepl-verify: error: "), result.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "redisrepl", "verify", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: redisrepl-verify") and "2 when they cannot be" in helped.stdout


@pytest.mark.real_servers  # runs a process (no server)
def test_reconcile_is_only_a_dry_run_and_says_so(certs):
    def redisrepl(*args):
        return subprocess.run(
            [sys.executable, "-m", "redisrepl", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
        )

    result = redisrepl("reconcile", "--haddr", "https://hub.example", "--nam", "x:", "--ca", "/nonexistent")
    assert result.returncode == 2 and result.stderr.startswith("redisrepl reconcile: error: "), result
    result = redisrepl("reconcile", *good(certs))
    assert result.returncode == 2 and "only --dry-run is a command" in result.stderr, result
    helped = redisrepl("reconcile", "--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: redisrepl reconcile --dry-run") and "1 when it would" in helped.stdout


def test_every_option_and_metric_is_in_the_readme():
    """The README is the reference: a new option or metric without a line
    there fails here."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    options = Options()
    names = [p[0] for p in options.optParameters] + [f[0] for f in options.optFlags]
    assert [n for n in names if f"`--{n}" not in readme] == []
    with open(os.path.join(ROOT, "redisrepl", "metrics.py"), encoding="utf-8") as f:
        metrics = re.findall(r'"(redisrepl_[a-z_]+)"', f.read())
    assert len(metrics) > 20
    assert [m for m in metrics if m not in readme] == []


def test_the_sdist_carries_the_tests_their_helpers_contrib_and_docs(monkeypatch):
    """MANIFEST.in, applied as the sdist build applies it (setuptools'
    FileList): pytest on an unpacked sdist finds everything it imports."""
    from setuptools._distutils.filelist import FileList

    monkeypatch.chdir(ROOT)  # FileList works on paths relative to the project
    files = FileList()
    files.findall(".")
    with open(os.path.join(ROOT, "MANIFEST.in"), encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                files.process_template_line(line.strip())
    kept = set(files.files)
    wanted = [
        os.path.join(folder, name)
        for folder in ("tests", "contrib", "docs", "bench")
        for name in os.listdir(folder)
        if name.endswith((".py", ".md", ".service", ".init", ".default", ".example"))
    ]
    assert len(wanted) > 40
    assert [name for name in wanted + ["dev.sh", ".ci/run", "README.md", "COPYING"] if name not in kept] == []
