"""An S3-compatible server for Ferry's tests: moto's server mode on 127.0.0.1.

Used by the ferry-files test suite and by `cargo xtask test` (which embeds this file). Listens
on a port the system picks (no race for a "free" port), prints "listening on PORT" once it
accepts connections, and serves until its standard input closes. The process that starts it
holds the other end of that pipe, so the server never outlives it, even when it is killed.
Exits with status 3 when moto is not installed, so the caller can install it.
"""

import logging
import sys

try:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
except ImportError as e:
    print(f"moto is not installed ({e}); pip install 'moto[server]'", file=sys.stderr)
    sys.exit(3)

# Werkzeug logs every request to stderr otherwise.
logging.getLogger("werkzeug").setLevel(logging.ERROR)

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(f"listening on {server.get_host_and_port()[1]}", flush=True)
sys.stdin.read()
