"""Render a bench run into ``docs/``: its block of benchmarks.md, benchmarks.json, benchmarks.png.

Everything is rendered from the run's JSON. Only the block between ``<!-- bench:KEY:begin -->``
and ``<!-- bench:KEY:end -->`` is rewritten; the rest of benchmarks.md is written by hand. The
JSON keeps the newest run of every model (and label); the plot shows every run it holds.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

MODELS_ORDER = ("mobilenetv2", "digits")
TITLES = {"visor": "Visor", "kserve": "KServe", "pytriton": "PyTriton"}


def update_docs(docs: Path, bench: dict) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    store_path = docs / "benchmarks.json"
    store = json.loads(store_path.read_text()) if store_path.exists() else {"runs": {}}
    store["runs"][run_key(bench)] = bench
    store_path.write_text(json.dumps(store, indent=2))
    plot(store["runs"], docs / "benchmarks.png")
    md = docs / "benchmarks.md"
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    md.write_text(with_block(text, f"bench:{run_key(bench)}", render(bench)))


def with_block(text: str, key: str, block: str, heading: str = "") -> str:
    """``text`` with the part between ``<!-- KEY:begin -->`` and ``<!-- KEY:end -->`` replaced
    by ``block``; appended (under ``heading``, when given) if the markers are not there yet."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    wrapped = f"{begin}\n{block}\n{end}"
    if begin in text and end in text:
        pattern = re.escape(begin) + r".*?" + re.escape(end)
        return re.sub(pattern, lambda _: wrapped, text, flags=re.DOTALL)
    return text.rstrip() + "\n\n" + (f"{heading}\n\n" if heading else "") + wrapped + "\n"


def update_block(docs: Path, key: str, block: str, heading: str) -> None:
    """Rewrite one marked block of a Markdown file (see ``with_block``)."""
    docs.write_text(with_block(docs.read_text(), key, block, heading))


def run_key(bench: dict) -> str:
    """``model`` or ``model-label``: the run's entry in benchmarks.json and its block in the page."""
    label = bench.get("settings", {}).get("label")
    return f"{bench['model']}-{label}" if label else bench["model"]


def _f(value: float | None, fmt: str = ".1f") -> str:
    return "–" if value is None or math.isnan(value) else format(value, fmt)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    align = [
        "---"
        if h in ("server", "process", "protocol", "best peer", "target", "judged on", "")
        else "---:"
        for h in head
    ]
    return [f"| {' | '.join(r)} |" for r in (head, align, *rows)]


