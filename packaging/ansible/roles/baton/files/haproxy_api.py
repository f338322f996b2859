"""One command to HAProxy's runtime API (`stats socket ... level admin`), for restart.yml.

ADDRESS is the socket's path (/run/haproxy/admin.sock) or HOST:PORT (`stats socket ipv4@`).

  haproxy_api.py ADDRESS set BACKEND SERVER STATE   set server BACKEND/SERVER state STATE
  haproxy_api.py ADDRESS stat BACKEND SERVER        print the server's status and current
                                                    sessions (`show stat`: status, scur)

Python's standard library only: it runs wherever Ansible runs modules, with no socat.
"""
import socket
import sys


def ask(address, command):
    if address.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(address)
    else:
        host, _, port = address.rpartition(":")
        s = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    with s:
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def main(argv):
    if len(argv) == 6 and argv[2] == "set":
        _, address, _, backend, server, state = argv
        command = f"set server {backend}/{server} state {state}"
        out = ask(address, command).strip()
        if out:  # HAProxy answers nothing when it did it
            sys.exit(f"HAProxy {address}: {command}: {out}")
        print(f"{backend}/{server}: {state}")
        return
    if len(argv) == 5 and argv[2] == "stat":
        _, address, _, backend, server = argv
        lines = ask(address, "show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            sys.exit(f"HAProxy {address}: show stat: {' '.join(lines)}")
        header = lines[0][2:].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == backend and row.get("svname") == server:
                print(row["status"].replace(" ", "_"), row["scur"] or "0")
                return
        sys.exit(f"HAProxy {address}: no server {backend}/{server}")
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
