"""Prints each realtime attendance event pyzk's live_capture receives, one JSON line each.

usage: live_capture.py HOST PORT PASSWORD COUNT
Prints {"listening": true} once subscribed is about to happen (the test waits for the simulator's
counter instead), then one line per event; stops after COUNT events (or 30 s without one).
"""
import sys
import time

from common import attendance_json, connect, emit


def main():
    host, port, password, count = sys.argv[1:5]
    count = int(count)
    conn = connect(host, port, password)
    got = 0
    deadline = time.monotonic() + 30
    for att in conn.live_capture(new_timeout=1):
        if att is None:
            if time.monotonic() > deadline:
                emit({"timeout": True})
                conn.end_live_capture = True
            continue
        emit({"event": attendance_json(att)})
        got += 1
        deadline = time.monotonic() + 30
        if got >= count:
            conn.end_live_capture = True
    conn.disconnect()
    emit({"done": got})


main()
