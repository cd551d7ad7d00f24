"""An independent ISAPI client: reads a Hikvision terminal (or clockbridge's simulator of one) with the
`requests` library and its HTTP Digest authentication, the way public scripts do, and prints one JSON
object: what it read and how long the event log took.

Usage: read_log.py URL USER PASSWORD [--max-results N] [--stream-seconds S]
"""
import json
import sys
import time
import uuid
import xml.etree.ElementTree as ET

import requests
from requests.auth import HTTPDigestAuth


def leaf(doc, name):
    for el in ET.fromstring(doc).iter():
        if el.tag.split("}")[-1] == name:
            return el.text
    return None


def main():
    url, user, password = sys.argv[1:4]
    max_results = 30
    stream_seconds = 0.0
    args = sys.argv[4:]
    while args:
        if args[0] == "--max-results":
            max_results = int(args[1])
        elif args[0] == "--stream-seconds":
            stream_seconds = float(args[1])
        args = args[2:]
    s = requests.Session()
    s.auth = HTTPDigestAuth(user, password)
    out = {}
    r = s.get(url + "/ISAPI/System/deviceInfo", timeout=10)
    out["device_info_status"] = r.status_code
    if r.status_code != 200:
        print(json.dumps(out))
        return
    out["serial_number"] = leaf(r.content, "serialNumber")
    r = s.get(url + "/ISAPI/System/time", timeout=10)
    out["local_time"] = leaf(r.content, "localTime")
    out["time_zone"] = leaf(r.content, "timeZone")

    # the event log, page by page, until the status is not MORE
    search_id = str(uuid.uuid4())
    pos, pages, events, largest, serials, statuses = 0, 0, 0, 0, [], set()
    t = time.monotonic()
    while True:
        body = {"AcsEventCond": {"searchID": search_id, "searchResultPosition": pos,
                                 "maxResults": max_results, "major": 5, "minor": 0,
                                 "startTime": "2022-01-01T00:00:00+08:00",
                                 "endTime": "2037-12-31T23:59:59+08:00"}}
        r = s.post(url + "/ISAPI/AccessControl/AcsEvent?format=json", json=body, timeout=10)
        r.raise_for_status()
        a = r.json()["AcsEvent"]
        pages += 1
        got = a.get("InfoList", [])
        events += len(got)
        largest = max(largest, len(got))
        serials.extend(e["serialNo"] for e in got)
        statuses.add(a["responseStatusStrg"])
        pos += a["numOfMatches"]
        if a["responseStatusStrg"] != "MORE":
            break
    out.update(seconds=time.monotonic() - t, pages=pages, events=events, largest_page=largest,
               statuses=sorted(statuses), serials_ascending=serials == sorted(serials),
               last_serial=serials[-1] if serials else None)

    users, pos = [], 0
    while True:
        body = {"UserInfoSearchCond": {"searchID": search_id, "searchResultPosition": pos,
                                       "maxResults": max_results}}
        r = s.post(url + "/ISAPI/AccessControl/UserInfo/Search?format=json", json=body, timeout=10)
        r.raise_for_status()
        u = r.json()["UserInfoSearch"]
        users.extend(x["employeeNo"] for x in u.get("UserInfo", []))
        pos += u["numOfMatches"]
        if u["responseStatusStrg"] != "MORE":
            break
    out["users"] = len(users)

    if stream_seconds > 0:
        # the alert stream: count the parts of each kind for a while
        parts = {"heartBeat": 0, "AccessControllerEvent": 0, "other": 0}
        r = s.get(url + "/ISAPI/Event/notification/alertStream", stream=True, timeout=10)
        out["stream_content_type"] = r.headers.get("Content-Type")
        end = time.monotonic() + stream_seconds
        buf = b""
        for chunk in r.iter_content(chunk_size=None):
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")]
                if not length or len(rest) < length[0]:
                    break
                doc, buf = rest[:length[0]], rest[length[0]:]
                kind = json.loads(doc).get("eventType", "other")
                parts[kind if kind in parts else "other"] += 1
            if time.monotonic() > end:
                break
        r.close()
        out["stream_parts"] = parts
    print(json.dumps(out))


if __name__ == "__main__":
    main()
