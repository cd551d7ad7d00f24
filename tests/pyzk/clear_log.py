"""Reads the log, clears it with pyzk, and reads it again.

usage: clear_log.py HOST PORT PASSWORD
Prints {"before": N, "cleared": true, "after": M, "records_after": R}.
"""
import sys

from common import connect, emit


def main():
    host, port, password = sys.argv[1:4]
    conn = connect(host, port, password)
    before = len(conn.get_attendance())
    cleared = conn.clear_attendance()
    conn.read_sizes()
    records_after = conn.records
    after = len(conn.get_attendance())
    conn.disconnect()
    emit({"before": before, "cleared": cleared, "after": after, "records_after": records_after})


main()
