# SPDX-License-Identifier: Apache-2.0
"""Writes docs/PERFORMANCE.md from the JSON files of bench/bench.py.

Only figures found in those files are printed; a part that did not run, or
failed, is named with its reason. Nothing here is typed in by hand."""

import os
import subprocess
import time


def _ms(s, key="median"):
    return f"{s[key]:.3f} ms" if s and s.get(key) is not None else "n/a"


def _row_ms(s):
    if not s:
        return "n/a"
    return f"{s['median']:.3f} / {s['p99']:.3f} / {s['max']:.3f}"


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.3g}"


def _commit(top):
    try:
        return subprocess.run(["git", "-C", top, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def _load(d):
    la = d.get("loadavg") if d else None
    return f"{la[0]:.2f}" if la else "?"


def console_section(c):
    """The console with the swarm's devices (bench.py console): lines of markdown."""
    L = ["## Console with 10,000 devices", ""]
    if not c or "action_ms" not in c:
        L += ["Not measured: " + ((c or {}).get("error") or "the console part did not run") + ".", ""]
        return L

    def verdict(ok):
        return "met" if ok else "**missed**"

    n = int(c.get("clients", 0))
    la = c.get("mp_loadavg_line") or _load(c)
    L += [f"`python3 bench/bench.py console` ({c.get('when', '?')}): `mp-swarm --clients {n} --console "
          "bench/console-bench.py` signs in the simulated agents, then the script logs in as the web console "
          "does and times the REST API on the console listener while mp-swarm answers the pushes. "
          f"Load average when the figures were taken: {la} (the machine is shared and was not quiet). "
          "A benchmark, not a test: nothing fails on timing.", ""]
    L += ["| figure | target | measured | |", "|---|---|---|---|"]
    L.append(f"| device list's first page, `GET /api/v1/devices?limit=50`, {n} devices | < 50 ms | "
             f"first {c['page_first_ms']:.1f} ms; then median {c.get('page_median_ms', 0):.1f}, "
             f"p95 {c.get('page_p95_ms', 0):.1f}, max {c.get('page_max_ms', 0):.1f} ms (20 requests) | "
             f"{verdict(c['page_first_ms'] < 50 and c.get('page_median_ms', 1e9) < 50)} |")
    L.append(f"| an action on a {n}-device collection accepted, `POST /api/v1/actions` (202) | < 200 ms | "
             f"{c['action_ms']:.1f} ms | {verdict(c['action_ms'] < 200)} |")
    keeps_up = c.get("busy_events") == 0 and c.get("lag_s") is not None and c["lag_s"] < 2
    L.append(f"| an open console sees the {n} results arrive | keeps up | all {n} answered on the page "
             f"{c.get('page_all_answered_s', 0):.2f} s after the action was accepted, "
             f"{c.get('lag_s', float('nan')):.2f} s after the last response was acknowledged "
             f"(that took {c.get('last_ack_s', 0):.2f} s); {int(c.get('push_events', 0))} push events, "
             f"{int(c.get('rereads', 0))} re-reads of the push (median {c.get('reread_median_ms', 0):.0f} ms, "
             f"max {c.get('reread_max_ms', 0):.0f} ms), {int(c.get('busy_events', 0))} events arrived "
             "during a re-read | " + verdict(keeps_up) + " |")
    L.append(f"| the event stream's first view: one `device` event per device | all {n} | "
             f"{int(c.get('device_events', 0))} in {c.get('devices_stream_s', 0):.2f} s | "
             f"{verdict(int(c.get('device_events', 0)) >= n)} |")
    L += ["", "The page model follows `mp/webui/app.js`: on each `push` event it re-reads "
          "`GET /api/v1/pushes/ID` (every target, with its response), and events that come during a "
          "re-read are coalesced into the next one. \"Keeps up\" here means every re-read ends before "
          "the next event (the stream ticks once a second: no event waits) and the page shows the last "
          "answer within 2 s of its acknowledgement.", ""]
    return L


def write_report(results, out_path, made, machine, load):
    top = os.path.dirname(os.path.dirname(os.path.abspath(out_path)))
    lat = load(results, "latency") or {}
    idle = load(results, "idle") or {}
    fleet = load(results, "fleet") or {}
    mqtt = load(results, "mqtt") or {}
    cf = load(results, "cfengine") or {}
    runs = {r.get("where"): r for r in lat.get("runs", [])}
    tmpfs, disk = runs.get("tmpfs", {}), runs.get("disk", {})
    L = []
    w = L.append
    w("# Performance")
    w("")
    w("Figures from **this project's own machine**, written by `scripts/bench.sh` "
      f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit `{_commit(top)}`). "
      "Do not edit by hand: run `scripts/bench.sh` again.")
    w("")
    w(f"Machine: {machine}. The machine is shared and small (2 cores): the load average at the "
      "end of each part is printed with it, and figures taken under load are worse than the "
      "same code on a quiet machine.")
    w("")
    # Parts may come from separate runs (bench.py runs one part at a time
    # too): say when each one ran, so that no figure passes for newer than it is.
    ran = []
    for part in ("latency", "idle", "mqtt", "cfengine", "swarm", "console", "fleet", "faults"):
        d = load(results, part)
        if d and d.get("when"):
            ran.append(f"{part} {d['when']}")
    if ran:
        w("Parts and when they ran (UTC): " + ", ".join(ran) + ".")
        w("")
    # ---- summary against the design's targets
    faults = load(results, "faults") or {}
    fres = {r.get("scenario"): r for r in fleet.get("results", [])}
    w("## Summary against the targets")
    w("")
    w("| figure | target | measured here | |")
    w("|---|---|---|---|")

    def verdict(ok):
        return "not measured" if ok is None else ("met" if ok else "**missed**")

    tr = tmpfs.get("response_ms")
    w("| push to signed response, no-op cycle, loopback, state on tmpfs, median / p99 | "
      "< 0.3 ms / < 1 ms | "
      + (f"{tr['median']:.3f} / {tr['p99']:.3f} ms" if tr else "n/a")
      + f" | {verdict(None if not tr else (tr['median'] < 0.3 and tr['p99'] < 1.0))} |")
    dr, dw = disk.get("response_ms"), disk.get("durable_write_ms")
    gap = dr["median"] - dw["median"] if dr and dw else None
    w("| the same, state on disk: median above the disk's own durable write | < 0.25 ms | "
      + (f"{gap:.3f} ms ({dr['median']:.3f} vs {dw['median']:.3f} ms)" if gap is not None else "n/a")
      + f" | {verdict(None if gap is None else gap <= 0.25)} |")
    sy = disk.get("syncs")
    ok = None if not sy or "error" in sy else sy["rename_per_push"] <= 2.0
    w("| durable writes per push | at most 2 | "
      + (f"{sy['rename_per_push']:.2f}" if ok is not None else "n/a") + f" | {verdict(ok)} |")
    ok = None if not idle or "error" in idle else idle["uss_total_kib"] < 4096
    w("| USS of an idle agent (both processes) | < 4 MiB | "
      + (f"{idle['uss_total_kib'] / 1024:.2f} MiB" if ok is not None else "n/a")
      + f" | {verdict(ok)} |")
    ok = None if not idle or "error" in idle else \
        idle["wakeups_total"] <= idle["expected_keepalive_wakeups"]
    w("| wakeups of an idle agent | one per keepalive interval | "
      + (f"{idle['wakeups_total']} in {idle['window_s']} s with {idle['expected_keepalive_wakeups']} "
         "keepalive intervals" if ok is not None else "n/a") + f" | {verdict(ok)} |")
    sw = load(results, "swarm") or {}
    if "held" in sw and "acked" in sw:
        sw_ok = sw.get("exit") == 0 and sw["held"] >= 10000 and sw["acked"] >= sw["held"]
        w(f"| connections one MP holds on this machine | 10,000, every push answered | "
          f"{int(sw['held'])} held, {int(sw['acked'])} answered and acknowledged; fan-out "
          f"{sw.get('fanout_s', 0):.2f} s, last answer {sw.get('last_ack_s', 0):.2f} s; MP RSS "
          f"{sw.get('rss_mib', 0):.0f} MiB, {sw.get('cpu_s', 0):.1f} CPU s (bench/mp-swarm) | "
          f"{verdict(sw_ok)} |")
    else:
        w("| connections one MP holds on this machine | 10,000, every push answered | "
          f"not measured ({sw.get('error', 'the swarm part did not run')}) | not measured |")
    gr = fres.get("graceful-restart", {})
    within = gr.get("back_within_window")
    if within is None and gr.get("reconnect_times") and gr.get("retry_after_s"):
        within = gr["reconnect_times"][-1] <= 2 * gr["retry_after_s"] + 1.0
    ok = None if not gr else (gr.get("result") == "PASS" and within is not False)
    w(f"| fleet of {fleet.get('agents', '?')} agents, MP restarted | all back within the backoff "
      "window, no spike above the jitter's spread | "
      + (f"back {gr['reconnect_times'][0]:.2f} to {gr['reconnect_times'][-1]:.2f} s after the "
         f"GOODBYE (RetryAfterSeconds={gr.get('retry_after_s')}; the agents aim at "
         f"[RetryAfterSeconds, 2 x RetryAfterSeconds]); spike check: {gr.get('result')}"
         if gr.get("reconnect_times")
         else "n/a") + f" | {verdict(ok)} |")
    # graceful-restart is judged in the fleet row; the others are about loss.
    fr = [r for r in faults.get("results", []) if r.get("scenario") != "graceful-restart"]
    ok = None if not fr else all(r.get("result") != "FAIL" for r in fr)
    w("| tasks or responses lost across SIGKILL of agent or MP, disk full, network cut | none | "
      + (", ".join(f"{r['scenario']}: {r['result']}" for r in fr) if fr else "n/a")
      + f" | {verdict(ok)} |")
    w("")
    from report_mp import mp_section  # bench/report_mp.py
    L.extend(mp_section(load(results, "swarm") or {}))

    w("## Method")
    w("")
    w("- **Push latency** (`bench/bench.py latency`, `bench/push-latency.c`): "
      "`tether-bench-push` is a minimal MP built on `transport/` only. It makes a site key "
      "and a TLS certificate, lets one real `tetherd` (release build, privilege split, "
      "channel process as `nobody`) sign in over loopback TLS, then sends signed PUSH "
      "frames one after another. Each is timed on CLOCK_MONOTONIC from the first byte "
      "written to the PUSH_ACK, and to a RESPONSE whose signature verified against the "
      "device key (push to signed response). Each RESPONSE gets its RESPONSE_ACK. PUSH "
      "bodies are signed before the clock starts (an MP signs one body per fan-out). "
      f"TaskType {lat.get('task_type', '?')} (app evaluation with no policy: a no-op "
      "cycle). Run twice: agent state on a tmpfs, and on the disk (`/var/tmp`). The "
      "disk's own durable write (write 512 B, fdatasync, rename, fsync of the directory) "
      "is timed 1,000 times in the agent's state directory in the same run.")
    w("- **Idle cost** (`bench/bench.py idle`): one `tetherd` signed in to a real "
      f"`tether-mp` (keepalive {idle.get('keepalive_s', '?')} s), left alone for "
      f"{idle.get('window_s', '?')} s after settling. Private memory is USS "
      "(Private_Clean + Private_Dirty from `/proc/PID/smaps_rollup`) of both processes "
      "of the privilege split; wakeups are the times each thread was scheduled in "
      "(`/proc/PID/task/*/schedstat`, third field) during the window.")
    w("- **Fleet** (`bench/bench.py fleet`, which runs `tests/fleet/fleet.py`): "
      f"{fleet.get('agents', '?')} real `tetherd` processes, each in its own network "
      "namespace behind a veth on a bridge in the MP's namespace (198.18.0.0/15, only "
      "inside those namespaces), against one real `tether-mp`. Fan-out and response "
      "times come from the MP's own log lines, time-stamped on arrival by the harness "
      "(CLOCK_MONOTONIC). The reconnection curve is the first `signed in` line of each "
      "agent after the MP's SIGTERM (GOODBYE(shutdown)) and immediate restart.")
    w("- **Peers**, same machine, same run: **MQTT**: a mosquitto broker on loopback and "
      "`tether-bench-mqtt` (C, libmosquitto, TCP_NODELAY): a responder that answers each "
      "message on another topic, and a trigger that times publish to answer, QoS 1 both "
      "ways. No signature, no durable spool, no cycle: a lower bound for a transport. "
      "**CFEngine**: `cf-runagent -H 127.0.0.1` to `cf-serverd`, which runs `cf-agent` "
      "on a no-op policy; each run is timed as a whole command, the way an operator "
      "triggers it. Idle memory compares `tetherd` (both processes) with the device-side "
      "process that waits for a trigger: the MQTT responder, and `cf-serverd`.")
    w("")

    w("## Push latency")
    w("")
    w("| state on | push → signed response, median / p99 / max (ms) | push → PUSH_ACK, median / p99 / max (ms) | durable write of the disk, median / p99 (ms) | load |")
    w("|---|---|---|---|---|")
    for name, r in (("tmpfs", tmpfs), ("disk", disk)):
        if not r:
            w(f"| {name} | not run | | | |")
        elif "error" in r:
            w(f"| {name} | not measured: {r['error'][:200]} | | | |")
        else:
            dw = r.get("durable_write_ms")
            w(f"| {name} | {_row_ms(r['response_ms'])} | {_row_ms(r['ack_ms'])} | "
              f"{_ms(dw)} / {_ms(dw, 'p99')} | {_load(lat)} |")
    w("")
    if tmpfs.get("response_ms"):
        w(f"{tmpfs['response_ms']['n']} pushes per run after a warm-up; return codes: "
          f"{tmpfs.get('return_codes')}.")
        w("")
    br_runs = [(name, r.get("breakdown")) for name, r in (("tmpfs", tmpfs), ("disk", disk))
               if r and r.get("breakdown")]
    shown = [(name, b) for name, b in br_runs if b.get("available") and b.get("stages")]
    if shown:
        w("The agent's own breakdown by stage, from its CLOCK_MONOTONIC stamps "
          "(`tetherctl stats --json` after each run, over the last "
          f"{shown[0][1].get('window') or 'n/a'} pushes of each stage; warm-up included). "
          "verify: frame received to signature verified; parse: body parsed; spool: task "
          "persisted; ack: PUSH_ACK handed to the link; ipc+run: RUN to the privileged "
          "process until its DONE, the no-op cycle included; sign: response built and "
          "signed; spool-response: response persisted; send: handed to the link.")
        w("")
        w("| stage | " + " | ".join(f"{name}: median / p99 (ms)" for name, _ in shown) + " |")
        w("|---|" + "---|" * len(shown))
        names = [st["stage"] for st in shown[0][1]["stages"]]
        for stage in names:
            cells = []
            for _, b in shown:
                st = next((x for x in b["stages"] if x["stage"] == stage), None)
                cells.append(f"{st['median_ms']:.3f} / {st['p99_ms']:.3f}"
                             if st and st.get("count") else "n/a")
            w(f"| {stage} | " + " | ".join(cells) + " |")
        for name, b in br_runs:
            if not (b.get("available") and b.get("stages")):
                w("")
                w(f"Breakdown for {name}: not available: {b.get('why')}.")
    else:
        why = "; ".join(f"{name}: {b.get('why')}" for name, b in br_runs) or \
            "the latency part did not run"
        w("**Breakdown by stage: not available.** " + why + ". Only the "
          "end-to-end figures above are measured.")
    w("")
    w("Targets (the design brief): median under 0.3 ms and p99 under 1 ms on tmpfs; on disk, "
      "the median within 0.25 ms of the disk's own durable write.")
    if tmpfs.get("response_ms"):
        med, p99 = tmpfs["response_ms"]["median"], tmpfs["response_ms"]["p99"]
        w(f"Measured on tmpfs: median {med:.3f} ms ({'meets' if med < 0.3 else 'misses'} the "
          f"target), p99 {p99:.3f} ms ({'meets' if p99 < 1 else 'misses'} it).")
    sy = disk.get("syncs")
    if sy and "error" not in sy:
        w(f"Durable writes per push, counted with `strace -f -c` on both halves of the agent "
          f"over {sy['pushes']} pushes (a separate run, state on disk): "
          f"{sy['rename_per_push']:.2f} renames and {sy['sync_per_push']:.2f} fsync-type calls "
          f"per push ({sy['calls']}). A durable write is a write, fdatasync, rename and "
          f"directory fsync, so renames count them; target: two per push at most "
          f"({'met' if sy['rename_per_push'] <= 2.0 else 'missed'}).")
    elif sy:
        w(f"Durable writes per push: not measured: {sy['error']}.")
    if disk.get("response_ms") and disk.get("durable_write_ms"):
        gap = disk["response_ms"]["median"] - disk["durable_write_ms"]["median"]
        w(f"On disk: median {disk['response_ms']['median']:.3f} ms, "
          f"{gap:.3f} ms above the disk's durable write "
          f"({'meets' if gap <= 0.25 else 'misses'} the target).")
    w("")

    w("## Idle cost")
    w("")
    if not idle:
        w("Not run.")
    elif "error" in idle:
        w(f"Not measured: {idle['error']}")
    else:
        w("| process | USS (KiB) | PSS (KiB) | RSS (KiB) | wakeups in the window |")
        w("|---|---|---|---|---|")
        for p in idle.get("processes", []):
            role = ("privileged half (root: scheduler, cycles)" if p.get("uid") == 0 else
                    f"channel half (uid {p['uid']}: network, spool)" if p.get("uid") is not None
                    else f"`{p['cmd'][:50]}`")
            w(f"| pid {p['pid']}, {role} | {p['uss_kib']} | {p['pss_kib']} | "
              f"{p['rss_kib']} | {p['wakeups']} |")
        w(f"| **total** | **{idle['uss_total_kib']}** ({idle['uss_total_kib'] / 1024:.2f} MiB) "
          f"| | | **{idle['wakeups_total']}** in {idle['window_s']} s |")
        w("")
        w(f"With a keepalive every {idle['keepalive_s']} s, {idle['expected_keepalive_wakeups']} "
          "keepalives fall in the window. Target: USS under 4 MiB "
          f"({'met' if idle['uss_total_kib'] < 4096 else 'missed'}); one wakeup per keepalive "
          f"interval and nothing else ({idle['wakeups_total']} wakeups for "
          f"{idle['expected_keepalive_wakeups']} keepalives: "
          f"{'met' if idle['wakeups_total'] <= idle['expected_keepalive_wakeups'] else 'missed'}"
          "). Load at the end: " + _load(idle) + ".")
        st = idle.get("strace")
        if st and "excerpt" in st:
            w("")
            w(f"What wakes it: a second window of {st['window_s']} s under `strace -f -tt` "
              f"(event-loop waits that returned events: {st['loop_wakeups']}). The calls, "
              "as traced:")
            w("")
            w("```")
            for line in st["excerpt"][:40]:
                w(line)
            w("```")
    w("")

    w("## Peer comparison (same run)")
    w("")
    w("| | trigger → answer, median / p99 / max (ms) | idle device-side USS (KiB) | Tether / peer, latency | Tether / peer, idle memory |")
    w("|---|---|---|---|---|")
    t_med = tmpfs.get("response_ms", {}).get("median") if tmpfs.get("response_ms") else None
    t_uss = idle.get("uss_total_kib") if idle and "error" not in idle else None
    w(f"| Tether (tmpfs state) | {_row_ms(tmpfs.get('response_ms'))} | "
      f"{t_uss if t_uss is not None else 'n/a'} | 1 | 1 |")
    for name, d, key in (("MQTT: mosquitto + C responder, QoS 1", mqtt, "responder_idle"),
                         ("CFEngine: cf-runagent → cf-serverd → cf-agent", cf, "serverd_idle")):
        if not d:
            w(f"| {name} | not run | | | |")
        elif "error" in d:
            w(f"| {name} | not measured: {d['error'][:160]} | | | |")
        else:
            uss = d.get(key, {}).get("uss_kib")
            w(f"| {name} | {_row_ms(d.get('response_ms'))} | {uss} | "
              f"{_ratio(t_med, d['response_ms']['median'])} | {_ratio(t_uss, uss)} |")
    w("")
    if mqtt.get("broker"):
        w(f"The mosquitto broker itself held {mqtt['broker']['uss_kib']} KiB USS (server side, "
          "not in the ratio).")
    w("A ratio below 1 means Tether is faster or smaller. The MQTT path signs nothing and "
      "writes nothing to disk; Tether verifies the PUSH, spools the task durably, runs the "
      "cycle through the privilege split, signs and spools the response.")
    w("")

    w("## Fleet")
    w("")
    res = {r.get("scenario"): r for r in fleet.get("results", [])}
    if not fleet:
        w("Not run.")
    elif "error" in fleet:
        w(f"Not measured: {fleet['error']}")
    else:
        w(f"{fleet['agents']} agents, {fleet.get('mode')} mode.")
        w("")
        fo = res.get("fanout", {})
        if fo.get("fanout"):
            x = fo["fanout"]
            rs = sorted(x["responses_s"])
            w(f"- Push to all: the `tether-mp push` command returned in {x['push_cmd_s'] * 1000:.0f} ms; "
              f"the MP's fan-out finished {x['fanout_end_s'] * 1000:.0f} ms after the command "
              f"started; responses arrived with median {rs[len(rs) // 2] * 1000:.0f} ms and the "
              f"last at {rs[-1] * 1000:.0f} ms ({len(rs)} responses, each recorded once).")
        elif fo:
            w(f"- Push to all: {fo.get('result')}: {fo.get('detail')}")
        gr = res.get("graceful-restart", {})
        if gr.get("reconnect_times"):
            t = gr["reconnect_times"]
            w(f"- Graceful MP restart: GOODBYE(shutdown) with RetryAfterSeconds="
              f"{gr.get('retry_after_s')}; the MP was listening again {gr.get('mp_up_s', 0):.2f} s "
              f"after the GOODBYE; agents signed in again from {t[0]:.2f} s to {t[-1]:.2f} s "
              f"(median {t[len(t) // 2]:.2f} s). Result of the fleet check (spread, not a "
              f"spike): **{gr.get('result')}**: {gr.get('detail')}")
        elif gr:
            w(f"- Graceful MP restart: {gr.get('result')}: {gr.get('detail')}")
        w("")
        w("Target: all back within the backoff window, and a connection rate that never spikes "
          "above the jitter's spread.")
    w("")

    faults = load(results, "faults") or {}
    w("## Faults: nothing lost")
    w("")
    if not faults:
        w("Not run.")
    elif "error" in faults:
        w(f"Not measured: {faults['error']}")
    else:
        w(f"`tests/fleet/fleet.py`, {faults['agents']} agents, {faults.get('mode')} mode, "
          f"keepalive {faults.get('keepalive_s', 2)} s. Each scenario checks from the MP's records that every push reached "
          "every agent and got exactly one recorded response.")
        w("")
        w("| scenario | result | seconds | detail |")
        w("|---|---|---|---|")
        for r in faults.get("results", []):
            detail = str(r.get("detail", "")).replace("|", "/").replace("\n", " ")[:400]
            w(f"| {r.get('scenario')} | **{r.get('result')}** | {r.get('seconds', '')} | {detail} |")
        w("")
        w("Target: no task or response lost across SIGKILL of agent or MP, disk full, or a "
          "network cut.")
    w("")

    L.extend(console_section(load(results, "console")))
    w("## Plots")
    w("")
    if isinstance(made, dict) and "error" in made:
        w(f"No plots: {made['error']}.")
    else:
        if made.get("latency"):
            w("Latency distribution (CDF), Tether and peers:")
            w("")
            w("![latency](perf/latency.png)")
            w("")
        if made.get("reconnect"):
            w("Reconnection curve after a graceful MP restart:")
            w("")
            w("![reconnection](perf/reconnect.png)")
            w("")
        if not made:
            w("No plots: no data to draw.")
    w("")
    w("## Reproduce")
    w("")
    w("```sh")
    w("scripts/bench.sh                        # everything, about 20 minutes, as root")
    w("python3 bench/bench.py latency --build build/release --pushes 10000")
    w("python3 bench/bench.py idle --build build/release --window 120")
    w("python3 bench/bench.py fleet --build build/release --agents 1000")
    w("python3 bench/bench.py console --build build/release   # mp-swarm --console, 10,000 devices")
    w("python3 bench/bench.py report --build build/release")
    w("```")
    w("")
    w("Several MP nodes on one PostgreSQL (1 and 3 nodes): `bench/scaling.sh [CLIENTS]`")
    w("(`mp-swarm --nodes N --store URL`); the figures and the sizing they give are in")
    w("docs/SCALING.md.")
    w("")
    with open(out_path, "w") as f:
        f.write("\n".join(L))
