"""Writes an nginx configuration that routes like Starling's Kubernetes Ingress.

Usage: nginx_conf.py INGRESS_YAML PORT DIR GRAPH_URL POST_URL TIMELINE_URL[,TIMELINE_URL...]

The routes are read from the Ingress (k8s/base/ingress.yaml): each `path` with the
Service it goes to. As ingress-nginx does with `use-regex`, each path is a regular
expression anchored at the start, and longer paths are tried first. Anything else gets
the API's 404 error shape. Only the Ingress's own simple layout is understood (a `path:`
line, then its backend's `name:`); anything else is an error, not a silently empty table.
"""

import re
import sys
from urllib.parse import urlparse

UPSTREAMS = {
    "starling-graph-service": "graph",
    "starling-post-service": "posts",
    "starling-timeline-service": "timeline",
}


def routes(ingress_path):
    """(path regex, upstream) pairs in the Ingress's order."""
    out, path = [], None
    for n, line in enumerate(open(ingress_path, encoding="utf-8"), 1):
        line = line.split("#", 1)[0].rstrip()
        m = re.match(r"^\s*- path:\s*(\S+)\s*$", line)
        if m:
            if path is not None:
                sys.exit(f"{ingress_path}:{n}: path {path!r} has no backend service name")
            path = m.group(1)
            continue
        m = re.match(r"^\s*name:\s*(\S+)\s*$", line)
        if m and path is not None and m.group(1) in UPSTREAMS:
            out.append((path, UPSTREAMS[m.group(1)]))
            path = None
        elif m and path is not None:
            sys.exit(f"{ingress_path}:{n}: path {path!r} goes to unknown service {m.group(1)!r}")
    if path is not None or not out:
        sys.exit(f"{ingress_path}: no complete path routes found")
    return out


def server(url):
    u = urlparse(url)
    if u.scheme != "http" or not u.hostname or not u.port:
        sys.exit(f"expected http://host:port, got {url!r}")
    return f"{u.hostname}:{u.port}"


def main():
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    ingress, port, d, graph, posts, timelines = sys.argv[1:]
    if not port.isdigit():
        sys.exit(f"port must be a number, got {port!r}")
    upstreams = {"graph": [graph], "posts": [posts], "timeline": timelines.split(",")}
    table = sorted(routes(ingress), key=lambda r: -len(r[0]))
    print(f"""# Written by scripts/lib/nginx_conf.py from {ingress}; do not edit.
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    # A WebSocket upgrade passes through; anything else keeps its upstream connection.
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}""")
    for name, urls in upstreams.items():
        print(f"    upstream {name} {{")
        for url in urls:
            print(f"        server {server(url)};")
        print("        keepalive 32;\n    }")
    print(f"""    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        # Streams (server-sent events, WebSockets) flow as they come, and stay open.
        proxy_buffering off;
        proxy_read_timeout 1h;""")
    for path, upstream in table:
        print(f'        location ~ "^{path}" {{ proxy_pass http://{upstream}; }}')
    print("""        location / {
            default_type application/json;
            return 404 '{"error":{"code":"not_found","message":"no such route"}}';
        }
    }
}""")


if __name__ == "__main__":
    main()
