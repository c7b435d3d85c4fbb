"""Where a sandbox keeps everything, all in its one work dir::

    certs/                  generated certificates (certificates.py) and the sites' own
    <stem>/dump.rdb         a Redis' data dir (its --dir) and the dump SAVE writes
    <stem>.sock             a Redis' unix socket
    <stem>.log              a Redis' log
    <stem>.console          any component's stdout and stderr
    webdis.json webdis.log  Webdis' configuration and log
    nginx/                  nginx's prefix: nginx.conf, error.log, access.log, pid, temp dirs

A component's stem is its name with no colon ("site:paris" -> "site-paris").
Pure functions of the work dir and a component's name.
"""

import os

DUMP = "dump.rdb"


def stem(component: str) -> str:
    """The file name stem of a component's log, console, socket and data dir
    ("site:paris" -> "site-paris": no colon in file names)."""
    return component.replace(":", "-")


def certs_dir(workdir: str) -> str:
    return os.path.join(workdir, "certs")


def data_dir(workdir: str, component: str) -> str:
    """A Redis' ``--dir``."""
    return os.path.join(workdir, stem(component))


def dump_path(workdir: str, component: str) -> str:
    """The RDB file a Redis' ``SAVE`` writes and its start loads."""
    return os.path.join(data_dir(workdir, component), DUMP)


def socket_path(workdir: str, component: str) -> str:
    """The unix socket a Redis also listens on."""
    return os.path.join(workdir, stem(component) + ".sock")


def console_path(workdir: str, component: str) -> str:
    """Where a component's stdout and stderr go."""
    return os.path.join(workdir, stem(component) + ".console")


def nginx_root(workdir: str) -> str:
    return os.path.join(workdir, "nginx")


def webdis_config_path(workdir: str) -> str:
    return os.path.join(workdir, "webdis.json")


def log_path(workdir: str, component: str) -> str:
    """A component's own log (a Redis' --logfile, Webdis' logfile, nginx's error log)."""
    return os.path.join(workdir, log_names(component)[0])


def log_names(component: str) -> list[str]:
    """A component's log files, relative to the work dir: its own log, then its console."""
    logs = {"webdis": ["webdis.log"], "nginx": [os.path.join("nginx", "error.log")]}
    return logs.get(component, [stem(component) + ".log"]) + [stem(component) + ".console"]
