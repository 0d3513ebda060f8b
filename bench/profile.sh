#!/usr/bin/env bash
# Where a request's server CPU goes: the transport limit (transport-baseline,
# gRPC with no model) and Candela, both built with symbols (cargo's
# `profiling` profile: release code, not stripped), loaded in turn by the
# same `candela bench` point while `perf record` samples the server
# (cpu-clock, no call graphs: this VM has no hardware counters and the
# binaries no frame pointers). Prints, per server: requests/s, the server's
# CPU per request (from /proc/PID/stat over the sampled run), its context
# switches and system calls per request (perf stat), and its CPU
# per request split by where the samples fell (the crate or library that
# owns the symbol), Candela's own functions listed one by one.
#   bench/profile.sh [bench args…]   (default: --call model-infer --rows 1
#                                     --concurrency 32; SECONDS_PER_RUN=10;
#                                     FLAGS=… are given to Candela's server;
#                                     BINARIES=DIR takes the three binaries from DIR
#                                     instead of building: they need symbols, e.g.
#                                     release built with CARGO_PROFILE_RELEASE_STRIP=false)
seconds=${SECONDS_PER_RUN:-10}
source "$(dirname "$0")/common.sh" profile
command -v perf >/dev/null || { echo "profile.sh: needs perf (Debian's linux-perf)" >&2; exit 1; }
bin=${BINARIES:-$target/profiling}
[ -n "${BINARIES:-}" ] || cargo build --profile profiling -q -p candela-server -p candela-cli -p transport-baseline
load=("$@")
[ ${#load[@]} -eq 0 ] && load=(--call model-infer --rows 1 --concurrency 32)
declare -A ports=([limit]=50471 [candela]=50472)
"$bin/transport-baseline" --listen "127.0.0.1:${ports[limit]}" 2>"$out/limit.log" &
pids+=($!)
limit_pid=$!
read -r -a flags <<<"${FLAGS:-}"
"$bin/candela-server" --listen "127.0.0.1:${ports[candela]}" --models models --metrics-listen off \
  --http-listen off --log-format json "${flags[@]}" 2>"$out/candela.log" &
pids+=($!)
candela_pid=$!
declare -A server_pids=([limit]=$limit_pid [candela]=$candela_pid)
for server in limit candela; do
  url=http://127.0.0.1:${ports[$server]}
  until "$bin/candela" --server "$url" bench --call model-infer --model retail --duration 0.1 --warmup 0 \
    >/dev/null 2>&1; do sleep 0.2; done
  server_pid=${server_pids[$server]}
  "$bin/candela" --server "$url" bench --model retail "${load[@]}" --duration 2 --warmup 0 >/dev/null
  read -r -a before < <(cut -d' ' -f14,15 "/proc/$server_pid/stat")
  perf record -q -e cpu-clock -F 1999 -p "$server_pid" -o "$out/$server.perf" -- sleep "$seconds" 2>/dev/null &
  recorder=$!
  perf stat -x, -e context-switches,raw_syscalls:sys_enter -p "$server_pid" -o "$out/$server.stat" -- sleep "$seconds" &
  counter=$!
  "$bin/candela" --server "$url" bench --model retail "${load[@]}" --duration "$seconds" --warmup 0 --json \
    >"$out/$server.json"
  read -r -a after < <(cut -d' ' -f14,15 "/proc/$server_pid/stat")
  wait "$recorder" "$counter"
  echo $((after[0] + after[1] - before[0] - before[1])) >"$out/$server.ticks"
  perf report -i "$out/$server.perf" --stdio --no-children --sort dso,sym --percent-limit 0 2>/dev/null \
    >"$out/$server.report"
done
python3 - "$out" "$(getconf CLK_TCK)" "$seconds" <<'PY'
import json, re, sys
out, tick, seconds = sys.argv[1], 1 / int(sys.argv[2]), float(sys.argv[3])

def area(dso, sym):
    """Who owns a sample: the crate that defines the symbol, else the library."""
    if dso.startswith("[kernel") or dso == "[unknown]" and sym.startswith("0xffff"):
        return "kernel (syscalls, TCP, futex)"
    if dso.startswith("libc") or dso.startswith("ld-"):
        return "libc"
    name = re.sub(r"^(<|_<)?(&|mut |dyn )*", "", sym)
    for crate in ("candela_server", "candela", "tokio", "h2", "hyper", "tonic", "tower", "prost", "bytes",
                  "http", "mimalloc", "prometheus_client", "tracing", "candle", "std", "core", "alloc"):
        if name.startswith(crate + "::"):
            return crate
    if "mi_" in name or "malloc" in name or "free" in name:
        return "allocator"
    return "other"

for server in ("limit", "candela"):
    summary = json.load(open(f"{out}/{server}.json"))
    assert summary["errors"] == 0, summary["error_samples"]
    requests = summary["requests_per_second"] * seconds
    cpu_us = int(open(f"{out}/{server}.ticks").read()) * tick * 1e6 / requests
    areas, own = {}, []
    for line in open(f"{out}/{server}.report"):
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
        if not m:
            continue
        share, dso, sym = float(m[1]) / 100, m[2], m[3].strip()
        key = area(dso, sym)
        areas[key] = areas.get(key, 0) + share
        if key in ("candela_server", "candela"):
            own.append((share, sym))
    counts = {line.split(",")[2]: int(line.split(",")[0]) for line in open(f"{out}/{server}.stat")
              if line.count(",") > 2 and line.split(",")[0].isdigit()}
    print(f"\n{server}: {summary['requests_per_second']:,.0f} requests/s, p50 {summary['latency_us']['p50']:.0f} µs, "
          f"server CPU {cpu_us:.1f} µs per request, per request "
          f"{counts.get('context-switches', 0) / requests:.2f} context switches "
          f"and {counts.get('raw_syscalls:sys_enter', 0) / requests:.2f} system calls")
    for key, share in sorted(areas.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<32} {share * 100:5.1f} %  {share * cpu_us:6.1f} µs/request")
    for share, sym in sorted(own, reverse=True)[:15]:
        print(f"    {share * cpu_us:6.2f} µs  {sym[:110]}")
PY
