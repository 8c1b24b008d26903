"""Example subscriber of the OSCARS feed from another platform (Python, nats-py): a durable
JetStream consumer of its own on the fiche subjects, so that it resumes where it stopped and can
replay from any point. Payloads are decoded with stubs generated from the published protos.
Prints one JSON line per event and acknowledges it once handled.

    pip install nats-py==2.16.0 grpcio-tools==1.85.1
    python3 oscars_feed.py --nats nats://127.0.0.1:4222 --durable oscars-ingest --count 10

Subjects (see proto/README.md): <prefix>.oscars.fiche.{imported,published,updated,withdrawn}.v1,
payloads mst.events.v1.OscarsFiche{Imported,Published,Updated,Withdrawn} with the full fiche.
"""

import argparse
import asyncio
import json
import sys

import mst_protos

SCHEMAS = {
    "oscars.fiche.imported.v1": "OscarsFicheImported",
    "oscars.fiche.published.v1": "OscarsFichePublished",
    "oscars.fiche.updated.v1": "OscarsFicheUpdated",
    "oscars.fiche.withdrawn.v1": "OscarsFicheWithdrawn",
}


async def run(args):
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy
    from mst.events.v1 import oscars_pb2
    from google.protobuf import json_format

    nc = await nats.connect(args.nats)
    js = nc.jetstream()
    config = ConsumerConfig(
        durable_name=args.durable,
        filter_subject=f"{args.prefix}.oscars.fiche.>",
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if args.from_seq else DeliverPolicy.ALL,
        opt_start_seq=args.from_seq,
    )
    sub = await js.pull_subscribe(
        f"{args.prefix}.oscars.fiche.>", durable=args.durable, stream=args.stream, config=config)
    seen = 0
    while args.count is None or seen < args.count:
        try:
            msgs = await sub.fetch(batch=10, timeout=args.idle)
        except nats.errors.TimeoutError:
            break  # nothing new within --idle seconds
        for msg in msgs:
            short = msg.subject[len(args.prefix) + 1:]
            name = SCHEMAS.get(short)
            if name is None:
                await msg.term()
                continue
            event = getattr(oscars_pb2, name)()
            event.ParseFromString(msg.data)
            print(json.dumps({
                "subject": short,
                "stream_seq": msg.metadata.sequence.stream,
                "event_id": event.metadata.event_id,
                "fiche": json_format.MessageToDict(event.fiche),
            }, ensure_ascii=False), flush=True)
            await msg.ack()
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    await nc.drain()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", default="nats://127.0.0.1:4222")
    p.add_argument("--stream", default="MST_EVENTS")
    p.add_argument("--prefix", default="mst")
    p.add_argument("--durable", required=True, help="name of this subscriber's durable consumer")
    p.add_argument("--from-seq", type=int, default=0, help="first stream sequence (new consumer)")
    p.add_argument("--count", type=int, default=None, help="stop after this many events")
    p.add_argument("--idle", type=float, default=3.0, help="stop after this many idle seconds")
    p.add_argument("--protos", default=mst_protos.DEFAULT_PROTOS)
    args = p.parse_args()
    mst_protos.load(args.protos)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
