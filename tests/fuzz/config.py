"""Mutated baton configs: argv[1] is a valid config, argv[2] an output directory, argv[3] how
many, argv[4] the seed. Writes 0.toml, 1.toml, ...: values replaced by extremes and wrong types,
lines dropped, duplicated or swapped, keys and tables invented, bytes flipped."""
import os
import random
import sys

base, out, count, seed = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
values = [b'"9223372036854775807s"', b'"0"', b'"-1s"', b'"1e400s"', b'""', b'0', b'-1', b'1e308',
          b'18446744073709551616', b'true', b'[]', b'{}', b'"notify"', b'"accepting"', b'"http"',
          b'"exec"', b'"delay"', b'"SIGKILL"', b'"/"', b'"unix:/"', b'"127.0.0.1:0"', b'"[::]:1"',
          b'"' + b"a" * 300 + b'"', b'"\\u0000"', b'2000', b'1025', b'99']
keys = [b"kind", b"timeout", b"delay", b"interval", b"probe_timeout", b"successes", b"exec",
        b"stable", b"startup_nice", b"max_starting", b"nice", b"signal", b"instances", b"cwd",
        b"control", b"backoff_initial", b"backoff_max", b"path", b"bogus"]
tables = [b"[readiness]", b"[drain]", b"[restart]", b"[env]", b"[sockets]", b"[x.y.z]", b"[[readiness]]"]
for n in range(count):
    lines = base.split(b"\n")
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        i = rng.randrange(len(lines))
        if op < 0.35 and b"=" in lines[i]:
            k = lines[i].split(b"=", 1)[0]
            lines[i] = k + b"= " + rng.choice(values)
        elif op < 0.5:
            lines.insert(i, rng.choice(keys) + b" = " + rng.choice(values))
        elif op < 0.6:
            lines.insert(i, rng.choice(tables))
        elif op < 0.7:
            del lines[i]
        elif op < 0.8:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op < 0.9 and lines[i]:
            b = bytearray(lines[i])
            b[rng.randrange(len(b))] = rng.getrandbits(8)
            lines[i] = bytes(b)
        else:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
    with open(os.path.join(out, f"{n}.toml"), "wb") as f:
        f.write(b"\n".join(lines))