def render(b: dict) -> str:
    m, raw, lim = b["machine"], b["raw"], b["limit"]
    env = b["settings"].get("server_env")
    lines = [
        f"### {run_key(b)}: {b['model']} v{b['version']} ({b['input']}, {b['device']}) — run {b['stamp']}",
        "",
        f"Command: `{b['command']}` at {b.get('commit') or '?'} ({b['wall_s']:.0f} s)"
        + (
            "; Visor settings beyond the defaults: " + ", ".join(f"`{k}={v}`" for k, v in env)
            if env
            else ""
        ),
        "",
        (
            f"Machine: {m['cpu']}, {m['usable_cores']} usable cores, {m['memory_gb']} GB, Python {m['python']}, "
            f"onnxruntime {m['onnxruntime']}; load average at start "
            f"{', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])} (the cores are shared)."
        ),
        "",
        (
            f"**The limit**, raw ONNX Runtime ({raw['provider']}, Visor's session options, median of "
            f"{raw['rounds']} interleaved passes): best {lim['best_images_per_s']:.1f} images/s at batch "
            f"{raw['best_batch']}, batch-1 p50 {_f(lim['batch1_p50_ms'], '.2f')} ms (better of the "
            f"runs before and after the servers; drift {lim['drift_pct']:+.0f}%)."
        ),
        "",
        *_table(
            ["batch", "images/s", "p50 ms", "p99 ms"],
            [
                [
                    str(p["batch"]),
                    _f(p["images_per_s"]),
                    _f(p["p50_ms"], ".2f"),
                    _f(p["p99_ms"], ".2f"),
                ]
                for p in raw["points"]
            ],
        ),
        "",
        (
            "**End to end**: closed-loop client in its own process on the same cores; `% raw` = "
            "images/s ÷ the raw best probed just before and after that window; `+p50` = p50 − the raw "
            "batch-1 p50 of those probes; CPU in cores over the window. The sweep's windows:"
        ),
        "",
        *_table(
            [
                "server",
                "protocol",
                "conc.",
                "req/s",
                "% raw",
                "p50 ms",
                "p99 ms",
                "+p50 ms",
                "errors",
                "server CPU",
                "client CPU",
                "peak PSS MB",
            ],
            [
                [
                    TITLES.get(name, name),
                    p["target"],
                    str(p["concurrency"]),
                    _f(p["rps"]),
                    _f(100 * p["ratio_to_raw"]),
                    _f(p["p50_ms"], ".2f"),
                    _f(p["p99_ms"], ".2f"),
                    _f(p["added_p50_ms"], ".2f"),
                    str(p["errors"]),
                    _f(p["server_cpu_cores"], ".2f"),
                    _f(p["client_cpu_cores"], ".2f"),
                    _f(p["peak_pss_mb"], ".0f"),
                ]
                for name, s in b["servers"].items()
                for p in s.get("points", [])
                if not p["repeat"]
            ],
        ),
        "",
        *_table(
            ["server", "cold start s", "PSS at rest MB", "peak PSS MB", "peak RSS MB"],
            [
                [
                    TITLES.get(name, name),
                    _f(s["cold_start_s"], ".2f"),
                    _f(s["memory_at_rest"]["pss_mb"], ".0f"),
                    _f(s["memory_peak_under_load"]["pss_mb"], ".0f"),
                    _f(s["memory_peak_under_load"]["rss_mb"], ".0f"),
                ]
                for name, s in b["servers"].items()
                if "skipped" not in s
            ],
        ),
        *[
            f"\n{TITLES.get(n, n)}: {s['skipped'].splitlines()[0]}."
            for n, s in b["servers"].items()
            if "skipped" in s
        ],
        "",
        *_rest_by_process(b),
        *_cells(b),
        (
            f"**Targets** (`loadtests/targets.toml`; Visor is judged, the peers' figures are the same "
            f"measure of their windows; {b['settings']['repeat_targets']} repeat rounds after the sweep):"
        ),
        "",
        *_table(
            ["target", *(TITLES.get(n, n) for n in b["servers"]), "limit", "judged on", ""],
            [
                [
                    t["what"],
                    *(_f(t["by_server"].get(n), ".3g") for n in b["servers"]),
                    _limit(t),
                    _judged(t),
                    _verdict(t["met"])
                    + (
                        f" ({t['measured']:.2f}×)" if t.get("relative_to") and t["measured"] else ""
                    ),
                ]
                for t in b["targets"]
            ],
        ),
        "",
        "Every window of the target points (the sweep's first):",
        "",
        *[
            f"- {t['id']} ({t['metric']}): "
            + "; ".join(
                f"{TITLES.get(n, n)} {', '.join(_f(v, '.3g') for v in vs)}"
                for n, vs in t["windows"].items()
                if vs
            )
            for t in b["targets"]
            if t["judge"] != "once"
        ],
    ]
    return "\n".join(lines)


def _limit(t: dict) -> str:
    peer = t.get("relative_to")
    return f"{t['compare']} {t['limit']:g}" + (f" × {TITLES.get(peer, peer)}" if peer else "")


def _rest_by_process(b: dict) -> list[str]:
    """Memory at rest, process by process (runs made before issue 25 have no USS)."""
    rows = [
        [
            TITLES.get(name, name),
            f"`{proc['cmd'][:48]}`",
            _f(proc.get("threads"), "d"),
            _f(proc["rss_mb"], ".0f"),
            _f(proc["pss_mb"], ".0f"),
            _f(proc.get("uss_mb"), ".0f"),
        ]
        for name, s in b["servers"].items()
        for proc in s.get("memory_at_rest_by_process", [])
    ]
    if not rows:
        return []
    head = ["server", "process", "threads", "RSS MB", "PSS MB", "USS MB"]
    return ["Memory at rest, process by process:", "", *_table(head, rows), ""]


