# The results table of docs/benchmarks.md from `sockmesh bench --json` lines (jq -s): one row
# per scenario run; a max or connect scenario run several times (same label, same "of") is
# one row, its median run, with every run's result in the notes.
def n(x): if x == null or x == 0 then "–" elif x >= 1000000 then "\(x / 10000 | round / 100)M"
          elif x >= 10000 then "\(x / 100 | round / 10)k" else "\(x | round)" end;
def d(x): if x == null or x == 0 then "–" elif x < 10 then "\(x * 100 | round / 100)" else "\(x * 10 | round / 10)" end;
def p(x): if x == null or x == 0 then "–" else "\(x | round)%" end;
def rate: if .scenario == "max" then .max_delivered_per_s else .connects_per_s end;
def median_of($g): ($g | sort_by(rate)) as $s
  | $s[(($s | length) - 1) / 2 | floor]
    + (if ($s | length) > 1 then {ramps: ($g | map(rate))} else {} end);
def repeated: .scenario == "max" or .scenario == "connect";
def key: "\(.label)/\(.scenario)/\(.of)";

[ .[] | select(.scenario != "max" or .summary == true) ] as $rows
| ($rows | map(select(repeated)) | group_by(key)
   | map({key: (.[0] | key), value: median_of(.)}) | from_entries) as $med
| reduce $rows[] as $r ({seen: {}, out: []};
    if ($r | repeated | not) then .out += [$r]
    elif .seen[$r | key] then .
    else .seen[$r | key] = true | .out += [$med[$r | key]] end)
| .out[]
| [ .label,
    (if .scenario == "max" then "max(\(.of))" else .scenario end)
      + (if .scenario == "fanout" or .scenario == "cross" or .of == "fanout" or .of == "cross" then " \(.subscribers) subs"
         elif .scenario == "channels" or .of == "channels" then " \(.channels) ch" else "" end),
    (.connections | tostring),
    n(.pub_per_s),
    (if .scenario == "max" then "**\(n(.max_delivered_per_s))**" else n(.delivered_per_s) end),
    (if (.expected // 0) == 0 then "–" else (.lost | tostring) end),
    d(.lat_p50_ms), d(.lat_p99_ms), d(.lat_max_ms), d(.ack_p99_ms),
    n(.connects_per_s), d(.mem_per_conn_kib),
    p(.server_cpu_pct), (if .server_rss_mib then "\(.server_rss_mib | round) MiB" else "–" end),
    p(.tool_cpu_pct),
    ([ (if .ramps then "median of \(.ramps | length) \(if .scenario == "max" then "ramps" else "runs" end): \(.ramps | map(n(.)) | join(", "))" else empty end),
       (if .stop_reason then "stopped: \(.stop_reason)" else empty end),
       (.warnings // [] | .[] | select(startswith("no step passed") | not)) ] | join("; ") | gsub("\\|"; "/"))
  ] | "| " + join(" | ") + " |"
