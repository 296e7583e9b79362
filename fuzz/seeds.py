#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/<target>/ (files named `seed-*`).

Each seed is a meaningful input in the layout its target documents (see the `fuzzing` modules
of proto, core and storage-file). The encoders below mirror those layouts; when a layout
changes, change them and run `python3 fuzz/seeds.py` again. Corpus files not named `seed-*`
are minimized fuzzer finds and are left alone.
"""

import os
import struct
import sys

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


# --- protobuf, by hand ----------------------------------------------------------------------

def varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def client_frame(request_id, body_field, body):
    return field_varint(1, request_id) + field_bytes(body_field, body)


def hello(producer_id=0):
    return field_varint(1, 1) + field_bytes(2, "seed") + field_varint(3, producer_id)


def settings(kind, max_messages=0, overflow=0, ack_timeout_ms=0, max_deliveries=0):
    return (field_varint(1, kind) + field_varint(2, max_messages) + field_varint(4, overflow)
            + field_varint(5, ack_timeout_ms) + field_varint(6, max_deliveries))


def publish(queue, payloads):
    body = field_bytes(1, queue)
    for payload in payloads:
        message = field_bytes(1, payload) + field_bytes(2, field_bytes(1, "k") + field_bytes(2, "v"))
        body += field_bytes(2, message)
    return body


def frame(body):
    return struct.pack(">I", len(body)) + body


# --- client_frame: [max u16 LE][chunking][stream] --------------------------------------------

def client_frame_seeds():
    requests = [
        client_frame(1, 2, hello(7)),
        client_frame(2, 3, field_bytes(1, "orders") + field_bytes(2, settings(2))),
        client_frame(3, 8, publish("orders", [b"first", b"second"])),
        client_frame(4, 9, field_bytes(1, "orders") + field_varint(5, 8)),
        client_frame(5, 12, field_varint(1, 1) + field_varint(2, 1)
                     + field_bytes(3, field_varint(1, 1) + field_varint(2, 1))),
        client_frame(6, 15, b""),
    ]
    stream = b"".join(frame(request) for request in requests)
    every_kind = b"".join(
        frame(client_frame(number, number + 1, b"")) for number in range(1, 15))
    odd = (field_varint(1, 9) + field_varint(99, 5)                    # unknown field
           + field_bytes(9, field_bytes(1, "q") + b"\x10\xff\xff\xff\xff\x0f"))  # enum -1, 5 bytes
    return {
        "seed-default-max-one-byte-at-a-time": b"\xff\xff\x01" + stream,
        "seed-default-max-one-chunk": b"\xff\xff\x00" + stream,
        "seed-small-max-random-chunks": struct.pack("<H", 40) + b"\x07" + stream,
        "seed-every-request-kind-empty": b"\x00\x04\x05" + every_kind,
        "seed-hostile-length-prefix": b"\x00\x04\x00" + b"\xff\xff\xff\xff" + b"abc",
        "seed-truncated-frame": b"\x00\x04\x03" + frame(requests[2])[:-3],
        "seed-malformed-body": b"\x00\x04\x02" + frame(b"\xff\xff\xff") + frame(b"\x08"),
        "seed-zero-length-frames": b"\x10\x00\x09" + b"\x00" * 12 + frame(requests[5]),
        "seed-zero-max": b"\x00\x00\x00" + b"\x00\x00\x00\x00\x00\x00\x00\x01\xaa",
        "seed-unknown-fields-and-negative-enum": b"\x00\x04\x01" + frame(odd),
    }


# --- admin_http: raw bytes -------------------------------------------------------------------

def admin_http_seeds():
    body = b'{"kind":"persistent","max_messages":5}'
    return {
        "seed-get-healthz": b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "seed-put-queue-with-body": b"PUT /v1/queues/orders HTTP/1.1\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nContent-Type: application/json\r\n\r\n" + body,
        "seed-post-purge-with-query": b"POST /v1/queues/q/purge?dry=1&x HTTP/1.0\r\n"
        b"content-length: 0\r\n\r\n",
        "seed-bare-line-feeds": b"DELETE /v1/queues/q HTTP/1.1\nHost: a\nContent-Length: 2\n\nhi",
        "seed-chunked-is-refused": b"POST /v1/queues HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        "seed-body-too-large": b"PUT /v1/queues/q HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n",
        "seed-length-not-a-number": b"PUT /v1/queues/q HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "seed-incomplete-head": b"GET /metrics HTTP/1.1\r\nHost: loc",
        "seed-incomplete-body": b"PUT /v1/queues/q HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"ki",
        "seed-empty-path-with-query": b"GET ?only=query HTTP/1.1\r\n\r\n",
        "seed-two-requests-pipelined": b"GET /readyz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        "seed-too-many-headers": b"GET / HTTP/1.1\r\n" + b"".join(
            b"h%d: v\r\n" % number for number in range(70)) + b"\r\n",
        "seed-garbage": b"\x00\x01 garbage\r\n\r\n",
    }


# --- config_toml: file, NUL, then `NAME=VALUE` / `--section.key=value` lines ------------------

DEFAULT_CONFIG = """[server]
node_id = 1
listen = "127.0.0.1:7654"
admin_listen = "127.0.0.1:7655"
data_dir = "./krest-data"

