#!/usr/bin/python3
"""pyftpd_norest.py: an FTP server without REST, for haul's test bed.

pyftpdlib (Debian's python3-pyftpdlib) with one user whose home is --root,
and a command handler that answers every REST with
"502 Command 'REST' not implemented" and leaves REST out of FEAT (no
"REST STREAM"): a server that can neither resume an upload (REST + STOR)
nor start a download at an offset (REST + RETR). Everything else is stock
pyftpdlib: EPSV/PASV on --pasv, SIZE, MDTM, MLSD, APPE, ...

Started by up.sh (in the background, its pid recorded) and stopped by
down.sh. The password is read from the environment variable
HAUL_PYFTPD_PASSWORD, so that it does not show in ps.
"""

import argparse
import logging
import os
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

NO_REST = "Command 'REST' not implemented"


class NoRestHandler(FTPHandler):
    """FTPHandler without REST: 502 on REST, not advertised in FEAT/HELP."""

    proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items() if k != "REST"}

    def pre_process_command(self, line, cmd, arg):
        if cmd == "REST":
            self.logline("<- %s" % line)
            self.respond("502 " + NO_REST)
            self.log_cmd(cmd, arg, 502, NO_REST)
            return
        super().pre_process_command(line, cmd, arg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", required=True, help="the user's home (chroot)")
    ap.add_argument("--user", required=True)
    ap.add_argument("--pasv", required=True, help="passive port range MIN-MAX")
    ap.add_argument("--log", help="log file (default stderr)")
    args = ap.parse_args()

    password = os.environ.get("HAUL_PYFTPD_PASSWORD")
    if not password:
        sys.exit("pyftpd_norest.py: HAUL_PYFTPD_PASSWORD is not set")
    lo, hi = (int(p) for p in args.pasv.split("-", 1))

    logging.basicConfig(
        filename=args.log,
        level=logging.INFO,
        format="%(asctime)s [%(process)d] %(levelname)s %(message)s",
    )

    auth = DummyAuthorizer()
    # e l r a d f m w M T: every permission (cwd, list, retrieve, append,
    # delete, rename, mkdir, store, chmod, mtime).
    auth.add_user(args.user, password, args.root, perm="elradfmwMT")

    handler = NoRestHandler
    handler.authorizer = auth
    handler.passive_ports = range(lo, hi + 1)
    handler.banner = "haul test bed: pyftpdlib without REST"

    server = FTPServer((args.host, args.port), handler)
    server.max_cons = 256
    server.serve_forever()


if __name__ == "__main__":
    main()
