"""Random requests on baton's control socket: argv[1] is the socket, argv[2] the number of
connections, argv[3] the seed. Garbage lines, mutated JSON, lines without an end, lines past
the 4 KiB limit, half a request then a close; every connection is closed by the end."""
import random
import socket
import sys

path, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
valid = [b'{"op":"status"}', b'{"op": "status", "x": 1}', b'{"op":"STATUS"}', b'{"op":1}',
         b'{"op":"reload"', b'[]', b'null', b'{}', b'"status"', b'{"op":"status"}{"op":"status"}']


def mutate(b):
    b = bytearray(b)
    for _ in range(rng.randint(0, 4)):
        if b and rng.random() < 0.5:
            b[rng.randrange(len(b))] = rng.getrandbits(8)
        else:
            b.insert(rng.randint(0, len(b)), rng.getrandbits(8))
    return bytes(b)


answered = 0
for _ in range(count):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(2)
    try:
        c.connect(path)
        kind = rng.random()
        if kind < 0.4:
            line = mutate(rng.choice(valid)) + b"\n"
        elif kind < 0.6:
            line = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))) + b"\n"
        elif kind < 0.7:
            line = b"x" * rng.randint(4000, 20000)
        elif kind < 0.8:
            line = mutate(rng.choice(valid))[:rng.randint(0, 10)]
        else:
            line = b'{"op":"status"}\n'
        c.sendall(line)
        if rng.random() < 0.5:
            c.shutdown(socket.SHUT_WR)
            if c.recv(1 << 20):
                answered += 1
    except OSError:
        pass
    finally:
        c.close()
print(answered)