[limits]
max_frame_bytes = 8388608
max_message_bytes = 4194304
max_connections = 10000
max_queues = 10000
max_consumers_per_connection = 1000
max_subscriptions_per_queue = 1000
max_in_flight_per_consumer = 10000
max_fetch_messages = 1000
max_fetch_wait_ms = 300000
max_unconfirmed_per_connection = 4096
max_ack_timeout_ms = 86400000
max_delay_ms = 31622400000
idempotency_window_per_producer = 4096
max_idempotent_producers = 4096
idle_timeout_ms = 300000

[queue_defaults]
max_messages = 10000000
max_bytes = 4294967296
ack_timeout_ms = 30000
max_deliveries = 0
prefetch = 256

[storage]
segment_bytes = 67108864
"""


def config_toml_seeds():
    return {
        "seed-empty": b"",
        "seed-every-key": DEFAULT_CONFIG.encode(),
        "seed-file-environment-and-flags": b"[server]\nnode_id = 7\n\0"
        b"KREST_LIMITS_MAX_QUEUES=12\nKREST_SERVER_LISTEN=0.0.0.0:1\nPATH=/bin\n"
        b"--limits.max_connections=5\n--server.data_dir=/var/lib/krest\n",
        "seed-unknown-key": b"[limits]\nmax_frame_byts = 5\n",
        "seed-wrong-type": b'[limits]\nmax_queues = "many"\n',
        "seed-invalid-relation": b"[limits]\nmax_frame_bytes = 2048\nmax_message_bytes = 2000\n",
        "seed-out-of-range-numbers": b"[limits]\nmax_queues = -1\n[server]\n"
        b"node_id = 9223372036854775807\n[storage]\nsegment_bytes = 4096\n",
        "seed-dotted-and-inline-tables": b'server.node_id = 3\nlimits = { max_queues = 2 }\n'
        b'queue_defaults.prefetch = 1\n',
        "seed-environment-errors": b"\0KREST_LIMITS_MAX_WIDGETS=1\nKREST_LIMITS_MAX_QUEUES=ten\n",
        "seed-flag-errors": b"\0--server.node_id=abc\n--nosection=1\n--=x\n--limits.max_queues=0\n",
        "seed-floats-dates-arrays": b"[limits]\nmax_queues = 1.5\n[server]\n"
        b"node_id = 1979-05-27T07:32:00Z\nlisten = [1, 2]\n",
        "seed-duplicate-key": b"[server]\nnode_id = 1\nnode_id = 2\n",
        "seed-multiline-and-escapes": b'[server]\nlisten = """\nline\\u00e9"""\n'
        b"data_dir = 'C:\\\\krest'\n",
    }


# --- storage_recovery: [flags] then [first index][u16 LE length][content] per segment ----------

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def record(index, body, term=1):
    covered = struct.pack("<I", len(body)) + struct.pack("<QQ", term, index) + body
    checksum = crc32c(covered)
    return struct.pack("<II", len(body), checksum) + struct.pack("<QQ", term, index) + body


def records(first, count, size=12):
    return b"".join(record(index, bytes([index % 251]) * size) for index in range(first, first + count))


def segment(first_index_selector, content):
    return bytes([first_index_selector]) + struct.pack("<H", len(content)) + content


def storage_recovery_seeds():
    clean = records(1, 3)
    flipped = bytearray(clean)
    flipped[36 + 30] ^= 0x08  # inside the second record's body
    near_max = 2**64 - 2
    return {
        "seed-clean-meta": b"\x00" + segment(1, clean),
        "seed-torn-tail": b"\x01" + segment(1, clean + records(4, 1)[:20]),
        "seed-zero-filled-tail": b"\x01" + segment(1, clean + b"\x00" * 64),
        "seed-bit-flip-before-valid-records": b"\x00" + segment(1, bytes(flipped)),
        "seed-two-consecutive-segments": b"\x10" + segment(1, clean) + segment(4, records(4, 2)),
        "seed-gap-between-segments": b"\x00" + segment(1, clean) + segment(6, records(6, 2)),
        "seed-empty-newest-segment": b"\x00" + segment(1, clean) + segment(4, b""),
        "seed-empty-older-segment": b"\x00" + segment(1, b"") + segment(2, records(2, 1)),
        "seed-two-logs": b"\x24" + segment(1, clean) + segment(1, records(1, 2))
        + segment(4, records(4, 1)),
        "seed-half-removed-log-left-behind": b"\x08" + segment(1, clean),
        "seed-unknown-log-name": b"\x03" + segment(1, clean),
        "seed-largest-queue-id": b"\x02" + segment(1, clean),
        "seed-index-space-end": b"\x01" + segment(254, record(near_max, b"a") + record(near_max + 1, b"b")),
        "seed-index-space-end-torn": b"\x01" + segment(255, record(near_max + 1, b"z") + b"\x07" * 30),
        "seed-index-going-backwards": b"\x00" + segment(3, records(2, 2)),
        "seed-index-zero": b"\x00" + segment(0, records(0, 2)),
        "seed-stale-record-after-bad-one": b"\x00" + segment(1, clean + b"\xab" * 7 + records(2, 1)),
        "seed-record-past-end": b"\x00" + segment(1, clean + struct.pack("<I", 4000) + b"\x00" * 30),
    }


# --- core_inputs: see krest_core::fuzzing ------------------------------------------------------

class Script:
    """Builds a core_inputs input step by step, mirroring `ByteSource` and the driver. The
    caller keeps track of the driver's state (clients, known subscription ids) in its head."""

    # Step numbers (the first byte of a step, `below(20)`).
    REQUEST, CONNECT, DISCONNECT, GARBAGE, STREAM_ERROR = 0, 7, 8, 9, 10
    ADVANCE, SYNC, FAIL, ADMIN, RESTART, REPLACE = 11, 13, 16, 17, 18, 19

    def __init__(self, max_deliveries=0, seed=7):
        self.out = bytearray([max_deliveries]) + struct.pack("<Q", seed)

    def bytes(self, *values):
        self.out += bytes(values)
        return self

    def connect(self, producer_id=0):
        # Hello (chance 232: byte 0), the right version (chance 16 fails: 255), producer id.
        return self.bytes(self.CONNECT, 0, 255, producer_id)

    def request(self, client, body):
        # Pick the client, a fresh request id (chance 8 fails), a body (chance 4 fails).
        self.bytes(self.REQUEST, client, 255, 255)
        self.out += body
        return self

    def sync_all(self):
        return self.bytes(self.SYNC, 0)

    def advance(self, milliseconds):
        # A step of up to 20 s (case 2, u16), and the wall clock moves with it (case 2 of 16).
        self.bytes(self.ADVANCE, 2)
        self.out += struct.pack("<H", milliseconds)
        return self.bytes(2)

    def restart(self, logs):
        # Lose nothing unsynced: one byte per log.
        return self.bytes(self.RESTART, *([0] * logs))

    def admin(self, method, path_case, name, body_case):
        return self.bytes(self.ADMIN, method, *name, path_case, body_case)

    def build(self):
        return bytes(self.out)


