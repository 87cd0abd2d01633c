"""Load on ``bert4x serve`` from concurrent clients on 127.0.0.1, against offline batched encoding.

A CoSENT run on the embedded model (its pretrained weights; the throughput does not depend on
fine-tuning), or with ``--size base`` on a random model of BERT-base size, is served;
``--clients`` concurrent clients send ``--requests`` ``/encode`` requests of one real STS-B-zh
sentence each. The peer is the same encoder called offline (``SentenceEncoder.encode``,
batches of ``--max-batch``) on the same sentences, in this process. The two are timed in turn
(offline, server, offline, server, ...): the ratio is the share of offline throughput the
service keeps, with HTTP, JSON and the clients themselves on the same cores.

    python benchmarks/serve_load.py                       # 2,000 requests, 32 clients
    python benchmarks/serve_load.py --size base           # a model where compute dominates
    python benchmarks/serve_load.py --requests 300 --repeats 1   # quick check
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from urllib.request import urlopen

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from host import print_host  # noqa: E402


BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, embedding_size=768)


def cosent_run(directory, size):
    """A CoSENT run directory (mean pooling) on the embedded model ("tiny": its weights) or
    on the same vocabulary at BERT-base size ("base": random weights)."""
    from pretrained.registry import default_model
    from tasks.cosent.task import ENCODER_WEIGHTS, Settings, build_sentence_encoder

    options = default_model()
    if size == "base":
        with open(options["config"], encoding="utf-8") as handle:
            config = {**json.load(handle), **BASE}
        options["config"] = os.path.join(directory, "base_config.json")
        with open(options["config"], "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        options["checkpoint"] = None
    settings = Settings(**options, maxlen=64)
    settings.save(directory)
    encoder = build_sentence_encoder(settings)
    encoder.encoder.save_weights(os.path.join(directory, ENCODER_WEIGHTS))
    return encoder


async def load(url, texts, clients):
    """Every text as one request, ``clients`` at a time: (latencies, errors, seconds).

    aiohttp is the client: on this project's 2-core host httpx's client topped out at about
    300 requests/s against ``/health`` and aiohttp's at about 1,500, and the client shares the
    cores with the server."""
    import aiohttp

    queue = list(reversed(texts))
    latencies, errors = [], 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector) as session:
        async def client():
            nonlocal errors
            while queue:
                text = queue.pop()
                started = time.perf_counter()
                async with session.post("/encode", json={"texts": [text]}) as response:
                    await response.read()
                    errors += response.status != 200
                latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - started


def percentile(values, q):
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny",
                        help="the embedded model, or its vocabulary at BERT-base size")
    args = parser.parse_args()
    print_host()

    from bert4x.serving.process import start_server
    from pretrained import chinese_texts

    texts = chinese_texts()[-args.requests:]  # STS-B-zh test sentences
    with tempfile.TemporaryDirectory() as directory:
        encoder = cosent_run(directory, args.size)
        process, url = start_server(["--work-dir", directory, "--max-batch", str(args.max_batch),
                                     "--batch-wait-ms", str(args.batch_wait_ms)])
        try:
            asyncio.run(load(url, texts[:200], args.clients))  # warm-up: tracing, allocator
            encoder.encode(texts[:200], batch_size=args.max_batch, progress=False)
            offline, served, all_latencies, all_errors = [], [], [], 0
            for repeat in range(args.repeats):
                started = time.perf_counter()
                encoder.encode(texts, batch_size=args.max_batch, progress=False)
                offline.append(len(texts) / (time.perf_counter() - started))
                latencies, errors, seconds = asyncio.run(load(url, texts, args.clients))
                served.append(len(texts) / seconds)
                all_latencies += latencies
                all_errors += errors
                print(f"round {repeat + 1}: offline {offline[-1]:.1f} texts/s, served "
                      f"{served[-1]:.1f} requests/s, {errors} errors", flush=True)
            with urlopen(url + "/metrics") as response:
                metrics = response.read().decode()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    count = float(metrics.split('bert4x_batch_size_count{batcher="encode"} ')[1].split()[0])
    total = float(metrics.split('bert4x_batch_size_sum{batcher="encode"} ')[1].split()[0])
    result = dict(size=args.size, requests=len(texts) * args.repeats, clients=args.clients,
                  p50_ms=1000 * percentile(all_latencies, 50),
                  p99_ms=1000 * percentile(all_latencies, 99),
                  served_requests_per_s=statistics.median(served),
                  offline_texts_per_s=statistics.median(offline), errors=all_errors,
                  mean_batch=total / count)
    result["served_vs_offline"] = result["served_requests_per_s"] / result["offline_texts_per_s"]
    print(f"\nmodel: {args.size}; {result['requests']} requests from {args.clients} clients: p50 "
          f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
          f"{result['served_requests_per_s']:.1f} requests/s, {all_errors} errors, mean batch "
          f"{result['mean_batch']:.1f}")
    print(f"offline SentenceEncoder.encode (batch {args.max_batch}): "
          f"{result['offline_texts_per_s']:.1f} texts/s")
    print(f"served / offline: {result['served_vs_offline']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
