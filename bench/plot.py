"""Draws bench/results/growth.png from a bench results file (bench/run.sh runs it)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

HOOKS = ["sched_switch", "tcp_probe", "inet_sock_set_state"]


def main(results_path: str, png_path: str) -> None:
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
        a.legend()

    a = ax[1][2]
    a.loglog([r["series"] for r in res["render"]], [r["renderMs"] for r in res["render"]], marker="o", label="/metrics render")
    a.loglog([r["series"] for r in res["render"]], [r["trackMs"] for r in res["render"]], marker="s", label="poll bookkeeping")
    a.loglog([r["entries"] for r in res["batchRead"]], [r["medianMs"] for r in res["batchRead"]], marker="^", label="per-CPU hash batch read (entries)")
    a.set(title="userspace cost vs size", xlabel="series / map entries", ylabel="ms")
    a.legend()

    fig.tight_layout()
    fig.savefig(png_path, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
