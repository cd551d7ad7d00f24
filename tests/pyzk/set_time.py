"""Reads the device time, sets it with pyzk, and reads it back.

usage: set_time.py HOST PORT PASSWORD "YYYY-MM-DD HH:MM:SS"
Prints {"before": "...", "after": "..."}.
"""
import sys
from datetime import datetime

from common import connect, emit

FMT = "%Y-%m-%d %H:%M:%S"


def main():
    host, port, password, when = sys.argv[1:5]
    conn = connect(host, port, password)
    before = conn.get_time().strftime(FMT)
    conn.set_time(datetime.strptime(when, FMT))
    after = conn.get_time().strftime(FMT)
    conn.disconnect()
    emit({"before": before, "after": after})


main()
