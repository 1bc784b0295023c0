#!/usr/bin/env python3
"""Take a Redlock over independent rlock servers, do some work while it is valid, release it.

    python examples/redlock.py redis://10.0.0.1:6379 redis://10.0.0.2:6379 redis://10.0.0.3:6379 \\
        --name nightly-report --ttl 30 --work 2

Each URL is one independent server (no replication between them) with the rlock module loaded;
unix sockets work too (unix:///run/redis/a.sock). The lock is held when a majority granted it;
its validity is the TTL minus the time taken to get it and an allowance for clock drift. The
work must end before the validity does: here it checks the time left before each step.

Exit status: 0 done, 1 not acquired (someone else holds it, or too few servers answered), 2 the
validity ran out before the work was done.
"""

import argparse
import sys
import time
from pathlib import Path

try:
    from rlock.redlock import Redlock
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))
    from rlock.redlock import Redlock


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="+", metavar="URL", help="one redis:// or unix:// URL per server")
    parser.add_argument("--name", default="redlock-example", help="the lock's name (default %(default)s)")
    parser.add_argument("--ttl", type=int, default=10, help="lease in whole seconds (default %(default)s)")
    parser.add_argument("--work", type=float, default=1.0, help="seconds of pretend work (default %(default)s)")
    parser.add_argument("--server-timeout", type=float, default=0.1,
                        help="seconds to wait for the servers' replies per attempt (default %(default)s)")
    args = parser.parse_args()

    lock = Redlock(args.urls, args.name, args.ttl, server_timeout=args.server_timeout)
    start = time.monotonic()
    held = lock.acquire()
    if not held:
        print(f"not acquired: {args.name!r} is held elsewhere or fewer than {lock.quorum} of "
              f"{len(lock.clients)} servers answered", file=sys.stderr)
        return 1
    valid_until = time.monotonic() + held.validity
    # acquire() decides at the majority; the other servers are still sent the lock
    print(f"acquired {args.name!r} in {(time.monotonic() - start) * 1000:.1f} ms ({held.servers} of "
          f"{len(lock.clients)} servers had granted it), token {held.token}, valid for {held.validity:.3f} s")
    try:
        steps = max(1, int(args.work / 0.1))
        for step in range(steps):
            if time.monotonic() + 0.1 > valid_until:
                print(f"validity running out after {step} of {steps} steps: stopping", file=sys.stderr)
                return 2
            time.sleep(args.work / steps)  # one step of work, e.g. a write fenced by the deadline
        print(f"work done, {valid_until - time.monotonic():.3f} s of validity left")
    finally:
        released = lock.release()
        print(f"released on {released}/{len(lock.clients)} servers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
