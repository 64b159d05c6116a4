#!/usr/bin/env python3
"""Reads a Herald topic as JSON lines: what an analyst needs, with nothing of Herald's code.

Every record value is Avro single-object encoded: the bytes C3 01, then the writer schema's
CRC-64-AVRO fingerprint (8 bytes, little-endian), then the Avro binary body. This script checks
the marker and the fingerprint against the .avsc files given (the current schema and any older
versions from schemas/history/), and decodes the body with the matching one.

    python3 read_topic.py --bootstrap 127.0.0.1:9092 --topic herald.delivery-result \
        --schema schemas/delivery_result.avsc [--schema schemas/history/….avsc] [--max 100]

Needs `pip install fastavro confluent-kafka`. Reads committed records only (read_committed),
from the beginning, until --idle-s seconds pass without a record or --max records were printed.
"""

import argparse
import io
import json
import sys

import fastavro
from confluent_kafka import Consumer, KafkaError


def load_schemas(paths):
    """Maps each schema's fingerprint (as it appears on the wire) to the parsed schema."""
    by_fingerprint = {}
    for path in paths:
        with open(path) as f:
            parsed = fastavro.parse_schema(json.load(f))
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        fingerprint = fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
        # fastavro gives the fingerprint's bytes in hex, little-endian, as the wire carries them.
        by_fingerprint[bytes.fromhex(fingerprint)] = parsed
    return by_fingerprint


def decode(value, schemas):
    """The record as a dict, or raises ValueError saying why it cannot be read."""
    if len(value) < 10 or value[:2] != b"\xc3\x01":
        raise ValueError("not an Avro single-object encoded value")
    schema = schemas.get(value[2:10])
    if schema is None:
        raise ValueError(f"unknown writer schema, fingerprint {value[2:10].hex()}")
    return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--schema", action="append", required=True)
    p.add_argument("--max", type=int, default=0, help="stop after this many records (0: no limit)")
    p.add_argument("--idle-s", type=float, default=5.0, help="stop after this long without a record")
    args = p.parse_args()
    schemas = load_schemas(args.schema)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"read-topic-{args.topic}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    consumer.subscribe([args.topic])
    printed = 0
    try:
        while args.max == 0 or printed < args.max:
            message = consumer.poll(args.idle_s)
            if message is None:
                break
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise SystemExit(f"read_topic: {message.error()}")
            try:
                record = decode(message.value(), schemas)
            except ValueError as e:
                print(f"read_topic: offset {message.offset()}: {e}", file=sys.stderr)
                continue
            print(json.dumps(record, sort_keys=True, default=str))
            printed += 1
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