def _cells(b: dict) -> list[str]:
    """Visor against the best peer at every protocol and concurrency both served: requests/s,
    the median of that cell's windows (several where the repeat rounds measured it again)."""
    by: dict[tuple[str, str, int], list[float]] = {}
    for name, s in b["servers"].items():
        for p in s.get("points", []):
            by.setdefault((name, p["target"], p["concurrency"]), []).append(p["rps"])
    rows = []
    for (name, target, conc), visor in sorted(by.items(), key=lambda kv: kv[0][1:]):
        if name != "visor":
            continue
        peers = {n: v for (n, t, c), v in by.items() if n != "visor" and (t, c) == (target, conc)}
        if not peers:
            continue
        best = max(peers, key=lambda n: statistics.median(peers[n]))
        mine, theirs = statistics.median(visor), statistics.median(peers[best])
        single = " (one window each: no spread)" if min(len(visor), len(peers[best])) < 2 else ""
        if min(visor) > max(peers[best]):
            verdict = "ahead" + single
        elif max(visor) < min(peers[best]):
            verdict = "**behind**" + single
        else:
            verdict = "tie (windows overlap)"
        rows.append(
            [
                target,
                str(conc),
                f"{_f(mine)} ({len(visor)})",
                f"{TITLES.get(best, best)} {_f(theirs)} ({len(peers[best])})",
                _f(mine / theirs, ".2f"),
                verdict,
            ]
        )
    if not rows:
        return []
    head = ["protocol", "conc.", "Visor req/s (windows)", "best peer", "Visor / best", ""]
    note = (
        'Visor against the best peer in each cell (median of the cell\'s windows; "ahead" or '
        '"behind" only when no window of one overlaps the other\'s; one window each cannot '
        "show the spread):"
    )
    return [note, "", *_table(head, rows), ""]


def _judged(t: dict) -> str:
    n = len(t["windows"].get("visor", []))
    return {"median": f"median of {n} windows", "max": f"worst of {n} windows", "once": "once"}[
        t["judge"]
    ]


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def plot(runs: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # NOTE: runs stored before the peers (no "servers") are left to the text, not the plot
    runs = {k: b for k, b in runs.items() if "servers" in b}
    if not runs:
        return
    keys = sorted(
        runs,
        key=lambda k: (k not in MODELS_ORDER, MODELS_ORDER.index(k) if k in MODELS_ORDER else 0, k),
    )
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 4 * len(keys)), squeeze=False)
    for row, key in zip(axes, keys, strict=True):
        b = runs[key]
        for name, s in b["servers"].items():
            points = [p for p in s.get("points", []) if not p["repeat"]]
            for target in dict.fromkeys(p["target"] for p in points):
                sel = [p for p in points if p["target"] == target]
                conc, label = [p["concurrency"] for p in sel], f"{TITLES.get(name, name)} {target}"
                style = "o-" if name == "visor" else "x--"
                row[0].plot(conc, [p["images_per_s"] for p in sel], style, label=label)
                row[1].plot(conc, [p["p50_ms"] for p in sel], style, label=f"{label} p50")
        best = b["limit"]["best_images_per_s"]
        row[0].axhline(best, color="k", ls="--", lw=1, label=f"raw ORT best ({best:.0f}/s)")
        row[0].set(title=f"{key} {b['input']}: throughput", ylabel="images/s")
        row[1].set(title=f"{key}: median latency", ylabel="ms")
        for ax in row:
            ax.set(xlabel="concurrency (requests in flight)", xscale="log", yscale="log")
            ax.set_xticks(
                b["settings"]["concurrency"], [str(c) for c in b["settings"]["concurrency"]]
            )
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(
        f"Visor, its peers and raw ONNX Runtime: {runs[keys[0]]['machine']['cpu']}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
