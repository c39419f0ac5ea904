"""The benchmark's figure: forward+backward time of each peer relative to ours, per workload."""

from __future__ import annotations

import math


def save_plot(rows: list[dict], libs: list, path: str) -> bool:
    """Horizontal bars of peer time / our time (log scale; right of 1: we are faster).

    Returns False, writing nothing, when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    peers = [lib.name for lib in libs[1:]]
    ratio = {(r["workload"], r["library"]): r.get("fwdbwd_ratio") for r in rows}
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(workloads) * len(peers) / 2 + 2))
    height = 0.8 / max(len(peers), 1)
    for k, peer in enumerate(peers):
        ys = [i + k * height for i, w in enumerate(workloads) if ratio.get((w, peer))]
        xs = [ratio[(w, peer)] for w in workloads if ratio.get((w, peer))]
        if not xs:
            continue
        ax.barh(ys, [math.log10(x) for x in xs], height=height, label=peer)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(workloads))], workloads, fontsize=7)
    ax.invert_yaxis()
    ticks = [-1, -0.5, 0, 0.5, 1, 1.5, 2]
    ax.set_xticks(ticks, [f"{10**t:.2g}x" for t in ticks])
    ax.set_xlabel("peer forward+backward time / convexlayers time (right of 1x: we are faster)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
