"""Times pyzk reading a device's whole attendance log.

usage: bench_read.py HOST PORT [PASSWORD]
Connects with pyzk over TCP, reads the whole attendance log (get_attendance: sizes, users, the
buffered chunked read and pyzk's decoding) and disconnects; prints one JSON line
{"records": N, "seconds": S, "records_per_sec": R}, where S covers connect to disconnect.
"""
import sys
import time

from common import connect, emit


def main():
    host, port = sys.argv[1:3]
    password = sys.argv[3] if len(sys.argv) > 3 else 0
    t0 = time.perf_counter()
    conn = connect(host, port, password, timeout=60)
    records = conn.get_attendance()
    conn.disconnect()
    seconds = time.perf_counter() - t0
    n = len(records)
    emit({"records": n, "seconds": round(seconds, 6),
          "records_per_sec": round(n / seconds, 1) if seconds > 0 else None})


main()