# Queue names as `queue_name` reads them: chance 232 (byte 0), then the index.
Q, P, D, Q_DLQ, DL = ([0, index] for index in range(5))
TEMPORARY, PERSISTENT, DELAY = 1, 2, 3


def declare(name, kind, max_messages=0, max_deliveries=0, dead_letter=0):
    # Kind 1 of client_request, settings present (chance 224: 0), settings in field order.
    return bytes([1, *name, 0, kind, max_messages, 255, 0, 255]) + struct.pack(
        "<H", 1000) + bytes([max_deliveries, dead_letter])


def publish_messages(name, count, payload=8, header_bytes=None, delay_ms=None,
                     producer_sequence=0):
    out = bytearray([7, count])
    for number in range(count):
        if payload == 70:
            out += bytes([0, number])          # chance 16: the large payload
        else:
            out += bytes([255, payload, number])
        if header_bytes is None:
            out += bytes([0])                  # no headers
        else:
            out += bytes([1, header_bytes])    # one header, "h0" and that many bytes of value
        if delay_ms is None:
            out += bytes([7])                  # no delay
        else:
            out += bytes([1, 255]) + struct.pack("<H", delay_ms)
        out += bytes([producer_sequence and producer_sequence + number])
    return bytes(out) + bytes(name)


def subscribe(name, mode=1, group=0, ack_mode=1, prefetch=3, pull=False):
    out = bytes([9, *name, mode, group, ack_mode])
    out += bytes([0]) if prefetch == 40 else bytes([255, prefetch])
    return out + bytes([0 if pull else 255, 255])


