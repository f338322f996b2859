"""Random notification datagrams, with random descriptors attached (SCM_RIGHTS), sent to
baton's notify socket: argv[1] is the socket, argv[2] the number of datagrams, argv[3] the seed.
Mixes garbage bytes with mutations of real fields (READY=1, STATUS=, STOPPING=1, BARRIER=1,
MAINPID=, WATCHDOG=1) and lengths from 0 to the whole datagram buffer and beyond."""
import array
import os
import random
import socket
import sys

path, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
pool = [os.open("/dev/null", os.O_RDONLY) for _ in range(253)]
fields = [b"READY=1", b"READY=0", b"STATUS=", b"STOPPING=1", b"BARRIER=1", b"MAINPID=",
          b"WATCHDOG=1", b"RELOADING=1", b"FDSTORE=1", b"=", b"\n", b"\x00", b"\xff\xfe"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sent = 0
for _ in range(count):
    kind = rng.random()
    if kind < 0.3:
        data = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 7, 100, 4095, 4096, 5000])))
    else:
        parts = [rng.choice(fields) + (str(rng.randint(-2**40, 2**40)).encode() if rng.random() < 0.3 else b"")
                 for _ in range(rng.randint(1, 12))]
        data = b"\n".join(parts)
        if rng.random() < 0.1:
            data += b"x" * rng.randint(0, 70000)
    nfds = rng.choice([0, 0, 1, 2, 16, 17, 100, 253])
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", pool[:nfds]))] if nfds else []
    try:
        s.sendmsg([data[:65000]], anc, 0, path)
        sent += 1
    except (BlockingIOError, OSError):
        pass
print(sent)
