"""Reads everything pyzk can read from a device and prints one JSON object.

usage: read_device.py HOST PORT PASSWORD
Prints {"connect_error": "..."} (exit 0) if pyzk's connect fails (e.g. a wrong comm key).
"""
import sys

from zk.exception import ZKErrorResponse

from common import attendance_json, connect, emit, user_json


def main():
    host, port, password = sys.argv[1:4]
    try:
        conn = connect(host, port, password)
    except ZKErrorResponse as e:
        emit({"connect_error": str(e)})
        return
    out = {}
    out["firmware"] = conn.get_firmware_version()
    out["serial"] = conn.get_serialnumber()
    out["platform"] = conn.get_platform()
    out["device_name"] = conn.get_device_name()
    out["fp_version"] = conn.get_fp_version()
    out["face_version"] = conn.get_face_version()
    out["extend_fmt"] = conn.get_extend_fmt()
    out["mac"] = conn.get_mac()
    out["pin_width"] = conn.get_pin_width()
    out["time"] = conn.get_time().strftime("%Y-%m-%d %H:%M:%S")
    conn.disable_device()
    conn.read_sizes()
    out["sizes"] = {
        "users": conn.users, "records": conn.records,
        "users_cap": conn.users_cap, "rec_cap": conn.rec_cap, "rec_av": conn.rec_av,
    }
    out["users"] = [user_json(u) for u in conn.get_users()]
    out["user_packet_size"] = conn.user_packet_size
    out["attendance"] = [attendance_json(a) for a in conn.get_attendance()]
    # a second read in the same session: the buffer was freed and is prepared again
    out["attendance_again"] = len(conn.get_attendance())
    conn.enable_device()
    conn.disconnect()
    emit(out)


main()
