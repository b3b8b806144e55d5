"""Latency percentiles against producer rate, ours and the seed's Spark job
(`cargo xtask bench --baseline spark`). Arguments: the figures as JSON, the PNG to write."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

data = json.loads(sys.argv[1])
rates = [d["rate"] for d in data]
fig, ax = plt.subplots(figsize=(7, 4.5))
for system, colour in [("ours", "tab:blue"), ("spark", "tab:orange")]:
    label = "stream-reader + cassandra-writer" if system == "ours" else "Spark (seed design)"
    for i, (q, style) in enumerate([("p50", ":"), ("p99", "-"), ("max", "--")]):
        ax.plot(rates, [d[system][i] for d in data], style, marker="o", color=colour,
                label=f"{label} {q}")
ax.set_yscale("log")
ax.set_xticks(rates)
ax.set_xlabel("producer rate, logs/s")
ax.set_ylabel("event time → row written, ms (log scale)")
ax.set_title("End-to-end latency on one 2-core machine (Kafka 4.1, Cassandra 5.0)")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