def fetch(subscription_index, max_messages, wait_ms):
    out = bytes([11, subscription_index, 0, max_messages])
    return out + (bytes([0]) if wait_ms == 0 else bytes([255]) + struct.pack("<H", wait_ms))


def settle(subscription_index, action, tag_index=0, delay_ms=0):
    out = bytes([12, subscription_index, 0, 0, tag_index, 0, action])
    out += bytes([0]) if delay_ms == 0 else bytes([255]) + struct.pack("<H", delay_ms)
    return out + bytes([255, 0])


def core_inputs_seeds():
    seeds = {}

    script = Script().connect().request(0, declare(Q, PERSISTENT)).sync_all()
    script.request(0, publish_messages(Q, 2)).sync_all()
    script.request(0, subscribe(Q, prefetch=3)).request(0, settle(0, 1)).sync_all()
    script.request(0, bytes([5])).advance(1500).sync_all()
    seeds["seed-persistent-publish-consume-ack"] = script.build()

    script = Script().connect().request(0, declare(Q, TEMPORARY))
    script.request(0, subscribe(Q, pull=True)).request(0, fetch(0, 4, 2000))
    script.request(0, publish_messages(Q, 3)).request(0, fetch(0, 6, 0)).advance(2500)
    seeds["seed-temporary-pull-fetch-waits"] = script.build()

    script = Script().connect().request(0, declare(D, DELAY)).sync_all()
    script.request(0, publish_messages(D, 2, delay_ms=3000)).sync_all()
    script.request(0, subscribe(D, prefetch=2)).advance(1000).advance(2500).sync_all()
    seeds["seed-delay-queue-delivers-when-due"] = script.build()

    script = Script(max_deliveries=2).connect().request(0, declare(Q, PERSISTENT, max_deliveries=2))
    script.sync_all().request(0, publish_messages(Q, 1)).sync_all()
    script.request(0, subscribe(Q, prefetch=1))
    script.request(0, settle(0, 2)).request(0, settle(0, 2, tag_index=1)).sync_all()
    script.advance(1200).sync_all().advance(1200).sync_all()
    # Redrive the dead letters: request kind 15, case 1 of 3, up to 4 messages.
    script.request(0, bytes([15, 1, *Q_DLQ, 4])).sync_all()
    seeds["seed-nack-until-dead-lettered-then-redrive"] = script.build()

    script = Script().connect().request(0, declare(Q, PERSISTENT)).sync_all()
    script.request(0, publish_messages(Q, 3)).sync_all().restart(2)
    script.connect().request(0, subscribe(Q, prefetch=2)).sync_all()
    seeds["seed-restart-then-consume"] = script.build()

    script = Script().connect().connect().request(0, declare(Q, TEMPORARY))
    script.request(0, subscribe(Q, mode=2)).request(1, subscribe(Q, mode=2))
    script.request(0, publish_messages(Q, 2)).bytes(Script.DISCONNECT, 0)
    seeds["seed-broadcast-subscribers"] = script.build()

    script = Script().connect().request(0, declare(Q, PERSISTENT)).sync_all()
    script.request(0, publish_messages(Q, 1)).bytes(Script.FAIL, 1)
    script.request(0, publish_messages(Q, 1)).request(0, bytes([5]))
    seeds["seed-storage-failure-fences"] = script.build()

    script = Script()
    script.admin(1, 5, Q, 2).sync_all().admin(0, 6, Q, 0).admin(2, 7, Q, 0)
    script.admin(0, 2, Q, 0).admin(3, 5, Q, 0).sync_all().admin(4, 1, Q, 0)
    script.bytes(Script.ADMIN, 2, *Q_DLQ, 8, 3, 0)  # POST /v1/queues/q.dlq/redrive?max=3
    seeds["seed-admin-routes"] = script.build()

    script = Script().connect().request(0, declare(Q, TEMPORARY))
    for _ in range(5):
        script.request(0, publish_messages(Q, 3, payload=70, header_bytes=4))
    script.request(0, subscribe(Q, prefetch=40))
    seeds["seed-large-push-batch"] = script.build()

    script = Script().connect(producer_id=1).request(0, declare(P, PERSISTENT)).sync_all()
    script.request(0, publish_messages(P, 2, producer_sequence=1))
    script.request(0, publish_messages(P, 2, producer_sequence=1)).sync_all().restart(2)
    script.connect(producer_id=1).request(0, publish_messages(P, 2, producer_sequence=1)).sync_all()
    seeds["seed-idempotent-retries-across-restart"] = script.build()

    script = Script().connect().request(0, declare(Q, PERSISTENT)).sync_all()
    script.request(0, publish_messages(Q, 2)).sync_all()
    script.bytes(Script.REPLACE, 0, 0, 1, 0, 6, 0x0a, 0x04, 0x08, 0x05, 0x12, 0x00)
    seeds["seed-replaced-record"] = script.build()

    script = Script().connect().bytes(Script.GARBAGE, 0, 6, 0x08, 0x09, 0x7a, 0x02, 0xff, 0xff)
    script.bytes(Script.STREAM_ERROR, 0).connect().bytes(Script.REQUEST, 1, 0, 255, 5)
    seeds["seed-garbage-and-stream-errors"] = script.build()
    return seeds


