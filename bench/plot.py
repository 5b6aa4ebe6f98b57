"""Figures from bench results (bench/plot.sh runs it).

    plot.py growth bench/results/full.json bench/results/growth.png
    plot.py soak bench/results/soak.json bench/results/soak.png
    plot.py cpus bench/results/cpus.json bench/results/cpus.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

HOOKS = ["sched_switch", "tcp_probe", "inet_sock_set_state"]


def growth_figure(results_path: str, png_path: str) -> None:
    with open(results_path, encoding="utf-8") as f:
        res = json.load(f)
    growth = res["growth"]
    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(f"kerntap: how costs grow ({res['kernel']}, {res['cpus']} CPUs, {res['date'][:10]})")

    a = ax[0][0]
    for hook in HOOKS:
        pts = [(s["hooks"][hook]["eventsPerS"], s["hooks"][hook]["nsPerEvent"]) for s in growth["eventRate"] if hook in s["hooks"]]
        a.plot(*zip(*pts), marker="o", label=hook)
    a.set(title="BPF cost per event vs event rate", xlabel="events/s on the hook", ylabel="ns/event", ylim=(0, None))
    a.legend()

    a = ax[0][1]
    for hook in HOOKS:
        pts = [(s["hooks"][hook]["eventsPerS"], s["hooks"][hook]["cpuPercentOfCore"]) for s in growth["eventRate"] if hook in s["hooks"]]
        a.plot(*zip(*pts), marker="o", label=hook)
    a.set(title="BPF CPU vs event rate", xlabel="events/s on the hook", ylabel="% of one core", ylim=(0, None))
    a.legend()

    a = ax[0][2]
    width = 0.35
    for i, step in enumerate(growth["cpus"]):
        xs = [h + (i - 0.5) * width for h in range(len(HOOKS))]
        a.bar(xs, [step["hooks"].get(h, {}).get("nsPerEvent", 0) for h in HOOKS], width, label=f"workload on {step['cpus']} CPU(s)")
    a.set_xticks(range(len(HOOKS)), HOOKS)
    a.set(title="BPF cost per event vs CPUs used", ylabel="ns/event")
    a.legend()

    for a, growing in ((ax[1][0], "connections"), (ax[1][1], "cgroups")):
        rows = [r for r in growth["exporter"] if r["growing"] == growing]
        xs = [r[growing] for r in rows]
        a.plot(xs, [r["cpuMsPerPoll"] for r in rows], marker="o", label="CPU per poll (ms)")
        a.plot(xs, [r["pollMs"] for r in rows], marker="s", label="poll duration (ms)")
        a.set(title=f"exporter per poll vs live {growing}", xlabel=growing, ylabel="ms", ylim=(0, None))
        a.legend(loc="upper left")
        rss = a.twinx()
        rss.plot(xs, [r["rssMB"] for r in rows], color="grey", linestyle="--", marker=".", label="RSS (MB, right)")
        rss.set(ylabel="RSS (MB)", ylim=(0, None))
        rss.legend(loc="lower right")

    a = ax[1][2]
    a.loglog([r["series"] for r in res["render"]], [r["renderMs"] for r in res["render"]], marker="o", label="/metrics render")
    a.loglog([r["series"] for r in res["render"]], [r["trackMs"] for r in res["render"]], marker="s", label="poll bookkeeping")
    a.loglog([r["entries"] for r in res["batchRead"]], [r["medianMs"] for r in res["batchRead"]], marker="^", label="per-CPU hash batch read (entries)")
    a.set(title="userspace cost vs size", xlabel="series / map entries", ylabel="ms")
    a.legend()

    fig.tight_layout()
    fig.savefig(png_path, dpi=90)


# Per-CPU hashes, before the shared maps (issue 10, measured in a Linux 6.1 VM):
# possible CPUs -> map memlock in MB.
PERCPU_BEFORE_MB = {2: 14, 64: 307, 192: 920}


def cpus_figure(results_path: str, png_path: str) -> None:
    with open(results_path, encoding="utf-8") as f:
        res = json.load(f)
    rows = sorted(res["rows"], key=lambda r: r["possible_cpus"])
    cpus = [r["possible_cpus"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    fig.suptitle(f"kerntap: cost vs possible CPUs (Linux {res['kernel']} VM, default config, idle)")
    a = ax[0]
    a.plot(cpus, [r["idle"]["memlock_bytes"] / 1e6 for r in rows], marker="o", label="shared hashes (now)")
    a.plot(list(PERCPU_BEFORE_MB), list(PERCPU_BEFORE_MB.values()), marker="x", linestyle="--", label="per-CPU hashes (before)")
    a.set(title="BPF map memory (fdinfo memlock)", xlabel="possible CPUs", ylabel="MB", ylim=(0, None))
    a.legend()
    a = ax[1]
    a.plot(cpus, [r["idle"]["rss_bytes"] / 1e6 for r in rows], marker="o", label="RSS, idle")
    a.axhline(192 * 1.048576, color="grey", linestyle=":", label="DaemonSet limit (192Mi)")
    a.set(title="kerntap RSS", xlabel="possible CPUs", ylabel="MB", ylim=(0, None))
    a.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


def soak_figure(results_path: str, png_path: str) -> None:
    with open(results_path, encoding="utf-8") as f:
        res = json.load(f)
    samples = res["samples"]
    minutes = [s["t"] / 60 for s in samples]
    fig, ax = plt.subplots(2, 3, figsize=(15, 8))
    fig.suptitle(
        f"kerntap soak: {res['minutes']} min, {res['connectionsOpened']:,} connections opened "
        f"({res['kernel']}, {res['date'][:10]})"
    )
    panels = [
        (ax[0][0], "RSS (MB)", [s["rssMB"] for s in samples]),
        (ax[0][1], "CPU (% of one core, per sample)", [s["cpuPercentOfCore"] for s in samples]),
        (ax[0][2], "open file descriptors", [s["fds"] for s in samples]),
        (ax[1][0], "series exported", [s["series"] for s in samples]),
        (ax[1][2], "poll duration (ms)", [s["pollMs"] for s in samples]),
    ]
    for a, title, ys in panels:
        a.plot(minutes, ys, marker=".", linewidth=1)
        a.set(title=title, xlabel="minutes", ylim=(0, max(ys) * 1.2 or 1))
    a = ax[1][1]
    for name in sorted(samples[-1]["mapEntries"]):
        cap = samples[-1]["mapCapacity"].get(name)
        ys = [100 * s["mapEntries"].get(name, 0) / cap for s in samples] if cap else None
        # Arrays (the per-CPU slots) are always full: nothing to see.
        if ys and min(ys) < 100:
            a.plot(minutes, ys, marker=".", linewidth=1, label=f"{name} (of {cap:,.0f})")
    a.set(title="BPF map fill (% of capacity)", xlabel="minutes", ylim=(0, None))
    a.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)


if __name__ == "__main__":
    {"growth": growth_figure, "soak": soak_figure, "cpus": cpus_figure}[sys.argv[1]](sys.argv[2], sys.argv[3])
