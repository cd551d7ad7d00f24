"""Shared by the pyzk scripts: argument parsing, the connection, JSON output."""
import json
import sys

from zk import ZK


def connect(host, port, password, timeout=20):
    """Connects with pyzk over TCP (force_udp=False), without ping (loopback)."""
    zk = ZK(host, port=int(port), timeout=timeout, password=int(password),
            force_udp=False, ommit_ping=True)
    return zk.connect()


def emit(obj):
    """Prints one JSON line and flushes (the Rust test reads lines as they come)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def attendance_json(a):
    return {
        "user_id": str(a.user_id),
        "uid": int(a.uid) if str(a.uid).isdigit() else str(a.uid),
        "timestamp": a.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
        "status": int(a.status),
        "punch": int(a.punch),
    }


def user_json(u):
    return {
        "uid": u.uid,
        "user_id": u.user_id,
        "name": u.name,
        "privilege": u.privilege,
        "password": u.password,
        "group_id": u.group_id,
        "card": u.card,
    }