def peer_frames_seeds():
    """Inputs in the layout of krest_core::fuzzing::peer_frames: eight bytes of seed, then steps."""

    def small(value):
        return bytes([200, value])

    def raft(peer, kind, fields, group=0, sender=2, receiver=1, term=3):
        # peer selector, step kind 3 (a Raft message), the message kind, its fields, addresses.
        head = bytes([peer - 1, 3, kind]) + fields
        return head + small(group) + small(sender) + small(receiver) + small(term)

    def entry(term, body=b"record01"):
        return small(term) + body

    seed = bytes(8)
    append = raft(2, 2, bytes([2]) + small(0) + small(0) + small(0) + entry(1) + entry(2))
    vote = raft(3, 0, small(4) + small(2) + bytes([0]), sender=3, term=5)
    response = raft(2, 3, bytes([0]) + small(4), sender=2)
    stale = raft(4, 2, bytes([1]) + small(1) + small(1) + small(0) + entry(9), sender=4, term=2)
    garbage = bytes([0, 0, 12]) + bytes(range(12))
    time = bytes([0, 7, 100, 100])
    # Seeds with the lowest bit set drive node 1 of a three-node cluster; its group takes these.
    clustered = bytes([1] * 8)
    # A MetadataRecord in the eight bytes an entry carries: QueueDeleted { queue_id: 2^28 }.
    record = b"\x12\x06\x08\x80\x80\x80\x80\x01"
    committed = raft(
        2, 2, bytes([2]) + small(0) + small(0) + small(2) + entry(1, record) + entry(3, record)
    )
    candidate = raft(3, 0, small(2) + small(3) + bytes([0]), sender=3, term=4)
    return {
        "seed-cluster-append-commit-vote": clustered + committed + time + candidate + time,
        "seed-cluster-garbage-entries": clustered + append + committed + garbage,
        "seed-append-vote-response": seed + append + vote + response + time,
        "seed-impossible-messages": seed + stale + raft(1, 2, bytes([0]) + small(0) * 3, sender=1),
        "seed-garbage-then-raft": seed + garbage + append + time + garbage,
    }


def main():
    targets = {
        "client_frame": client_frame_seeds(),
        "admin_http": admin_http_seeds(),
        "config_toml": config_toml_seeds(),
        "storage_recovery": storage_recovery_seeds(),
        "core_inputs": core_inputs_seeds(),
        "peer_frames": peer_frames_seeds(),
    }
    for target, seeds in targets.items():
        directory = os.path.join(CORPUS, target)
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.startswith("seed-"):
                os.remove(os.path.join(directory, name))
        for name, content in seeds.items():
            with open(os.path.join(directory, name), "wb") as file:
                file.write(content)
        print(f"{target}: {len(seeds)} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
