"""The configuration files the sandbox writes: nginx's (the mTLS proxy in front of
Webdis) and Webdis' (in front of the remote Redis).  Pure text; the Redis servers
take their few settings as flags (components.py).

``nginx_config()`` is the full file behind README's "The hub side".
"""

import json


def nginx_config(
    *,
    root: str,
    proxy_port: int,
    webdis_port: int,
    server_cert: str,
    server_key: str,
    ca_cert: str,
    path_prefix: str = "/redis",
) -> str:
    """nginx.conf for the mTLS proxy; ``root`` holds pid, logs and temp dirs."""
    location = path_prefix.rstrip("/") + "/"
    return f"""\
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body_temp;
    proxy_temp_path {root}/proxy_temp;
    fastcgi_temp_path {root}/fastcgi_temp;
    uwsgi_temp_path {root}/uwsgi_temp;
    scgi_temp_path {root}/scgi_temp;

    upstream webdis_upstream {{
        server 127.0.0.1:{webdis_port};
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{proxy_port} ssl;
        server_name localhost;

        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_client_certificate {ca_cert};
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_protocols TLSv1.2 TLSv1.3;

        location {location} {{
            proxy_pass http://webdis_upstream/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            client_max_body_size 128m;
        }}
    }}
}}
"""


def webdis_config(*, redis_port: int, http_port: int, logfile: str) -> str:
    """Webdis' JSON configuration (Debian's defaults: DEBUG disabled)."""
    return (
        json.dumps(
            {
                "redis_host": "127.0.0.1",
                "redis_port": redis_port,
                "redis_auth": None,
                "http_host": "127.0.0.1",
                "http_port": http_port,
                "threads": 2,
                "daemonize": False,
                "database": 0,
                "acl": [{"disabled": ["DEBUG"]}],
                "verbosity": 3,
                "logfile": logfile,
            },
            indent=4,
        )
        + "\n"
    )
