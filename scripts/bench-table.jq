# The results table of docs/benchmarks.md from `sockmesh bench --json` lines (jq -s): one row
# per scenario run; a max scenario run several times (same label, same "of") is one row, its
# median ramp, with every ramp's result in the notes.
def n(x): if x == null or x == 0 then "–" elif x >= 1000000 then "\(x / 10000 | round / 100)M"
          elif x >= 10000 then "\(x / 100 | round / 10)k" else "\(x | round)" end;
def d(x): if x == null or x == 0 then "–" elif x < 10 then "\(x * 100 | round / 100)" else "\(x * 10 | round / 10)" end;
def p(x): if x == null or x == 0 then "–" else "\(x | round)%" end;
def median_of($g): ($g | sort_by(.max_delivered_per_s)) as $s
  | $s[(($s | length) - 1) / 2 | floor]
    + (if ($s | length) > 1 then {ramps: ($g | map(.max_delivered_per_s))} else {} end);

[ .[] | select(.scenario != "max" or .summary == true) ] as $rows
| ($rows | map(select(.scenario == "max")) | group_by([.label, .of])
   | map({key: "\(.[0].label)/\(.[0].of)", value: median_of(.)}) | from_entries) as $med
| reduce $rows[] as $r ({seen: {}, out: []};
    if $r.scenario != "max" then .out += [$r]
    elif .seen["\($r.label)/\($r.of)"] then .
    else .seen["\($r.label)/\($r.of)"] = true | .out += [$med["\($r.label)/\($r.of)"]] end)
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
    ([ (if .ramps then "median of \(.ramps | length) ramps: \(.ramps | map(n(.)) | join(", "))" else empty end),
       (if .stop_reason then "stopped: \(.stop_reason)" else empty end),
       (.warnings // [] | .[] | select(startswith("no step passed") | not)) ] | join("; ") | gsub("\\|"; "/"))
  ] | "| " + join(" | ") + " |"
